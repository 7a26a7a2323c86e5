"""The CPU tests pin the CPU (issue 11): every trainer command line a test builds must say
`--device cpu`, or the test must be marked `gpu`.

Why: the trainers default to CUDA when a GPU is present, so an unpinned test would silently move to
the GPU on a GPU machine, where bit-exact assertions (resume, unpadding's index_select backward)
do not hold. conftest.py applies `check()` to every argparse parser that has a --device option (the
in-process runs) and to every subprocess that starts a `training/run_*.py` script or torchrun.
"""
from __future__ import annotations

import re

# Entry scripts without a --device option: nothing to pin.
DEVICE_FREE = {"run_summarize.py", "summarize_runs.py", "run_export.py"}
SCRIPT = re.compile(r"(?:^|[/\\])(run_\w+\.py|benchmark\.py|distill\.py)$")


def device_of(argv: list[str]) -> str | None:
    """The last --device value on a command line, or None when it has none."""
    value = None
    for i, a in enumerate(argv):
        if a == "--device" and i + 1 < len(argv):
            value = argv[i + 1]
        elif a.startswith("--device="):
            value = a.split("=", 1)[1]
    return value


def problem(argv: list[str]) -> str | None:
    """Why this trainer command line does not pin the CPU, or None when it does.

    Accepted: `--device cpu`, and device names no machine has (the option-error tests pass
    `--device tpu` or `cuda:99` on purpose and expect a refusal)."""
    d = device_of(argv)
    if d is None:
        return "no --device option (the trainers default to CUDA when a GPU is present)"
    if d == "cpu" or not re.fullmatch(r"(cuda|auto)(:\d+)?", d):
        return None
    if ":" in d and int(d.split(":")[1]) >= 64:  # no machine has that device: an error test
        return None
    return f"--device {d}"


def script_of(cmd: list[str]) -> str | None:
    """The trainer script a subprocess command line runs, or None when it runs none."""
    for a in cmd:
        m = SCRIPT.search(str(a))
        if m:
            return m.group(1)
    return None
