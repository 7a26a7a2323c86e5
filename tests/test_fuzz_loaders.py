"""Fuzzing the CS224N data loaders (data/datasets.py) with hypothesis.

Thousands of inputs, each either loads correctly or raises the documented DataError (a ValueError
naming file and line); any other exception (IndexError, StopIteration, UnicodeDecodeError, csv.Error
...) is a bug. Three generators:
  * mutations of the real fixture files: flipped, inserted, deleted bytes, truncation, shuffled lines;
  * well-formed files of random rows (any Unicode, quoted tabs and line breaks): must load back exactly;
  * files with some bad rows: DataError naming the first bad row's line, or with skip_bad exactly
    the good rows and the right count of skipped ones.
derandomize=True: the same examples on every run (a CI failure reproduces locally).
"""
import re
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from data.datasets import DATASETS, DataError, load_cfimdb, load_quora, load_sst, load_sts

FIXTURES = Path(__file__).parent / "fixtures" / "data"
SEED_FILES = sorted(FIXTURES.glob("*/*.csv"))
LOADERS = {"sst": load_sst, "quora": load_quora, "sts": load_sts, "cfimdb": load_cfimdb}
WORK = Path(tempfile.mkdtemp(prefix="fuzz-loaders-"))  # one file, rewritten by every example
BOM_ONLY = b"\xef\xbb\xbf"
FUZZ = dict(derandomize=True, deadline=None, database=None, suppress_health_check=list(HealthCheck))
# Label strings whose validity is known without parsing them the loader's way.
VALID_LABELS = {"sst": ["0", "4", "2.0", " 3 ", "1.0"], "cfimdb": ["0", "1", "1.0"], "quora": ["0.0", "1.0", "1", "0"],
                "sts": ["0", "5.0", "3.8", "0.25", " 4.2", "1e0"]}
INVALID_LABELS = {"sst": ["5", "-1", "2.5", "three", "", "nan", "inf", "4.0001"],
                  "cfimdb": ["2", "-1", "0.5", "yes", "", "nan"], "quora": ["2.0", "-1", "0.5", "true", "", "nan"],
                  "sts": ["5.5", "-0.1", "five", "", "nan", "inf", "1e400"]}


def task_of(path: Path) -> str:
    name = path.name
    return "sst" if name.startswith(("ids-sst", "sst")) else "cfimdb" if "cfimdb" in name else \
        "quora" if "quora" in name else "sts"


def write(raw: bytes) -> Path:
    path = WORK / "data.csv"
    path.write_bytes(raw)
    return path


def check_result(task: str, loaded, labelled: bool | None) -> None:
    """What a successful load promises: non-empty stripped ids and texts, labels typed and in range."""
    spec = DATASETS[task]
    for ex in loaded.examples:
        assert ex["id"] and ex["id"] == ex["id"].strip()
        for c in spec.text_columns:
            assert ex[c] and ex[c] == ex[c].strip()
        if labelled:
            label = ex["label"]
            if task == "sts":
                assert isinstance(label, float) and 0.0 <= label <= 5.0
            else:
                assert isinstance(label, int) and 0 <= label <= (4 if task == "sst" else 1)
        elif labelled is False:
            assert "label" not in ex


# ----------------------------------------------------------------------------- mutations


@st.composite
def mutated(draw):
    path = draw(st.sampled_from(SEED_FILES))
    data = bytearray(path.read_bytes())
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "insert", "delete", "truncate", "lines"]))
        pos = draw(st.integers(0, len(data)))
        if kind == "flip" and data:
            data[min(pos, len(data) - 1)] = draw(st.integers(0, 255))
        elif kind == "insert":
            data[pos:pos] = draw(st.one_of(
                st.sampled_from([b"\t", b"\n", b"\r\n", b'"', b'""', b"\xef\xbb\xbf", b"\xff", b"\xc3", b"\x00",
                                 b"nan", b"-1", b"9", b"\t\t", b" "]),
                st.binary(min_size=1, max_size=8)))
        elif kind == "delete":
            del data[pos:pos + draw(st.integers(1, 16))]
        elif kind == "truncate":
            del data[pos:]
        else:
            lines = bytes(data).split(b"\n")
            data = bytearray(b"\n".join(draw(st.permutations(lines))))
    return task_of(path), bytes(data)


@settings(max_examples=1000, **FUZZ)
@given(mutated(), st.sampled_from([None, True, False]), st.booleans())
def test_mutated_files_load_correctly_or_raise_data_error(case, labelled, skip_bad):
    task, raw = case
    try:
        loaded = LOADERS[task](write(raw), split_has_labels=labelled, skip_bad=skip_bad)
    except DataError as e:
        assert str(WORK / "data.csv") in str(e), "the message must name the file"
        return
    if not skip_bad:
        assert loaded.n_skipped == 0
    check_result(task, loaded, labelled)


# ----------------------------------------------------------------------------- generated files

text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)  # any Unicode, tabs, quotes, newlines


