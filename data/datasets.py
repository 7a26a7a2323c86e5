"""
Loaders for the CS224N minBERT data files (tab-separated, one header row).

Every file starts with an unnamed row-index column, and the test-student files of SST and
CFIMDB have a second, extra leading index column, so columns are always read by *name*, never
by position. Fields may be quoted with doubled inner quotes (Quora), so we use the csv module
rather than `line.split("\t")`, which silently breaks those rows.

An example is a plain dict:
    single-sentence tasks (sst, cfimdb): {"id", "sentence"}             (+ "label")
    sentence-pair tasks   (quora, sts):  {"id", "sentence1", "sentence2"} (+ "label")
"label" is an int for sst (0..4), cfimdb and quora (0/1) and a float for sts (0.0..5.0);
test splits have no labels. Ids are unique in dev and test files (the prediction files are keyed
by id); a training file may repeat one (kept, counted in a warning and in Loaded.n_duplicate_ids).
A field may be longer than the csv module's 131,072-character limit.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import os
from pathlib import Path
from typing import Callable, Iterable, NamedTuple

log = logging.getLogger(__name__)

ENV_VAR = "MINBERT_DATA_DIR"
REPO_ROOT = Path(__file__).resolve().parents[1]


class DataError(ValueError):
    """A data file is malformed (bad encoding, wrong header, or a bad row)."""


class Loaded(NamedTuple):
    examples: list[dict]
    n_skipped: int  # bad rows dropped because skip_bad=True (always 0 otherwise)

    @property
    def n_duplicate_ids(self) -> int:
        """Rows whose id an earlier row already has. Only a training file can have any (dev and
        test files with one are refused); the trainer prints this count."""
        return len(self.examples) - len({ex["id"] for ex in self.examples})


def _number(s: str) -> float:
    try:
        return float(s)
    except ValueError:
        raise ValueError(f"label {s!r} is not a number") from None


def _int_label(lo: int, hi: int) -> Callable[[str], int]:
    def parse(s: str) -> int:
        # Quora writes its 0/1 labels as floats ("1.0"), so accept integral floats too.
        x = _number(s)
        if not (x.is_integer() and lo <= x <= hi):
            raise ValueError(f"label {s!r} is not an integer in {lo}..{hi}")
        return int(x)
    return parse


def _float_label(lo: float, hi: float) -> Callable[[str], float]:
    def parse(s: str) -> float:
        x = _number(s)
        if not (math.isfinite(x) and lo <= x <= hi):
            raise ValueError(f"label {s!r} is not a number in {lo}..{hi}")
        return x
    return parse


class DatasetSpec(NamedTuple):
    """One data set's files and columns (a task's loss, metric and head are training/multitask/tasks.py's)."""
    prefix: str  # file name prefix: {prefix}-train.csv, {prefix}-dev.csv, {prefix}-test-student.csv
    text_columns: tuple[str, ...]
    label_column: str
    parse_label: Callable[[str], int | float]


DATASETS: dict[str, DatasetSpec] = {
    "sst": DatasetSpec("ids-sst", ("sentence",), "sentiment", _int_label(0, 4)),
    "quora": DatasetSpec("quora", ("sentence1", "sentence2"), "is_duplicate", _int_label(0, 1)),
    "sts": DatasetSpec("sts", ("sentence1", "sentence2"), "similarity", _float_label(0.0, 5.0)),
    "cfimdb": DatasetSpec("ids-cfimdb", ("sentence",), "sentiment", _int_label(0, 1)),
}
SPLITS = {"train": "train", "dev": "dev", "test": "test-student"}
PAIR_DATASETS = frozenset(t for t, spec in DATASETS.items() if len(spec.text_columns) == 2)
# The multitask model's three tasks, named once: heads/ (MultitaskBert) and training/ (the task table)
# take their names from here. cfimdb is a data set only, for the single-task part 1.
TASK_NAMES = ("sst", "quora", "sts")


def task_file(task: str, split: str) -> str:
    """File name of a task's split, e.g. task_file("sst", "test") -> "ids-sst-test-student.csv"."""
    if task not in DATASETS:
        raise ValueError(f"unknown task {task!r}; expected one of {sorted(DATASETS)}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {list(SPLITS)}")
    return f"{DATASETS[task].prefix}-{SPLITS[split]}.csv"


def all_files(tasks: Iterable[str] = tuple(DATASETS)) -> list[str]:
    """Every file name of the given tasks, all splits."""
    return [task_file(t, s) for t in tasks for s in SPLITS]


# ----------------------------------------------------------------------------- reading

def _read_text(path: Path) -> str:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise FileNotFoundError(
            f"{path}: no such data file (pass --data-dir, set ${ENV_VAR}, "
            f"or fetch the files with `python data/download.py`)") from None
    if not raw.strip():
        raise DataError(f"{path}: file is empty (expected a tab-separated header row)")
    try:
        return raw.decode("utf-8-sig")  # -sig: some editors (Excel, Notepad) prepend a BOM
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        raise DataError(f"{path}: line {line}: not valid UTF-8 (byte {raw[e.start]:#04x} at "
                        f"offset {e.start}); re-save the file as UTF-8") from None


