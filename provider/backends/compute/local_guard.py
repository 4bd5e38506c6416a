"""`python -m provider.backends.compute.local_guard FD -- COMMAND...`: one stage of a local job.

The local backend starts every stage (stage-in, the worker, stage-out) through this guard, as the
leader of a new session and process group, which COMMAND and whatever it starts belong to. FD is
the read end of a pipe whose only write end the service holds: however the service ends, even by
SIGKILL, the read sees end-of-file and the guard kills its whole process group. COMMAND gets
PR_SET_PDEATHSIG as well (Linux), so that it dies if the guard alone is killed. When COMMAND
exits, whatever it left running in the group is killed too, and the guard exits as COMMAND did.

SIGTERM, SIGINT and SIGHUP do not stop the guard: sent to the group, they reach COMMAND, which
decides; the backend's SIGKILL after the grace period takes everyone.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable

from provider.backends.compute.process_groups import kill_members

PR_SET_PDEATHSIG = 1


def _dies_with(parent: int) -> Callable[[], None] | None:
    """What the child runs before exec: ask for SIGKILL when its parent (the guard) ends."""
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up before fork, not in the child

    def set_death_signal() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # the guard died before the request took effect
            os.kill(os.getpid(), signal.SIGKILL)

    return set_death_signal


def _watch(fd: int) -> None:
    """Block until the service's end of the pipe closes, then kill the whole group."""
    try:
        while os.read(fd, 1):
            pass
    except OSError:
        pass
    os.killpg(0, signal.SIGKILL)


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "--" or not argv[0].isdigit():
        print("usage: python -m provider.backends.compute.local_guard FD -- COMMAND...", file=sys.stderr)
        return 2
    fd, command = int(argv[0]), argv[2:]
    os.set_inheritable(fd, False)
    if os.getpgrp() != os.getpid():
        os.setsid()  # the group killed below must be this job's own, never the caller's
    try:
        # No threads yet: running Python code between fork and exec (preexec_fn) is safe here.
        child = subprocess.Popen(command, preexec_fn=_dies_with(os.getpid()))  # noqa: S603
    except OSError as exc:
        print(f"cannot run {command[0]}: {exc}", file=sys.stderr)
        return 127
    threading.Thread(target=_watch, args=(fd,), daemon=True).start()
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, lambda *_: None)
    code = child.wait()
    kill_members(os.getpgrp(), exclude=os.getpid())
    if code < 0:  # end the way COMMAND ended, so that the backend sees the signal
        signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
        return 128 - code
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
