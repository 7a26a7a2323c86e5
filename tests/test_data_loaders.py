"""Loaders of the CS224N tab-separated files: quirks, bad rows, data-dir lookup, real files."""
import csv
import logging
import re
import shutil
from pathlib import Path

import pytest

import data.datasets as datasets
from data.datasets import (DataError, all_files, find_data_dir, load_cfimdb, load_quora,
                           load_sst, load_sts, load_task, task_file)

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "data"
COURSE, BAD = FIXTURES / "course", FIXTURES / "bad"
SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
LOADERS = {"sst": load_sst, "quora": load_quora, "sts": load_sts, "cfimdb": load_cfimdb}


def reference_rows(path: Path) -> list[dict]:
    """The csv module's own reading of a file, as the oracle for what the loaders return."""
    with open(path, encoding="utf-8-sig", newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


# ----------------------------------------------------------------------------- course fixtures

@pytest.mark.parametrize("task", sorted(LOADERS))
@pytest.mark.parametrize("split", ["train", "dev", "test"])
def test_fixture_splits_match_csv_module_reading(task, split):
    spec = datasets.DATASETS[task]
    path = COURSE / task_file(task, split)
    rows = reference_rows(path)
    loaded = load_task(task, split, COURSE)
    assert loaded.n_skipped == 0
    assert len(loaded.examples) == len(rows) > 0
    for ex, row in zip(loaded.examples, rows):
        assert ex["id"] == row["id"]
        for c in spec.text_columns:
            assert ex[c] == row[c].strip() and ex[c]
        if split == "test":
            assert "label" not in ex
        else:
            assert ex["label"] == float(row[spec.label_column])
            assert type(ex["label"]) is (float if task == "sts" else int)


def test_sst_text_is_kept_as_given_except_outer_whitespace():
    ex = load_sst(COURSE / "ids-sst-train.csv").examples
    assert ex[0]["sentence"] == "The Tinker is bound to be this decade 's new `` Zorro '' ."
    assert ex[2]["sentence"].startswith("-LRB- It -RRB- does n't")  # PTB tokens untouched
    assert sorted(e["label"] for e in ex) == [0, 1, 2, 3, 4]


def test_test_student_extra_leading_column_is_ignored():
    ex = load_sst(COURSE / "ids-sst-test-student.csv").examples
    assert [e["id"] for e in ex] == ["sst0000000000000000000te0", "sst0000000000000000000te1"]
    assert ex[0] == {"id": "sst0000000000000000000te0",
                     "sentence": "Handsome but too-polite period piece"}


def test_quora_doubled_quotes_are_unescaped_and_crlf_is_dropped():
    raw = (COURSE / "quora-train.csv").read_bytes()
    assert b"\r\n" in raw  # the fixture really is CRLF, like the real Quora files
    ex = load_quora(COURSE / "quora-train.csv").examples
    assert ex[2]["sentence1"] == '"Is it fine to write ""alright"" in an essay?"'
    assert ex[2]["sentence2"] == 'Is ""alright"" fine in essays?'  # unquoted field: quotes literal
    naive = raw.decode().splitlines()[3].split("\t")[2]
    assert naive != ex[2]["sentence1"]  # why the csv module is needed
    assert [e["label"] for e in ex] == [1, 0, 1, 0]
    assert not any("\r" in v for e in ex for v in map(str, e.values()))


def test_split_has_labels_overrides_header_detection():
    ex = load_sst(COURSE / "ids-sst-dev.csv", split_has_labels=False).examples
    assert all("label" not in e for e in ex)
    with pytest.raises(DataError, match=r"sentiment"):
        load_sst(COURSE / "ids-sst-test-student.csv", split_has_labels=True)


def test_bom_crlf_and_trailing_blank_lines_are_handled():
    # Re-saved by a spreadsheet: BOM, CRLF, no index column, so the BOM sits right before "id".
    assert (BAD / "sst-bom-crlf.csv").read_bytes().startswith(b"\xef\xbb\xbfid\t")
    loaded = load_sst(BAD / "sst-bom-crlf.csv")
    assert [e["id"] for e in loaded.examples] == ["bom1", "bom2"]
    assert [e["label"] for e in loaded.examples] == [3, 1]


# ----------------------------------------------------------------------------- bad input

BAD_CASES = {  # file, loader, first bad line, every bad line, ids of the good rows
    "sst": ("sst-bad-rows.csv", load_sst, [3, 4, 5, 6, 8, 9], ["ok1", "ok2"]),
    "quora": ("quora-bad-rows.csv", load_quora, [3, 4, 5], ["ok1", "ok2"]),
    "sts": ("sts-bad-rows.csv", load_sts, [3, 4, 5, 6], ["ok1"]),
    "cfimdb": ("cfimdb-multiline.csv", load_cfimdb, [6], ["multi", "ok"]),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_row_raises_data_error_naming_file_and_line(case):
    name, loader, bad_lines, _ = BAD_CASES[case]
    with pytest.raises(DataError) as e:
        loader(BAD / name)
    msg = str(e.value)
    assert name in msg and f"line {bad_lines[0]}:" in msg and "skip_bad" in msg
    assert e.value.__cause__ is None and e.value.__suppress_context__  # no inner traceback


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_skip_bad_drops_and_counts_every_bad_row(case, caplog):
    name, loader, bad_lines, good_ids = BAD_CASES[case]
    caplog.set_level(logging.DEBUG, logger="data.datasets")
    loaded = loader(BAD / name, skip_bad=True)
    assert loaded.n_skipped == len(bad_lines)
    assert [e["id"] for e in loaded.examples] == good_ids
    logged = [int(m) for m in re.findall(r"line (\d+): skipped", caplog.text)]
    assert logged == bad_lines


def test_bad_row_messages_say_what_is_wrong():
    def error(line: str) -> str:
        spec = datasets.DATASETS["sst"]
        cols = ["", "id", "sentence", "sentiment"]
        where = {c: cols.index(c) for c in ["id", "sentence", "sentiment"]}
        with pytest.raises(ValueError) as e:
            datasets._parse_row(line.split("\t"), cols, where, spec, True)
        return str(e.value)
    assert "3 fields" in error("0\tx\t A film .")
    assert "empty sentence" in error("0\tx\t  \t1")
    assert "not a number" in error("0\tx\t A film .\tgood")
    assert "0..4" in error("0\tx\t A film .\t7")
    assert "0..4" in error("0\tx\t A film .\t2.5")


def test_cfimdb_multiline_quoted_review_is_one_example():
    ex = load_cfimdb(BAD / "cfimdb-multiline.csv", skip_bad=True).examples
    assert ex[0]["sentence"] == "First line of a review\nsecond line\nthird line ."


def test_wrong_header_lists_found_and_expected_columns():
    with pytest.raises(DataError) as e:
        load_sst(BAD / "sst-wrong-header.csv")
    msg = str(e.value)
    assert "sst-wrong-header.csv" in msg and "line 1" in msg
    assert "'text'" in msg and "'label'" in msg  # found
    assert "'sentence'" in msg and "'sentiment'" in msg  # expected


def test_invalid_utf8_names_file_and_line(tmp_path):
    path = tmp_path / "latin1.csv"
    path.write_bytes(b"\tid\tsentence\tsentiment\n0\ta\t fine .\t1\n1\tb\t caf\xe9 .\t2\n")
    with pytest.raises(DataError, match=r"latin1\.csv: line 3: not valid UTF-8"):
        load_sst(path)


@pytest.mark.parametrize("content", [b"", b"\n\n  \r\n"])
def test_empty_file_is_a_clear_error(tmp_path, content):
    path = tmp_path / "empty.csv"
    path.write_bytes(content)
    with pytest.raises(DataError, match=r"empty\.csv: file is empty"):
        load_sst(path)


@pytest.mark.parametrize("tail", ["x\n" * 70_000, "2\tc\t good .\t1\n", ""])
def test_unclosed_quote_names_its_line_even_with_skip_bad(tmp_path, tail):
    # An opening quote never closed swallows every later row into one field, however long:
    # refused, not skipped as one bad row (that would silently drop the rest of the file).
    path = tmp_path / "runaway.csv"
    path.write_text("\tid\tsentence\tsentiment\n0\ta\t fine .\t1\n1\tb\t\"oops\t2\n" + tail)
    with pytest.raises(DataError, match=r"runaway\.csv: line 3: a quoted field .* never closed"):
        load_sst(path, skip_bad=True)


def test_unclosed_quote_in_a_test_files_last_column_is_refused(tmp_path):
    # The last text column of a test file: the swallowed rows would make a well-formed row.
    path = tmp_path / "quora-test-student.csv"
    path.write_text('\tid\tsentence1\tsentence2\n0\ta\tWhy?\t"Why not?\n1\tb\tHow?\tHow so?\n')
    with pytest.raises(DataError, match=r"line 2: a quoted field .* never closed"):
        load_quora(path)


def test_unclosed_quote_in_the_header_is_refused(tmp_path):
    path = tmp_path / "h.csv"
    path.write_text('\tid\t"sentence\tsentiment\n0\ta\t fine .\t1\n')
    with pytest.raises(DataError, match=r"h\.csv: line 1: a quote in the header is never closed"):
        load_sst(path)


# ----------------------------------------------------------------------------- sentences longer than the csv field limit

def test_sentence_longer_than_the_csv_field_limit_is_read(tmp_path):
    limit = csv.field_size_limit()
    assert limit == 131_072  # the csv module's default, which the loader must not leave raised
    words = [f"w{i}" for i in range(30_000)]  # generated: ~170,000 characters
    long_text = " ".join(words)
    assert len(long_text) > limit
    for quoted in (False, True):  # quoted fields take the csv module's other code path
        field = f'"{long_text}"' if quoted else long_text
        (tmp_path / "ids-sst-dev.csv").write_text(
            f"\tid\tsentence\tsentiment\n0\tshort\t A short one .\t2\n1\tlong\t{field}\t4\n")
        ex = load_task("sst", "dev", tmp_path).examples
        assert [e["id"] for e in ex] == ["short", "long"]
        assert ex[1]["sentence"] == long_text and ex[1]["label"] == 4
    assert csv.field_size_limit() == limit
    with pytest.raises(csv.Error, match="field larger than field limit"):  # why the loader must act
        list(csv.reader(open(tmp_path / "ids-sst-dev.csv", newline=""), delimiter="\t"))


# ----------------------------------------------------------------------------- duplicate ids

def write_split(d: Path, task: str, split: str, rows: list[str]) -> Path:
    header = {"sst": "\tid\tsentence\tsentiment", "quora": "\tid\tsentence1\tsentence2\tis_duplicate"}
    cols = header[task] if split != "test" else header[task].rsplit("\t", 1)[0]
    path = d / task_file(task, split)
    path.write_text("\n".join([cols, *rows]) + "\n")
    return path


@pytest.mark.parametrize("split", ["dev", "test"])
def test_duplicate_id_in_dev_or_test_is_refused_with_both_lines(tmp_path, split):
    label = "" if split == "test" else "\t1.0"
    path = write_split(tmp_path, "quora", split, [
        f"0\tq1\tIs tea hot?\tIs tea warm?{label}",
        f"1\tq2\tWhy fly?\tHow to fly?{label}",
        f"2\tq3\tCan cats swim?\tDo cats swim?{label}",
        f"3\tq2\tWhere is it?\tWhat is it?{label}",  # line 5 repeats line 3's id
    ])
    for skip_bad in (False, True):  # skip_bad does not pick a row to drop
        with pytest.raises(DataError) as e:
            load_task("quora", split, tmp_path, skip_bad=skip_bad)
        msg = str(e.value)
        assert f"{path}:5: duplicate id 'q2', first used at {path}:3" in msg
        assert "unique" in msg and e.value.__cause__ is None


def test_duplicate_id_after_stripping_spaces_is_a_duplicate(tmp_path):
    path = write_split(tmp_path, "sst", "dev", ["0\ta\t Good .\t3", "1\t a \t Bad .\t1"])
    with pytest.raises(DataError, match=re.escape(f"{path}:3: duplicate id 'a', first used at {path}:2")):
        load_task("sst", "dev", tmp_path)


def test_duplicate_ids_in_training_file_are_kept_and_counted(tmp_path, caplog):
    path = write_split(tmp_path, "sst", "train", [
        "0\ta\t Good .\t3", "1\tb\t Bad .\t1", "2\ta\t Fine .\t2", "3\ta\t Okay .\t2",
        "4\tc\t Dull .\t1", "5\tb\t Grim .\t0"])
    loaded = load_task("sst", "train", tmp_path)
    assert [e["id"] for e in loaded.examples] == ["a", "b", "a", "a", "c", "b"]
    assert [e["sentence"] for e in loaded.examples] == ["Good .", "Bad .", "Fine .", "Okay .", "Dull .", "Grim ."]
    assert loaded.n_duplicate_ids == 3 and loaded.n_skipped == 0
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [f"{path}: kept 3 row(s) whose id an earlier row already has "
                        f"(first: 'a' at lines 2 and 4)"]
    examples, skipped = loaded  # still a 2-tuple for the trainers that unpack it
    assert skipped == 0 and examples == loaded.examples


def test_unique_ids_log_nothing(caplog):
    for split in ("train", "dev", "test"):
        assert load_task("quora", split, COURSE).n_duplicate_ids == 0
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_header_only_file_loads_zero_examples(tmp_path):
    path = tmp_path / "header.csv"
    path.write_text("\tid\tsentence\tsentiment\n")
    assert load_sst(path) == ([], 0)


def test_missing_file_points_to_download_script(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"data/download\.py"):
        load_sst(tmp_path / "nope.csv")


def test_unknown_task_or_split_is_rejected():
    with pytest.raises(ValueError, match="unknown task"):
        load_task("mnli", "train", COURSE)
    with pytest.raises(ValueError, match="unknown split"):
        load_task("sst", "validation", COURSE)


# ----------------------------------------------------------------------------- find_data_dir

def test_find_data_dir_explicit_argument_wins_over_env(monkeypatch, tmp_path):
    monkeypatch.setenv("MINBERT_DATA_DIR", str(tmp_path))
    assert find_data_dir(COURSE) == COURSE


def test_find_data_dir_uses_env_var(monkeypatch):
    monkeypatch.setenv("MINBERT_DATA_DIR", str(COURSE))
    assert find_data_dir() == COURSE


def test_find_data_dir_error_lists_missing_files_and_fixes(monkeypatch, tmp_path):
    (tmp_path / "ids-sst-train.csv").write_text("\tid\tsentence\tsentiment\n")
    with pytest.raises(FileNotFoundError) as e:
        find_data_dir(tmp_path)
    msg = str(e.value)
    missing = [f for f in all_files(datasets.TASK_NAMES) if f != "ids-sst-train.csv"]
    assert all(f in msg for f in missing) and "lacks" in msg
    assert "ids-sst-train.csv" not in msg.split("lacks", 1)[1].split("\n")[0]
    assert "--data-dir" in msg and "MINBERT_DATA_DIR" in msg and "data/download.py" in msg


def test_find_data_dir_defaults_shared_then_data_files(monkeypatch, tmp_path):
    monkeypatch.delenv("MINBERT_DATA_DIR", raising=False)
    repo = tmp_path / "repo"
    repo.mkdir()
    monkeypatch.setattr(datasets, "REPO_ROOT", repo)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError) as e:
        find_data_dir()
    assert str(tmp_path / "shared" / "data") in str(e.value)
    assert str(tmp_path / "data-files") in str(e.value)

    shutil.copytree(COURSE, tmp_path / "data-files")
    assert find_data_dir() == tmp_path / "data-files"
    shutil.copytree(COURSE, tmp_path / "shared" / "data")
    assert find_data_dir() == tmp_path / "shared" / "data"  # ../shared/data comes first


# ----------------------------------------------------------------------------- real files

README_ROWS = {
    "ids-sst-train.csv": 8544, "ids-sst-dev.csv": 1101, "ids-sst-test-student.csv": 2210,
    "quora-train.csv": 31696, "quora-dev.csv": 10008, "quora-test-student.csv": 10204,
    "sts-train.csv": 6040, "sts-dev.csv": 863, "sts-test-student.csv": 1725,
    "ids-cfimdb-train.csv": 1707, "ids-cfimdb-dev.csv": 245, "ids-cfimdb-test-student.csv": 488,
}


@pytest.mark.skipif(not SHARED.is_dir(), reason=f"{SHARED} not present")
@pytest.mark.parametrize("task", sorted(LOADERS))
@pytest.mark.parametrize("split", ["train", "dev", "test"])
def test_real_files_load_with_readme_row_counts(task, split):
    loaded = load_task(task, split, SHARED)
    assert loaded.n_skipped == 0
    assert len(loaded.examples) == README_ROWS[task_file(task, split)]
    assert len({e["id"] for e in loaded.examples}) == len(loaded.examples) and loaded.n_duplicate_ids == 0
    assert all(("label" in e) == (split != "test") for e in loaded.examples)
    if task == "sst" and split != "test":
        assert {e["label"] for e in loaded.examples} == {0, 1, 2, 3, 4}
