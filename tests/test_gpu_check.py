"""The CPU dry run of .ci/gpu-check (GPU_CHECK_DEVICE=cpu): the script that runs on a GPU machine is
exercised end to end here, every stage with tiny sizes on the CPU, so that its plumbing (arguments,
files, the summary) is known to work before a GPU machine runs it.

It tests the plumbing only: the stage limits are stretched (GPU_CHECK_TIME_SCALE) so that a busy CI
machine does not fail it, and the benchmark's GPU section reports "no CUDA device" here."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / ".ci" / "gpu-check"
STAGES = ["pytest -m gpu", "pytest -m 'not gpu'", "benchmark gpu", "benchmark gpu compile", "multitask run",
          "multitask run fp16"]
SKIPPED_ON_CPU = {"pytest -m gpu", "pytest -m 'not gpu'"}  # the script's own rule: no suite inside the suite


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    if not (ROOT / "tests" / "fixtures" / "tokenizer" / "vocab.txt").is_file():
        pytest.skip("the fixture tokenizer is missing")
    out = tmp_path_factory.mktemp("gpu-check") / "out"
    env = dict(os.environ, GPU_CHECK_DEVICE="cpu", GPU_CHECK_TIME_SCALE="20", PYTHON=sys.executable)
    r = subprocess.run(["bash", str(SCRIPT), str(out)], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=1800)
    return r, out


def test_the_dry_run_passes(dry_run):
    r, out = dry_run
    assert r.returncode == 0, f"exit {r.returncode}\n{(out / 'summary.txt').read_text()}\n{r.stdout[-3000:]}"


def test_it_writes_the_files_its_header_lists(dry_run):
    r, out = dry_run
    listing = SCRIPT.read_text().split("into OUTDIR:\n")[1].split("\n# It needs only")[0]  # the header's file list
    listed = set(listing.replace("#", " ").split())
    written = {p.name for p in out.iterdir()}
    # everything but the two pytest logs, whose stages are skipped on the CPU
    assert written == listed - {"pytest-gpu.txt", "pytest-cpu.txt"}
    assert len(listed) <= 8
    env = (out / "env.txt").read_text()
    assert "torch" in env and "cuda available False" in env
    for name in ("bench-gpu.json", "bench-gpu-compile.json"):
        rec = json.loads((out / name).read_text())
        assert rec["gpu"] == {"skipped": "no CUDA device"}
    log = (out / "multitask-gpu.txt").read_text()
    assert log.count("--- log.jsonl") == 2 and "=== --amp fp16 ===" in log  # both runs, the fp16 one second


def test_the_summary_has_one_line_per_stage_then_the_verdict(dry_run):
    r, out = dry_run
    lines = (out / "summary.txt").read_text().splitlines()
    assert len(lines) == len(STAGES) + 1
    for stage, line in zip(STAGES, lines):
        assert line.startswith(stage + " "), line
        assert line[len(stage):].split()[0] == ("skipped:" if stage in SKIPPED_ON_CPU else "ok"), line
    assert lines[-1].startswith("gpu-check: all stages passed")
