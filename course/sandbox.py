"""Limits for the runner process, and on Gradescope the drop to an unprivileged user.

Local self-grading runs as the student, who can change anything there, the grader included: it is
advisory, and only the resource limits apply. On Gradescope (`--sandbox-user`, which run_autograder
passes) the runner runs as a user that setup.sh creates, which cannot write the grader, the tests
or the Python installation, and every process of that user is killed after each step, including
ones that forked or setsid-detached themselves out of the runner's process group. Before the first
step, a pre-flight check (Sandbox.preflight) makes sure that user can reach the interpreter, its
libraries and the temp folder, and names the folder to open when it cannot.
"""
from __future__ import annotations

import os
import pwd
import signal
import stat
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

RUNNER_USER = "minbert-runner"  # created by the Gradescope setup.sh
MEMORY_BYTES = 6 * 2**30        # address space: torch maps ~1-2 GB at import; a tiny probe needs little more
FILE_BYTES = 64 * 2**20         # the largest file a runner may write (a step 5 checkpoint is ~100 kB)
PROCESSES = 256                 # per user, threads included (torch starts a few per process)
PREFLIGHT_SECONDS = 60          # one `import torch` as the runner user; a loaded 2-core machine needs a few s
# What each grade() checked once in this process: (uid, gid, python, temp folder) -> the error, or None.
_PREFLIGHT: dict[tuple, str | None] = {}


class SandboxAccessError(PermissionError):
    """The runner user cannot reach the interpreter, its libraries or the grader's temp folder."""


class Sandbox:
    def __init__(self, user: str | None, cpu_seconds: int):
        self.cpu_seconds = cpu_seconds
        self.uid = self.gid = None
        self.user = user
        if user is not None:
            if os.geteuid() != 0:
                raise PermissionError(f"--sandbox-user {user} needs root to drop privileges (running as uid {os.geteuid()})")
            try:
                entry = pwd.getpwnam(user)
            except KeyError:
                raise LookupError(f"the sandbox user {user!r} does not exist; the Gradescope setup.sh creates it "
                                  f"(useradd --system --no-create-home {user})") from None
            if entry.pw_uid == 0:
                raise ValueError(f"the sandbox user {user!r} is root; it must be an unprivileged user")
            self.uid, self.gid = entry.pw_uid, entry.pw_gid
            # Sandbox is built once per step: check once per process, so a broken setup fails before
            # the first step with a message that says what to change, not as every step's crash.
            key = (self.uid, self.gid, sys.executable, tempfile.gettempdir())
            if key not in _PREFLIGHT:
                try:
                    self.preflight(sys.executable, runner_paths())
                    _PREFLIGHT[key] = None
                except SandboxAccessError as e:
                    _PREFLIGHT[key] = str(e)
            if _PREFLIGHT[key]:
                raise SandboxAccessError(_PREFLIGHT[key])

    def preflight(self, python: str, paths: list[Path]) -> None:
        """Check, as the runner user, that it can start `python -I`, import torch (its stdlib, site-packages
        and shared libraries) and reach every path in `paths` (a folder: traverse it; a file: read it).
        One subprocess; on failure name the first folder the user cannot get through."""
        if self.uid is None:
            return
        with tempfile.TemporaryDirectory(prefix="grade-preflight-") as tmp:
            probe = Path(tmp)
            probe.chmod(0o755)  # laid out as grade.py's own temp folder, so reaching it is reaching the tree
            # the paths first (fast to fail), then the import the runner does first
            script = ("import os, sys\nfor p in sys.argv[1:]:\n"
                      "    os.stat(os.path.join(p, '.')) if os.path.isdir(p) else open(p, 'rb').close()\n"
                      "import torch\n")
            env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(probe), "LANG": "C.UTF-8"}
            try:
                proc = subprocess.run([python, "-I", "-c", script, *map(str, [*paths, probe])], cwd="/", env=env,
                                      stdin=subprocess.DEVNULL, capture_output=True, timeout=PREFLIGHT_SECONDS,
                                      **self.popen_args())
                if proc.returncode == 0:
                    return
                lines = proc.stderr.decode("utf-8", "replace").strip().splitlines()
                why = lines[-1:] or [f"exit status {proc.returncode}"]
            except subprocess.TimeoutExpired:
                why = [f"`{python} -I -c 'import torch'` took over {PREFLIGHT_SECONDS} s"]
            except OSError as e:  # the exec itself: the interpreter or a folder above it
                why = [str(e)]
        temp = tempfile.gettempdir()
        for target, what, fix in [
                (Path(python), f"run {python}", "put the virtual environment outside private folders"),
                (Path(os.path.realpath(python)), f"run {python}", "put Python outside private folders"),
                *[(Path(p), f"reach {p}", "move it outside private folders") for p in paths if str(p) != temp],
                (Path(temp), f"reach the grader's temp folder {temp}", "point TMPDIR at a folder others can reach")]:
            blocked = first_blocked(target, self.uid, self.gid)
            if blocked is not None:
                mode = stat.S_IMODE(blocked.stat().st_mode)
                raise SandboxAccessError(f"the runner user {self.user} cannot {what}: {blocked} is mode {mode:o}. Give "
                                         f"others traverse permission (chmod o+x {blocked}), or {fix}")
        if why[0].endswith(f"took over {PREFLIGHT_SECONDS} s"):
            return  # slow, not refused: nothing above is closed to the user, and the step has its own timeout
        raise SandboxAccessError(f"the runner user {self.user} cannot run `{python} -I -c 'import torch'`: "
                                 f"{why[0]}")

    def give(self, path: Path) -> None:
        """Let the runner write here (its scratch directory)."""
        if self.uid is not None:
            os.chown(path, self.uid, self.gid)

    def limits(self) -> list[str]:
        """The runner's limits, which its trusted boot code sets before importing student code
        (course/runner.py: apply_limits); no preexec_fn, which is unsafe with the grader's threads."""
        return [str(self.cpu_seconds), str(MEMORY_BYTES), str(FILE_BYTES), str(PROCESSES if self.uid is not None else 0)]

    def popen_args(self) -> dict:
        """subprocess.Popen's own privilege drop (setgroups([]), setgid, setuid in the child, before exec)."""
        return {} if self.uid is None else {"user": self.uid, "group": self.gid, "extra_groups": []}

    def kill_all(self, pgid: int) -> None:
        """Kill the runner's process group, and on Gradescope every process of the runner user."""
        try:
            os.killpg(pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        if self.uid is None:
            return
        for _ in range(50):  # a fork loop can start new ones while we kill: repeat until none is left
            pids = [p for p in user_processes(self.uid) if p != os.getpid()]
            if not pids:
                return
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.02)
        raise RuntimeError(f"could not kill every process of uid {self.uid}")


