"""Local data that one service alone may use, held with an exclusive lock while it runs.

A second service on the same SQLite database or local compute directory would take the first
one's running jobs for lost and delete their directories. Each such place gets a lock file
beside it, held with flock(2): the operating system lets go of it when the process ends, however
it ends, so a killed service leaves no stale lock. The file names the holder (its pid and command
line) for the message that a second service stops with.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from provider.logs import redact


class DataInUse(Exception):
    """Another process holds the lock; the message names the data and that process."""


@dataclass
class DataLock:
    path: Path  # the lock file
    what: str  # the data it guards, as the message names it
    _file: IO[str] | None = field(default=None, init=False, repr=False)

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = os.fdopen(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600), "r+", encoding="utf-8")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(handle.read())
            handle.close()
            raise DataInUse(
                f"{self.what} is in use by {holder}: stop that one first, or give this service "
                "data of its own (data_dir)"
            ) from None
        except BaseException:
            handle.close()
            raise
        handle.truncate(0)
        # No secret on a command line reaches the file (or another service's message).
        handle.write(json.dumps({"pid": os.getpid(), "command": redact(shlex.join(sys.orig_argv))}))
        handle.flush()
        self._file = handle

    def release(self) -> None:
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.truncate(0)  # the next holder is named by what it writes, not by this
            self._file.close()  # closing lets go of the lock
            self._file = None


def _holder(content: str) -> str:
    try:
        holder = json.loads(content)
        return f"process {int(holder['pid'])} ({holder['command']})"
    except (ValueError, KeyError, TypeError):
        return "another process (it has not said which yet)"


@dataclass
class DataLocks:
    """Several locks taken together: all of them, or none."""

    locks: list[DataLock]

    def acquire(self) -> None:
        taken: list[DataLock] = []
        try:
            for lock in self.locks:
                lock.acquire()
                taken.append(lock)
        except BaseException:
            for lock in taken:
                lock.release()
            raise

    def release(self) -> None:
        for lock in reversed(self.locks):
            lock.release()