# Appended to the text before parsing: it comes back as a row of its own unless a quote opened
# earlier is never closed, in which case the csv module (non-strict) folds it into that field.
_END = "\n\ue000end of file\ue000"
_END_ROW = [_END.lstrip("\n")]


def _load(path: str | os.PathLike, spec: DatasetSpec, split_has_labels: bool | None,
          skip_bad: bool, unique_ids: bool = True) -> Loaded:
    path = Path(path)
    text = _read_text(path)
    # The csv module refuses a field over 131,072 characters by default, but a long sentence is
    # data like any other (it is truncated to --max-length at encoding): no field can be longer
    # than the file. The limit is process-wide, so put it back afterwards.
    old_limit = csv.field_size_limit(max(len(text) + len(_END), csv.field_size_limit()))
    try:
        return _parse(path, text, spec, split_has_labels, skip_bad, unique_ids)
    finally:
        csv.field_size_limit(old_limit)


def _parse(path: Path, text: str, spec: DatasetSpec, split_has_labels: bool | None,
           skip_bad: bool, unique_ids: bool) -> Loaded:
    # newline="" keeps the csv module in charge of line endings, so CRLF files and newlines
    # inside quoted fields both work.
    reader = csv.reader(io.StringIO(text + _END, newline=""), delimiter="\t")
    if not text.strip():  # e.g. only a byte order mark
        raise DataError(f"{path}: the file is empty (expected a header row with {', '.join(spec.text_columns)})")
    try:
        header = next(reader)
    except csv.Error as e:
        raise DataError(f"{path}: line 1: unreadable header ({e})") from None
    if header and header[-1].endswith(_END):
        raise DataError(f"{path}: line 1: a quote in the header is never closed")
    columns = [c.strip() for c in header]
    has_label = spec.label_column in columns if split_has_labels is None else split_has_labels
    expected = ["id", *spec.text_columns] + ([spec.label_column] if has_label else [])
    missing = [c for c in expected if c not in columns]
    if missing:
        # Name the label column even when it is optional, so a misnamed one is easy to spot.
        wanted = expected if has_label else expected + [spec.label_column]
        optional = "" if has_label else f" ({spec.label_column!r} only in labelled splits)"
        raise DataError(f"{path}: line 1: header lacks column(s) {missing}; found {columns}, "
                        f"expected {wanted}{optional} plus unnamed index columns")
    where = {c: columns.index(c) for c in expected}

    examples: list[dict] = []
    n_skipped = 0
    first_line: dict[str, int] = {}  # id -> line of the first row with it
    duplicates: list[tuple[str, int, int]] = []  # (id, first line, this line)
    start = reader.line_num + 1  # 1-based file line where the next row begins
    while True:
        try:
            row = next(reader)
        except csv.Error as e:
            raise DataError(f"{path}: line {start}: {e}") from None
        line, start = start, reader.line_num + 1
        if row == _END_ROW:
            break
        if row and row[-1].endswith(_END):
            # Not skippable: the open quote swallowed every later row into this one field.
            raise DataError(f"{path}: line {line}: a quoted field in this row is never closed, so "
                            f"it runs to the end of the file; close the quote (a quote inside a "
                            f"quoted field is written twice: \"\")")
        if not row or row == [""]:
            continue  # blank line, e.g. a trailing newline typed twice
        try:
            ex = _parse_row(row, columns, where, spec, has_label)
        except ValueError as e:
            if not skip_bad:
                raise DataError(f"{path}: line {line}: {e} (pass skip_bad=True to drop such "
                                f"rows)") from None
            n_skipped += 1
            log.debug("%s: line %d: skipped: %s", path, line, e)
            continue
        first = first_line.setdefault(ex["id"], line)
        if first != line:
            if unique_ids:
                # Not skippable either: neither row is known to be the wrong one, and two
                # predictions with one id make the course's scorer misread the file.
                raise DataError(
                    f"{path}:{line}: duplicate id {ex['id']!r}, first used at {path}:{first}; "
                    f"ids must be unique in dev and test files (the prediction files are keyed by "
                    f"id): give one row a new id or delete it")
            duplicates.append((ex["id"], first, line))
        examples.append(ex)
    if n_skipped:
        log.warning("%s: skipped %d bad row(s) out of %d", path, n_skipped,
                    n_skipped + len(examples))
    if duplicates:
        ident, first, line = duplicates[0]
        log.warning("%s: kept %d row(s) whose id an earlier row already has (first: %r at "
                    "lines %d and %d)", path, len(duplicates), ident, first, line)
    return Loaded(examples, n_skipped)