def runner_paths() -> list[Path]:
    """What the runner reads besides the interpreter: the stdlib, site-packages, libpython's folder, and
    the temp folder where grade.py copies the tree (tempfile's, as grade.py's TemporaryDirectory)."""
    paths = sysconfig.get_paths()
    found = [paths[k] for k in ("stdlib", "platstdlib", "purelib", "platlib")] + [sysconfig.get_config_var("LIBDIR")]
    return [Path(p) for p in dict.fromkeys(found) if p and os.path.isdir(p)] + [Path(tempfile.gettempdir())]


def first_blocked(target: Path, uid: int, gid: int) -> Path | None:
    """The first folder on the way to `target` (and `target` itself, when a folder) that uid:gid cannot
    traverse, from the mode bits (owner, group or others; the runner has no supplementary groups)."""
    for folder in [*reversed(target.parents), *([target] if target.is_dir() else [])]:
        try:
            st = folder.stat()
        except OSError:
            return None
        bit = stat.S_IXUSR if st.st_uid == uid else stat.S_IXGRP if st.st_gid == gid else stat.S_IXOTH
        if not st.st_mode & bit:
            return folder
    return None


def user_processes(uid: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = dict(line.split(":", 1) for line in (entry / "status").read_text().splitlines() if ":" in line)
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        # the real uid; a zombie is already dead (a container's init may never reap it)
        if int(status.get("Uid", "-1 ").split()[0]) == uid and not status.get("State", "").strip().startswith("Z"):
            pids.append(int(entry.name))
    return pids



def ensure_runner_user(user: str = RUNNER_USER, python: str | None = None) -> None:
    """Create the runner user if missing and let it reach the interpreter (root only). The Gradescope
    setup.sh does the same with useradd; a machine whose Python lives under a private home (pyenv in
    /root) also needs o+x (traverse, not list) on the folders above it."""
    import subprocess
    import sys
    if os.geteuid() != 0:
        raise PermissionError("creating the runner user needs root")
    try:
        pwd.getpwnam(user)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", user], check=True)
    target = Path(os.path.realpath(python or sys.executable))
    for folder in reversed(target.parents):
        mode = folder.stat().st_mode
        if not mode & 0o001:
            folder.chmod(mode | 0o001)
