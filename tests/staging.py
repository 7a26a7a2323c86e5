"""An interpreter the grader's runner user can reach, wherever the clone lives (a helper for the grader
suites, not a test file).

A clone under a private folder (mode 700: a home directory, `mktemp -d`) hides its .venv from the
runner user, so every sandboxed step would crash. stage_python builds, in a folder of its own, a venv
of the same base interpreter whose site-packages holds hard links of this venv's site-packages (no
data copied, a copy only across filesystems). Build it once per test session:

    @pytest.fixture(scope="session")
    def staged_python():
        dest = Path(tempfile.mkdtemp(prefix="minbert-python-"))  # in /tmp, which others can traverse
        try:
            yield stage_python(dest)  # dest is made 755: mkdtemp's 700 would hide it
        finally:
            shutil.rmtree(dest)

The base interpreter stays where it is: ensure_runner_user gives o+x (traverse, not list) on the
folders above it. Staging the base installation by hard links as well would not free it from its
folder: a pyenv build (--enable-shared) finds libpython through an absolute RUNPATH
(/root/.pyenv/versions/X/lib), and the grader gives the runner no LD_LIBRARY_PATH.
"""
from __future__ import annotations

import os
import shutil
import stat
import sys
import sysconfig
import venv
from pathlib import Path

from course.sandbox import RUNNER_USER, ensure_runner_user


def stage_python(dest: Path, user: str = RUNNER_USER) -> Path:
    """A venv in `dest` (new or empty; made mode 755 all the way down) with this interpreter's packages;
    returns its bin/python. The folders above dest must let others traverse them. Root only: it
    creates the runner user and lets it reach the base Python."""
    dest = Path(dest).absolute()
    closed = [f for f in dest.parents if not f.stat().st_mode & stat.S_IXOTH]
    if closed:  # a private parent (pytest's basetemp is 700) would hide it like the clone
        raise ValueError(f"{dest}: {closed[0]} is mode {stat.S_IMODE(closed[0].stat().st_mode):o}, which the "
                         f"runner user cannot traverse; stage in tempfile.mkdtemp() instead")
    # venv uses sys._base_executable: the staged bin/python is a symlink to the base interpreter
    venv.EnvBuilder(symlinks=True, with_pip=False).create(dest)
    source = Path(sysconfig.get_paths()["purelib"])
    target = Path(sysconfig.get_paths(vars={"base": str(dest), "platbase": str(dest)})["purelib"])
    link_tree(source, target)
    for folder, _, _ in os.walk(dest):
        os.chmod(folder, 0o755)
    python = dest / "bin" / "python"
    ensure_runner_user(user, python=str(python))  # o+x above the base interpreter (pyenv in /root)
    return python


def link_tree(source: Path, target: Path) -> None:
    """Hard links of every file under source (a copy across filesystems, or for a file others cannot
    read, so that the source's own modes never change). Skips the editable install of this project,
    which points back into the clone: the grader imports course/ from its cwd, the runner the tree."""
    for folder, dirs, files in os.walk(source):
        rel = Path(folder).relative_to(source)
        (target / rel).mkdir(mode=0o755, exist_ok=True)
        for name in [*files, *(d for d in dirs if os.path.islink(os.path.join(folder, d)))]:
            if name.startswith("__editable__"):
                continue
            src, dst = os.path.join(folder, name), target / rel / name
            if os.path.islink(src):
                os.symlink(os.readlink(src), dst)
            elif os.stat(src).st_mode & stat.S_IROTH:
                try:
                    os.link(src, dst)
                except OSError:  # EXDEV: another filesystem
                    shutil.copy2(src, dst)
            else:
                shutil.copy2(src, dst)
                dst.chmod(stat.S_IMODE(dst.stat().st_mode) | 0o644)
