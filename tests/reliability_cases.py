"""Bad input for training/run_multitask.py, case by case: what was tried and what the user is told.

tests/test_reliability.py runs every case through run_multitask.main() and checks the message and
that nothing was written. Run this file to get the table of docs/RELIABILITY.md from real runs of
the command line (one subprocess per case, about a minute):

    python tests/reliability_cases.py > /tmp/table.md
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import pickle
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from minbert import BertConfig, BertModel

REPO = Path(__file__).resolve().parents[1]
# all-MiniLM-L6-v2's tokenizer files, byte for byte: tiny checkpoints need no installed embedded checkpoint.
TOKENIZER = REPO / "tests" / "fixtures" / "tokenizer"

FIXTURE_DATA = REPO / "tests" / "fixtures" / "data" / "course"
SCRIPT = REPO / "training" / "run_multitask.py"


def make_tiny_checkpoint(d: Path, dropout: float = 0.1, **config) -> Path:
    """A 2-layer, hidden-32 BERT with the real uncased vocabulary (so the real tokenizer works)."""
    torch.manual_seed(0)
    cfg = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
               max_position_embeddings=128, hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout)
    BertModel(BertConfig(**{**cfg, **config})).save_pretrained(d)
    for f in ("vocab.txt", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(TOKENIZER / f, d / f)
    return d


def base_argv(ckpt: Path, data: Path, out: Path) -> list[str]:
    return ["--model", str(ckpt), "--data-dir", str(data), "--device", "cpu", "--preset", "quick", "--epochs", "1", "--batch-size", "2",
            "--amp", "none", "--threads", "1", "--log-every", "1", "--out-dir", str(out), "--predictions-dir", str(out / "predictions")]


class Env:
    """A scratch folder with a tiny checkpoint, and helpers that make broken copies of the inputs."""

    def __init__(self, root: Path):
        self.root = root
        self.ckpt = make_tiny_checkpoint(root / "tiny-bert")
        self._finished: Path | None = None

    def data_with(self, name: str, files: dict[str, bytes | None]) -> Path:
        """A copy of the fixture data with files replaced (bytes) or deleted (None)."""
        d = self.root / f"data-{name}"
        shutil.copytree(FIXTURE_DATA, d, dirs_exist_ok=True)
        for fname, content in files.items():
            (d / fname).unlink() if content is None else (d / fname).write_bytes(content)
        return d

    def ckpt_with(self, name: str, edit: Callable[[Path], None]) -> Path:
        d = self.root / f"ckpt-{name}"
        shutil.copytree(self.ckpt, d, dirs_exist_ok=True)
        edit(d)
        return d

    def finished_run(self, out: Path) -> None:
        """Copy a finished tiny run (with out/last/) into out; the run is made once."""
        if self._finished is None:
            self._finished = self.root / "finished"
            from training import run_multitask
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                run_multitask.main(base_argv(self.ckpt, FIXTURE_DATA, self._finished) + ["--save-every", "2"])
        shutil.copytree(self._finished, out)  # (--out-dir may change on --resume: the copy can be resumed)


def lines(*rows: str) -> bytes:
    return ("\n".join(rows) + "\n").encode("utf-8")


GOOD_ROW = "0\tok\t A fine film .\t3"


def truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * keep)])


def write_config(d: Path, **changes) -> None:
    cfg = json.loads((d / "config.json").read_text())
    cfg.update(changes)
    (d / "config.json").write_text(json.dumps(cfg))


class Exploit:  # unpickling calls os.system: a checkpoint that runs code when opened with pickle
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def last_file(out: Path, group: str) -> Path:
    return next((out / "last").glob(f"{group}-*.safetensors"))


# ---- setups: each makes one bad input and returns the options that point the run at it

def data(files: dict[str, bytes | None], *extra: str):
    def setup(env: Env, out: Path) -> list[str]:
        return [*extra, "--data-dir", str(env.data_with(out.name, files))]
    return setup


def model(edit: Callable[[Path], None]):
    def setup(env: Env, out: Path) -> list[str]:
        return ["--model", str(env.ckpt_with(out.name, edit))]
    return setup


def resume(edit: Callable[[Path], None] = lambda out: None, *extra: str, flag: str = "--resume"):
    def setup(env: Env, out: Path) -> list[str]:
        env.finished_run(out)
        edit(out)
        return [flag, *extra] if flag else list(extra)
    return setup


def options(*argv: str):
    return lambda env, out: list(argv)


def evil_pickle(d: Path) -> None:
    (d / "model.safetensors").unlink()
    with open(d / "pytorch_model.bin", "wb") as f:
        pickle.dump({"embeddings.word_embeddings.weight": Exploit(d / "PWNED")}, f)


def small_vocab_model(d: Path) -> None:
    shutil.rmtree(d)
    make_tiny_checkpoint(d, vocab_size=1000)


def out_dir_is_a_file(env: Env, out: Path) -> list[str]:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("not a folder")
    return []


def zero_fill(path: Path) -> None:
    path.write_bytes(b"\0" * path.stat().st_size)


@dataclass
class Case:
    area: str                                   # data | checkpoint | resume | options
    what: str                                   # what was tried
    setup: Callable[[Env, Path], list[str]]     # makes the bad input; returns extra command-line options
    expect: tuple[str, ...] = ()                # the message must contain each; () = the run must succeed


BOM, SST = b"\xef\xbb\xbf", "\tid\tsentence\tsentiment"
STS = "\tid\tsentence1\tsentence2\tsimilarity"
CASES = [
    # ---- data files
    Case("data", "data folder does not exist", lambda e, o: ["--data-dir", str(e.root / "nowhere")],
         ("nowhere: does not exist", "--data-dir")),
    Case("data", "a file is missing (sts-dev.csv)", data({"sts-dev.csv": None}), ("lacks sts-dev.csv", "download.py")),
    Case("data", "empty file", data({"ids-sst-train.csv": b""}), ("ids-sst-train.csv: file is empty",)),
    Case("data", "wrong header (text, label)", data({"ids-sst-train.csv": lines("\tid\ttext\tlabel", "0\tx\t A .\t3")}),
         ("ids-sst-train.csv: line 1: header lacks column(s) ['sentence', 'sentiment']",)),
    Case("data", "label column missing (quora-train.csv)",
         data({"quora-train.csv": lines("\tid\tsentence1\tsentence2", "0\tq\tA?\tB?")}),
         ("quora-train.csv: line 1: header lacks column(s) ['is_duplicate']",)),
    Case("data", "empty sentence", data({"ids-sst-train.csv": lines(SST, GOOD_ROW, "1\tblank\t   \t2")}),
         ("ids-sst-train.csv: line 3: empty sentence", "--skip-bad-rows")),
    Case("data", "non-numeric label", data({"ids-sst-train.csv": lines(SST, GOOD_ROW, "1\tw\t A film .\tthree")}),
         ("ids-sst-train.csv: line 3: sentiment: label 'three' is not a number",)),
    Case("data", "out-of-range label (sst 7)", data({"ids-sst-train.csv": lines(SST, GOOD_ROW, "1\ts\t A film .\t7")}),
         ("ids-sst-train.csv: line 3: sentiment: label '7' is not an integer in 0..4",)),
    Case("data", "out-of-range label (sts 5.5)", data({"sts-train.csv": lines(STS, "0\tx\tA.\tB.\t5.5")}),
         ("sts-train.csv: line 2: similarity: label '5.5' is not a number in 0.0..5.0",)),
    Case("data", "unquoted tab inside a sentence",
         data({"ids-sst-train.csv": lines(SST, GOOD_ROW, "1\tt\t A\tfilm .\t2")}),
         ("ids-sst-train.csv: line 3: row has 5 fields, header has 4",)),
    Case("data", "invalid UTF-8", data({"ids-sst-dev.csv": lines(SST) + b"0\td\t caf\xe9 .\t2\n"}),
         ("ids-sst-dev.csv: line 2: not valid UTF-8", "re-save the file as UTF-8")),
    Case("data", "--skip-bad-rows drops every row", data({"ids-sst-train.csv": lines(SST, "0\tx\t A film .\t9")},
                                                         "--skip-bad-rows"),
         ("ids-sst-train.csv: no train examples left",)),
    Case("data", "BOM and CRLF line ends (accepted)",
         data({"ids-sst-train.csv": BOM + lines(SST, GOOD_ROW, "1\tb\t Bad .\t0").replace(b"\n", b"\r\n")})),
    Case("data", "a 10,000-word sentence (accepted, truncated to --max-length)",
         data({"ids-sst-train.csv": lines(SST, GOOD_ROW, "1\tlong\t" + " word" * 10_000 + "\t1")})),
    # ---- model checkpoint (--model)
    Case("checkpoint", "directory does not exist", lambda e, o: ["--model", str(e.root / "no-such-model")],
         ("no-such-model does not exist",)),
    Case("checkpoint", "config.json missing", model(lambda d: (d / "config.json").unlink()), ("no config.json",)),
    Case("checkpoint", "config.json is not JSON", model(lambda d: (d / "config.json").write_text("{layers: 2")),
         ("config.json: not valid JSON",)),
    Case("checkpoint", "wrong architecture (model_type roberta)",
         model(lambda d: write_config(d, model_type="roberta")),
         ("model_type 'roberta'",)),
    Case("checkpoint", "config says 3 layers, weights have 2", model(lambda d: write_config(d, num_hidden_layers=3)),
         ("does not match a BERT with this config", "missing: encoder.layer.2")),
    Case("checkpoint", "truncated model.safetensors", model(lambda d: truncate(d / "model.safetensors")),
         ("model.safetensors",)),
    Case("checkpoint", "corrupt model.safetensors header",
         model(lambda d: (d / "model.safetensors").write_bytes(b"\x10" + b"\0" * 7 + b"{not json!}     ")),
         ("model.safetensors: header is not valid UTF-8 JSON",)),
    Case("checkpoint", "pytorch_model.bin pickle that runs code", model(evil_pickle),
         ("pytorch_model.bin: refused to unpickle",)),
    Case("checkpoint", "vocabulary larger than the embedding table", model(small_vocab_model),
         ("the tokenizer has 30522 tokens", "only 1000 rows")),
    Case("checkpoint", "no tokenizer files",
         model(lambda d: [(d / f).unlink() for f in ("vocab.txt", "tokenizer.json")]),
         ("neither tokenizer.json nor vocab.txt",)),
    Case("checkpoint", "corrupt tokenizer.json", model(lambda d: (d / "tokenizer.json").write_text('{"model": 1}')),
         ("cannot read the tokenizer",)),
    # ---- training checkpoint (--out-dir, --resume)
    Case("resume", "--out-dir holds a run, no --resume", resume(flag=""),
         ("already holds a run", "--resume", "--overwrite")),
    Case("resume", "--resume, truncated model file", resume(lambda o: truncate(last_file(o, "model"))),
         ("bytes, but", "were written")),
    Case("resume", "--resume, optimizer file zeroed (same size)",
         resume(lambda o: zero_fill(last_file(o, "optimizer"))),
         ("optimizer-",)),
    Case("resume", "--resume, state.json garbled",
         resume(lambda o: (o / "last" / "state.json").write_text('{"step": 4, "f')),
         ("state.json: unreadable",)),
    Case("resume", "--resume, a file of the checkpoint deleted", resume(lambda o: last_file(o, "optimizer").unlink()),
         ("missing, but",)),
    Case("resume", "--resume with another --lr", resume(lambda o: None, "--lr", "0.5"),
         ("cannot resume with different options", "--lr 0.0001 (now 0.5)")),
    # ---- command-line options
    Case("options", "unknown task", options("--tasks", "sst,imdb"), ("--tasks: unknown task(s) ['imdb']",)),
    Case("options", "batch size 0", options("--batch-size", "0"), ("batch sizes must be at least 1",)),
    Case("options", "device that does not exist", options("--device", "tpu"), ("--device tpu",)),
    Case("options", "CUDA device that is not there", options("--device", "cuda:99"),
         ("--device cuda:",)),
    Case("options", "--max-length too short", options("--max-length", "2"), ("--max-length 2: must be at least 4",)),
    Case("options", "--save-every 0", options("--save-every", "0"), ("--save-every 0: must be at least 1",)),
    Case("options", "--freeze with a typo", options("--freeze", "lower:two"), ("--freeze 'lower:two'",)),
    Case("options", "--resume together with --overwrite", options("--resume", "--overwrite"), ("pass one of them",)),
    Case("options", "--out-dir is a file", out_dir_is_a_file, ("is a file",)),
    Case("options", "--epochs 0 and no --extra-epochs", options("--epochs", "0"), ("nothing to train",)),
]


def snapshot(path: Path) -> dict[str, str] | None:
    """{relative path: sha256} of every file under path (None if it does not exist)."""
    if not path.exists():
        return None
    if path.is_file():
        return {".": hashlib.sha256(path.read_bytes()).hexdigest()}
    return {str(f.relative_to(path)): hashlib.sha256(f.read_bytes()).hexdigest()
            for f in sorted(path.rglob("*")) if f.is_file()}


@dataclass
class Outcome:
    status: int          # exit status (0: success)
    message: str         # what the user was told (stderr's error paragraph)
    changed: bool        # whether anything under the out dir was created or changed


def run_case(case: Case, env: Env, subprocess_cli: bool = False) -> Outcome:
    out = env.root / "runs" / re.sub(r"\W+", "-", case.what).strip("-")
    shutil.rmtree(out, ignore_errors=True) if out.is_dir() else out.unlink(missing_ok=True)
    argv = base_argv(env.ckpt, FIXTURE_DATA, out) + case.setup(env, out)
    before = snapshot(out)
    if subprocess_cli:
        p = subprocess.run([sys.executable, str(SCRIPT), *argv], capture_output=True, text=True, timeout=300,
                           env={**os.environ, "OMP_NUM_THREADS": "1"})
        status, err = p.returncode, p.stderr
    else:
        from training import run_multitask
        err_buf = io.StringIO()
        status = 0
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err_buf):
            try:
                run_multitask.main(argv)
            except SystemExit as e:
                if isinstance(e.code, str):  # what the interpreter prints for raise SystemExit("...")
                    status, err = 1, e.code
                else:
                    status, err = e.code, err_buf.getvalue()
        if status == 0:
            err = err_buf.getvalue()
    message = err[err.rfind("error: "):].strip() if "error: " in err else err.strip()[-500:]
    changed = status != 0 and snapshot(out) != before
    return Outcome(status, message, changed)


def markdown_table(env: Env) -> str:
    rows = ["| input | what was tried | exit | message (stderr) |", "| --- | --- | --- | --- |"]
    for case in CASES:
        o = run_case(case, env, subprocess_cli=True)
        msg = o.message if o.status else "runs (exit 0): trains and writes predictions"
        msg = msg.replace(str(env.root), "…").replace(str(REPO), ".").replace("\n", " ").replace("|", "\\|")
        rows.append(f"| {case.area} | {case.what} | {o.status} | {msg} |")
    return "\n".join(rows)


if __name__ == "__main__":
    with tempfile.TemporaryDirectory(prefix="reliability-") as tmp:
        print(markdown_table(Env(Path(tmp))))
