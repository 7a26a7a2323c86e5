"""training/engine/memory.py and training/engine/profiling.py: the heap's free pages really go back to the system,
the oneDNN cache cap is set before any matrix product, and --profile prints where a step's time goes."""
import os
import subprocess
import sys

import pytest
import torch

from training.engine import memory
from training import run_multitask
from training.engine.profiling import step_profiler


def rss_mb() -> float:
    return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


@pytest.mark.skipif(memory._TRIM is None or not os.path.exists("/proc/self/statm"), reason="glibc on Linux only")
def test_release_hands_fragmented_free_heap_pages_back():
    # 3,000 blocks of ~96 KB (below glibc's mmap threshold, so they come from the heap); freeing every
    # other one leaves holes between live blocks that free() alone cannot give back.
    memory.release()
    blocks = [torch.ones(24_000 + i % 7) for i in range(3000)]  # float32: ~96 KB each, ~290 MB in all
    del blocks[::2]
    before = rss_mb()
    memory.release()
    after = rss_mb()
    assert before - after > 60, f"RSS {before:.0f} -> {after:.0f} MB: the ~145 MB of holes were not returned"
    assert all(float(b[0]) == 1.0 for b in blocks)  # the live blocks are untouched


def test_release_runs_every_nth_step_only(monkeypatch):
    calls = []
    monkeypatch.setattr(memory, "_TRIM", lambda pad: calls.append(pad))
    for step in range(1, 31):
        memory.release(step)
    every = memory.RELEASE_EVERY
    assert every > 1 and calls == [0] * (30 // every)  # steps every, 2 * every, ...
    monkeypatch.setattr(memory, "RELEASE_EVERY", 0)  # 0: never
    memory.release(10)
    memory.release()  # no step: now
    assert calls == [0] * (30 // every + 1)


@pytest.mark.parametrize("preset, expected", [(None, "16"), ("1024", "1024")])
def test_importing_training_caps_the_onednn_cache_unless_the_user_set_it(preset, expected):
    env = {k: v for k, v in os.environ.items() if k != "ONEDNN_PRIMITIVE_CACHE_CAPACITY"}
    if preset:
        env["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] = preset
    out = subprocess.run([sys.executable, "-c", "import os, training; print(os.environ['ONEDNN_PRIMITIVE_CACHE_CAPACITY'])"],
                         env=env, capture_output=True, text=True, check=True).stdout.strip()
    assert out == expected


def test_step_profiler_reports_the_ops_of_the_profiled_steps_only():
    lines = []
    hook = step_profiler(2, start=1, say=lines.append)
    a = torch.randn(64, 64)
    for step in range(1, 5):
        (a @ a if step in (2, 3) else a + a).sum()  # the profiled steps 2-3 multiply; the others add
        hook(step, {})
    assert len(lines) == 1 and "profile of steps 2-3" in lines[0] and "ms per step" in lines[0]
    assert "aten::mm" in lines[0] and "aten::add " not in lines[0]


def test_profile_option_must_not_be_negative(capsys):
    with pytest.raises(SystemExit):
        run_multitask.parse_args(["--profile", "-1", "--device", "cpu"])
    assert "--profile -1: must be 0 (off) or a number of steps" in capsys.readouterr().err
