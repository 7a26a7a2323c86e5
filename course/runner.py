"""The runner: the only process that imports student code. Started by the checker (course/grade.py)
as `python -I -c BOOT TREE CPU MEMORY FILE NPROC STEP INPUTS OUTPUTS SCRATCH` in a fresh copy of the
tree, with cwd=SCRATCH (on Gradescope as the unprivileged runner user).

It reads the checker's inputs (safetensors), runs the step's probe (course/probes.py) and writes the
outputs and each failed test's exception line (safetensors). It decides nothing: whatever it writes
is compared by the checker with its own references, so a runner that lies only loses its points.
"""
from __future__ import annotations

import json
import resource
import sys
from pathlib import Path

# The checker's command line: put the tree first on the import path (python -I ignores PYTHONPATH).
BOOT = ("import sys; sys.path.insert(0, sys.argv[1]); import course.runner as r; "
        "sys.exit(r.main(sys.argv[2:]))")


def apply_limits(cpu_seconds: int, memory: int, file_size: int, processes: int) -> None:
    """Limits this process cannot raise again; set before any student code is imported."""
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds + 1))
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    resource.setrlimit(resource.RLIMIT_FSIZE, (file_size, file_size))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if processes:  # per user: only meaningful for the dedicated runner user
        resource.setrlimit(resource.RLIMIT_NPROC, (processes, processes))


def main(argv: list[str]) -> int:
    apply_limits(*(int(a) for a in argv[:4]))
    from course.guard import install_import_guard
    install_import_guard()  # before any student code: transformers cannot be imported at all
    import torch
    from course import wire
    from course.probes import run_probe

    step, inputs, outputs, scratch = int(argv[4]), Path(argv[5]), Path(argv[6]), Path(argv[7])
    torch.set_num_threads(1)
    tensors, meta = wire.load(inputs)
    out = run_probe(step, tensors, json.loads(meta["spec"]), scratch)
    wire.save(outputs, out.tensors, {"errors": json.dumps(out.errors)})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
