"""Docs that run (issue 28): the marked command blocks of docs/TEACHING.md and of the student README run
as written, in a temporary folder, and do what the docs say.

The convention. A fenced bash block right after a marker line runs:

    <!-- run -->           runs as written
    <!-- run: root -->     needs root: runs only where this test runs as root (CI's grader job); without
                           root it is reported as not run, and the other blocks still run

Blocks without a marker are not run: interactive ones (`--pdb`), illustrative ones (TOML) and long
measurements. A marker not followed by a bash block, or with another tag, is an error here.

How they run. Each document's marked blocks run in order in one bash script (`set -euo pipefail`); each
block is a subshell (`set -euo pipefail` again) started from the document's folder (the repository, or the
release), so a `cd` in one block lasts to its end, and the script stops at the first block that exits
non-zero, naming it.

- docs/TEACHING.md: in a fresh copy of the repository's files (those git knows, as make_student reads
  them), in a temporary folder, so its relative paths (../minbert-student, ../autograder.zip) land
  there. `.venv` in the copy is the repository's venv (its bin first on PATH, for `python`/`python3`);
  as root it is the staged venv of tests/staging.py (the same packages, hard-linked), which the
  runner user can reach wherever the clone lives. PLACEHOLDERS, the one place that maps the docs'
  placeholders and /tmp/ag to folders under the temporary folder (so parallel runs cannot collide),
  also names the two submissions the test builds from the solution's graded files. Without root the
  regrade (a root block) is not run, and its --no-sandbox form stands in, for the class report after it.
- the student README: in a release made by make_student and solved (`make_student --solve`), as a
  student who has finished would run it, with the system's python3 (not the instructors' venv) on PATH;
  `bash setup.sh` there makes `.venv` and pip-installs into it (54 s of the whole test's 4 min 47 s on
  2 shared cores). Only the first step's check block is marked (course/handout.py): the others differ
  in the step number alone, and the grading block runs every step.
HF_HUB_OFFLINE=1 in both: no documented command may need the Hugging Face hub.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = pytest.mark.grader

REPO = Path(__file__).resolve().parents[1]
AS_ROOT = os.geteuid() == 0
MARKER_RE = re.compile(r"^<!-- run(?P<tag>[^>]*)-->[ \t]*$")
FENCE_RE = re.compile(r"^```bash\n(?P<body>.*?)^```[ \t]*$", re.M | re.S)

# The docs' placeholders -> folders under the test's temporary folder WORK ({work}). /tmp/ag is the
# local autograder trial's folder: rewritten here so that two runs of this test cannot share it.
PLACEHOLDERS = {
    "/tmp/ag": "{work}/ag",
    "/path/to/submissions": "{work}/submissions",
    "/path/to/regraded": "{work}/regraded",
    "RESULTS": "{work}/regraded",      # the class report's input: the regrade's output
    "DIR": "{work}/submissions",
    "REPORT": "{work}/report",
}


def no_root_form(text: str) -> str | None:
    """What stands in for a root block without root, when a later block reads its output: the regrade
    (the class report reads its results) without the privilege drop. None: nothing stands in."""
    return text.replace("-m course.autograder", "-m course.autograder --no-sandbox") if "--regrade" in text else None


@dataclass
class Block:
    where: str   # file:line of its fence
    root: bool
    text: str


def marked_blocks(text: str, name: str) -> list[Block]:
    """Every marked bash block of a Markdown text, in order."""
    lines = text.splitlines(keepends=True)
    blocks = []
    for i, line in enumerate(lines):
        m = MARKER_RE.match(line.rstrip("\n"))
        if not m:
            continue
        tag = m["tag"].strip()
        assert tag in ("", ": root"), f"{name}:{i + 1}: unknown marker {line.strip()!r}"
        fence = FENCE_RE.match("".join(lines[i + 1:]))
        assert fence, f"{name}:{i + 1}: a run marker must be followed by a ```bash block"
        blocks.append(Block(f"{name}:{i + 2}", tag == ": root", fence["body"]))
    return blocks


def fill(text: str, work: Path) -> str:
    for placeholder, value in PLACEHOLDERS.items():
        text = re.sub(rf"(?<![\w/]){re.escape(placeholder)}(?![\w])", value.format(work=work), text)
    return text


def script(blocks: list[Block], cwd: Path) -> tuple[str, list[Block]]:
    """One bash script running `blocks` in order (root blocks only as root); returns it and the blocks
    left out."""
    out = ["set -euo pipefail"]
    skipped = []
    for n, b in enumerate(blocks):
        body = b.text
        if b.root and not AS_ROOT:
            skipped.append(b)
            body = no_root_form(b.text)
            if body is None:
                continue
        # Not `( ... ) || exit`: bash ignores set -e inside a subshell whose status `||` tests, so a failing
        # command in the middle of a block would go unnoticed. The block's status is read after it instead.
        out += [f'echo "docs-run: start {n} $(date +%s.%N)" >&2', "set +e",
                f"(set -euo pipefail; cd {cwd}\n{body})",
                f'rc=$?; set -e; if [ "$rc" != 0 ]; then echo "docs-run: {b.where} exited $rc" >&2; exit "$rc"; fi',
                f'echo "docs-run: end {n} $(date +%s.%N)" >&2']
    return "\n".join(out) + "\n", skipped


def run_script(text: str, cwd: Path, env: dict, blocks: list[Block], timeout: float) -> float:
    start = time.monotonic()
    proc = subprocess.run(["bash", "-c", text], cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=timeout)
    seconds = time.monotonic() - start
    stamps = dict(re.findall(r"docs-run: ((?:start|end) \d+) ([\d.]+)", proc.stderr))
    for n, b in enumerate(blocks):
        if f"end {n}" in stamps:  # shown with -s: where the time goes
            print(f"{b.where}: {float(stamps[f'end {n}']) - float(stamps[f'start {n}']):.1f} s")
    failed = re.findall(r"docs-run: (\S+ exited \d+)", proc.stderr)
    assert proc.returncode == 0, (f"{failed[-1] if failed else f'exit {proc.returncode}'}\n--- stdout\n"
                                  f"{proc.stdout[-4000:]}\n--- stderr\n{proc.stderr[-4000:]}")
    return seconds


def copy_repository(dest: Path) -> None:
    """The files git knows (tracked, plus untracked ones it does not ignore), with their working-tree
    contents: a fresh clone of what is here now, without .git (make_student then walks the tree)."""
    names = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                           capture_output=True, check=True).stdout.decode().split("\0")
    for rel in filter(None, names):
        if (REPO / rel).is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, dest / rel)


def build_submissions(folder: Path) -> None:
    """Two submissions from the solution's graded files: 'complete' (every graded file, at its path: full
    marks) and 'attention_only' (minbert/attention.py alone, flat, as a Gradescope upload of one file:
    step 1 only, the other steps are the release's stubs)."""
    from course.autograder import editable_files
    for rel in editable_files():
        (folder / "complete" / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, folder / "complete" / rel)
    (folder / "attention_only").mkdir(parents=True)
    shutil.copy2(REPO / "minbert" / "attention.py", folder / "attention_only" / "attention.py")


def venv_for_docs() -> Path:
    """The venv `.venv` stands for in the copy: the repository's, or as root its staged twin (the runner
    user must reach the interpreter of the sandboxed runs)."""
    if not AS_ROOT:
        return REPO / ".venv"
    from grader_cases import staged_python
    return staged_python().parent.parent


@pytest.fixture
def work():
    # mkdtemp in /tmp, opened to traverse: the sandboxed runner user reads the autograder folder under it.
    folder = Path(tempfile.mkdtemp(prefix="minbert-docs-"))
    folder.chmod(0o755)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_teaching_md_runs_from_a_fresh_copy(work):
    blocks = [Block(b.where, b.root, fill(b.text, work))
              for b in marked_blocks((REPO / "docs/TEACHING.md").read_text(encoding="utf-8"), "docs/TEACHING.md")]
    assert blocks, "docs/TEACHING.md has no marked blocks"
    repo = work / "repo"
    repo.mkdir()
    copy_repository(repo)
    venv = venv_for_docs()
    (repo / ".venv").symlink_to(venv, target_is_directory=True)  # what `bash setup.sh` made in the clone
    build_submissions(work / "submissions")
    text, skipped = script(blocks, repo)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHON", "VIRTUAL_ENV", "PYTHONPATH")}
    env.update(PATH=f"{repo / '.venv' / 'bin'}:{env.get('PATH', '/usr/bin:/bin')}", HF_HUB_OFFLINE="1")
    seconds = run_script(text, repo, env, blocks, timeout=900)
    print(f"docs/TEACHING.md: {len(blocks) - len(skipped)} blocks in {seconds:.0f} s; not run (needs root): "
          + (", ".join(b.where + (" (its --no-sandbox form ran)" if no_root_form(b.text) else "") for b in skipped)
             or "none"))

    # The graded sample submission (the local autograder trial: minbert/attention.py alone).
    results = json.loads((work / "ag" / "results" / "results.json").read_text())
    step1 = [t for t in results["tests"] if t.get("extra_data", {}).get("step") == 1]
    assert step1 and all(t["score"] == t["max_score"] for t in step1), step1
    assert results["score"] == pytest.approx(sum(t["score"] for t in step1)) and results["score"] < results["max_score"]
    # The grade block's --json, and the release it generated and partly solved.
    assert "score" in json.loads((repo / "results.json").read_text())
    assert zipfile.ZipFile(work / "autograder.zip").testzip() is None
    # The regrade of both submissions, then the class report of them.
    regraded = {p.stem: json.loads(p.read_text()) for p in (work / "regraded").glob("*.json")}
    assert set(regraded) == {"complete", "attention_only"}
    full = regraded["complete"]["max_score"]
    assert regraded["complete"]["score"] == pytest.approx(full) and 0 < regraded["attention_only"]["score"] < full
    rows = (work / "report" / "grades.csv").read_text().splitlines()
    assert len(rows) == 3 and {r.split(",")[0] for r in rows[1:]} == set(regraded), rows


def test_student_readme_runs_in_a_solved_release(work):
    release = work / "release"
    py = str(REPO / ".venv" / "bin" / "python")
    for args in ([release], ["--solve", release]):
        subprocess.run([py, "-m", "course.make_student", *map(str, args)], cwd=REPO, check=True,
                       capture_output=True)
    blocks = marked_blocks((release / "README.md").read_text(encoding="utf-8"), "README.md")
    assert blocks[0].text.startswith("bash setup.sh"), blocks[0]
    text, skipped = script(blocks, release)
    # A student's shell: the system's python3, not the instructors' venv.
    path = [p for p in os.environ.get("PATH", "/usr/bin:/bin").split(":") if Path(p) != REPO / ".venv" / "bin"]
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHON", "VIRTUAL_ENV", "PYTHONPATH")}
    env.update(PATH=":".join(path), HF_HUB_OFFLINE="1")
    seconds = run_script(text, release, env, blocks, timeout=900)
    print(f"README.md: {len(blocks) - len(skipped)} blocks in {seconds:.0f} s")

    assert (release / ".venv" / "bin" / "python").exists()
    assert not subprocess.run([str(release / ".venv/bin/python"), "-c", "import transformers"],
                              capture_output=True).returncode == 0, "the student's venv must not have transformers"
    from course.submit import graded_files
    with zipfile.ZipFile(release / "submission.zip") as z:
        assert set(graded_files()) <= set(z.namelist())