def _parse_row(row: list[str], columns: list[str], where: dict[str, int], spec: DatasetSpec,
               has_label: bool) -> dict:
    if len(row) != len(columns):
        # Too few: a field is missing. Too many: an unquoted tab inside a sentence shifted the
        # columns, so the "label" we would read is really text.
        raise ValueError(f"row has {len(row)} fields, header has {len(columns)}")
    ex = {"id": row[where["id"]].strip()}
    if not ex["id"]:
        raise ValueError("empty id")
    for c in spec.text_columns:
        ex[c] = row[where[c]].strip()
        if not ex[c]:
            raise ValueError(f"empty {c}")
    if has_label:
        s = row[where[spec.label_column]].strip()
        try:
            ex["label"] = spec.parse_label(s)
        except ValueError as e:
            raise ValueError(f"{spec.label_column}: {e}") from None
    return ex


def load_sst(path: str | os.PathLike, split_has_labels: bool | None = None,
             skip_bad: bool = False, unique_ids: bool = True) -> Loaded:
    """SST-5 sentences with labels 0..4. split_has_labels=None: labelled iff the header has
    a `sentiment` column. Bad rows raise DataError (file + line) unless skip_bad=True.
    unique_ids=True refuses a repeated id (dev and test files); False keeps such rows and logs
    their count (training files)."""
    return _load(path, DATASETS["sst"], split_has_labels, skip_bad, unique_ids)


def load_quora(path: str | os.PathLike, split_has_labels: bool | None = None,
               skip_bad: bool = False, unique_ids: bool = True) -> Loaded:
    """Quora question pairs; `is_duplicate` (written 0.0/1.0) becomes an int 0/1."""
    return _load(path, DATASETS["quora"], split_has_labels, skip_bad, unique_ids)


def load_sts(path: str | os.PathLike, split_has_labels: bool | None = None,
             skip_bad: bool = False, unique_ids: bool = True) -> Loaded:
    """STS-B sentence pairs; `similarity` is a float in [0, 5]."""
    return _load(path, DATASETS["sts"], split_has_labels, skip_bad, unique_ids)


def load_cfimdb(path: str | os.PathLike, split_has_labels: bool | None = None,
                skip_bad: bool = False, unique_ids: bool = True) -> Loaded:
    """CFIMDB movie reviews with binary sentiment 0/1."""
    return _load(path, DATASETS["cfimdb"], split_has_labels, skip_bad, unique_ids)


def load_task(task: str, split: str, data_dir: str | os.PathLike | None = None,
              skip_bad: bool = False) -> Loaded:
    """Load one split ("train" | "dev" | "test") of a task ("sst" | "quora" | "sts" | "cfimdb").
    Train and dev must carry labels; test has none. A repeated id is refused in dev and test
    (DataError naming both lines) and kept in train (counted: Loaded.n_duplicate_ids).
    data_dir: see find_data_dir."""
    name = task_file(task, split)
    root = find_data_dir(data_dir, required=[name])
    return load_file(root / name, task, split, skip_bad)


def load_file(path: str | os.PathLike, task: str, split: str, skip_bad: bool = False) -> Loaded:
    """Load a file as one split of a task, whatever its name (load_task finds it by name)."""
    task_file(task, split)  # checks both names
    return _load(path, DATASETS[task], split != "test", skip_bad, unique_ids=split != "train")


# ----------------------------------------------------------------------------- locating

def find_data_dir(data_dir: str | os.PathLike | None = None,
                  required: Iterable[str] | None = None) -> Path:
    """The directory holding the data files. Order: the argument, else ${MINBERT_DATA_DIR},
    else ../shared/data next to the repo, else ./data-files. An explicit argument or env var is
    used as given (no silent fallback); the defaults are tried in order. `required`: file names
    that must be present (default: every split of sst, quora and sts)."""
    required = list(required) if required is not None else all_files(TASK_NAMES)
    if data_dir is not None:
        candidates, source = [Path(data_dir)], "--data-dir"
    elif os.environ.get(ENV_VAR):
        candidates, source = [Path(os.environ[ENV_VAR])], f"${ENV_VAR}"
    else:
        candidates = [REPO_ROOT.parent / "shared" / "data", Path.cwd() / "data-files"]
        if REPO_ROOT / "data-files" != candidates[-1]:
            candidates.append(REPO_ROOT / "data-files")
        source = "default locations"

    problems = []
    for d in candidates:
        missing = [f for f in required if not (d / f).is_file()]
        if d.is_dir() and not missing:
            return d
        what = "does not exist" if not d.is_dir() else f"lacks {', '.join(missing)}"
        problems.append(f"  {d}: {what}")
    raise FileNotFoundError(
        f"no data directory with the needed files ({source}):\n" + "\n".join(problems) +
        f"\nPass --data-dir DIR or set {ENV_VAR}=DIR to a folder with the course files, "
        f"or download them with `python data/download.py --out data-files`.")