def write_row(fields: list[str], newline: str) -> str:
    """The files' format: tab-separated, a field with a tab, quote or line break quoted, inner quotes
    doubled. (csv.writer would leave a lone \r unquoted when lines end in \n.)"""
    def quote(f: str) -> str:
        return '"' + f.replace('"', '""') + '"' if any(c in f for c in '\t\r\n"') else f
    return "\t".join(map(quote, fields)) + newline


@st.composite
def generated_file(draw, with_bad_rows: bool):
    task = draw(st.sampled_from(sorted(LOADERS)))
    spec = DATASETS[task]
    extra_index = draw(st.booleans())  # the test-student files' extra leading column
    header = ([""] if extra_index else []) + ["", "id", *spec.text_columns, spec.label_column]
    rows, expected, bad_lines, good_rows = [], [], [], []
    for _ in range(draw(st.integers(0, 6))):
        ident = draw(text.filter(lambda s: s.strip()) if not with_bad_rows else text)
        texts = [draw(text.filter(lambda s: s.strip()) if not with_bad_rows else text) for _ in spec.text_columns]
        good_label = not with_bad_rows or draw(st.booleans())
        label = draw(st.sampled_from(VALID_LABELS[task] if good_label else INVALID_LABELS[task]))
        ok = good_label and bool(ident.strip()) and all(t.strip() for t in texts)
        rows.append(([""] if extra_index else []) + [str(len(rows)), ident, *texts, label])
        if ok:
            ex = {"id": ident.strip(), "label": float(label) if task == "sts" else int(float(label))}
            ex.update({c: t.strip() for c, t in zip(spec.text_columns, texts)})
            expected.append(ex)
        bad_lines.append(None if ok else len(rows))  # row number now, physical line filled in below
        if ok:
            good_rows.append(len(rows))
    newline = draw(st.sampled_from(["\n", "\r\n"]))
    content, lines = write_row(header, newline), []
    for row in rows:
        lines.append(len(re.findall(r"\r\n|\r|\n", content)) + 1)  # the line where this row starts
        content += write_row(row, newline)
    bad_lines = [lines[n - 1] for n in bad_lines if n is not None]
    good_lines = [lines[n - 1] for n in good_rows]  # where each expected example's row starts
    bom = draw(st.booleans())
    return task, ("\ufeff" if bom else "") + content, expected, bad_lines, good_lines


def as_dicts(loaded):
    return [dict(ex) for ex in loaded.examples]


@settings(max_examples=500, **FUZZ)
@given(generated_file(with_bad_rows=False))
def test_well_formed_files_load_back_exactly(case):
    task, content, expected, _, good_lines = case
    path = write(content.encode("utf-8"))
    loaded = LOADERS[task](path, split_has_labels=True, unique_ids=False)  # a training file
    assert loaded.n_skipped == 0
    assert as_dicts(loaded) == expected
    assert loaded.n_duplicate_ids == len(expected) - len({ex["id"] for ex in expected})
    # A dev/test file: the first repeated id is refused, naming both rows' lines.
    first_line, repeat = {}, None
    for ex, line in zip(expected, good_lines):
        if ex["id"] in first_line:
            repeat = (ex["id"], first_line[ex["id"]], line)
            break
        first_line[ex["id"]] = line
    try:
        strict = LOADERS[task](path, split_has_labels=True)
    except DataError as e:
        assert repeat, f"a file with unique ids was refused: {e}"
        ident, first, line = repeat
        assert f"{path}:{line}: duplicate id {ident!r}, first used at {path}:{first}" in str(e)
    else:
        assert repeat is None, "a repeated id was accepted in a dev/test file"
        assert as_dicts(strict) == expected


@settings(max_examples=500, **FUZZ)
@given(generated_file(with_bad_rows=True))
def test_bad_rows_raise_at_the_first_bad_line_or_are_skipped_exactly(case):
    task, content, expected, bad_lines, _ = case
    path = write(content.encode("utf-8"))
    loaded = LOADERS[task](path, split_has_labels=True, skip_bad=True, unique_ids=False)
    assert loaded.n_skipped == len(bad_lines)
    assert as_dicts(loaded) == expected
    try:
        LOADERS[task](path, split_has_labels=True, unique_ids=False)
    except DataError as e:
        assert bad_lines, f"a file without bad rows was refused: {e}"
        assert f"{path}: line {bad_lines[0]}:" in str(e)
    else:
        assert not bad_lines, "a bad row was accepted"


# ----------------------------------------------------------------------------- found by fuzzing
# Two inputs on which data/datasets.py used to raise something other than DataError (an unguarded
# header read: StopIteration on a BOM-only file, csv.Error on an oversized header field).
def test_file_with_only_a_byte_order_mark_is_a_data_error():
    with pytest.raises(DataError, match="empty"):
        load_sst(write(BOM_ONLY))


def test_oversized_header_field_is_a_data_error():
    with pytest.raises(DataError, match="line 1"):
        load_sst(write(b'"' + b"x" * 140_000 + b"\tid\tsentence\tsentiment\n"))
