"""Limits for the runner process, and on Gradescope the drop to an unprivileged user.

Local self-grading runs as the student, who can change anything there, the grader included: it is
advisory, and only the resource limits apply. On Gradescope (`--sandbox-user`, which run_autograder
passes) the runner runs as a user that setup.sh creates, which cannot write the grader, the tests
or the Python installation, and every process of that user is killed after each step, including
ones that forked or setsid-detached themselves out of the runner's process group.
"""
from __future__ import annotations

import os
import pwd
import signal
import time
from pathlib import Path

RUNNER_USER = "minbert-runner"  # created by the Gradescope setup.sh
MEMORY_BYTES = 6 * 2**30        # address space: torch maps ~1-2 GB at import; a tiny probe needs little more
FILE_BYTES = 64 * 2**20         # the largest file a runner may write (a step 5 checkpoint is ~100 kB)
PROCESSES = 256                 # per user, threads included (torch starts a few per process)


class Sandbox:
    def __init__(self, user: str | None, cpu_seconds: int):
        self.cpu_seconds = cpu_seconds
        self.uid = self.gid = None
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
