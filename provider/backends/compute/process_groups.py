"""The process groups of local jobs, as Linux's /proc shows them, and the records kept of them.

Each stage of a local job runs as a process group led by the job guard (local_guard.py). While a
stage runs, the backend keeps a record of its group in the job's directory: the leader's pid, its
start time and the boot it belongs to. A service that was killed leaves its records behind, and
the next start kills what they name. A record names a process only if that process still has the
recorded start time in the same boot and is a job guard: a pid that was recycled, or a record
that points elsewhere, never gets a process killed.

Elsewhere than on Linux nothing is recorded (the guards still take their groups down with them).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import time
from pathlib import Path

log = logging.getLogger(__name__)

GROUP_RECORD = "process-group.json"
GUARD_MODULE = "provider.backends.compute.local_guard"
PROC = Path("/proc")
_BOOT_ID = PROC / "sys" / "kernel" / "random" / "boot_id"


def _stat(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (state first), or None."""
    try:
        text = (PROC / str(pid) / "stat").read_text()
    except (OSError, ValueError):
        return None
    # The command name is in parentheses and may hold spaces or parentheses itself.
    return text.rsplit(")", 1)[1].split()


def start_time(pid: int) -> int | None:
    """When the process started, in clock ticks after boot; None if there is no such process."""
    fields = _stat(pid)
    return int(fields[19]) if fields else None


def boot_id() -> str | None:
    try:
        return _BOOT_ID.read_text().strip()
    except OSError:
        return None


def group_members(group: int, exclude: int | None = None) -> list[int]:
    """Processes of the process group that have not exited (zombies are gone already)."""
    members = []
    for entry in PROC.iterdir() if PROC.is_dir() else ():
        if not entry.name.isdigit() or int(entry.name) == exclude:
            continue
        fields = _stat(int(entry.name))
        if fields and int(fields[2]) == group and fields[0] not in ("Z", "X"):
            members.append(int(entry.name))
    return members


def kill_members(group: int, exclude: int | None = None, rounds: int = 50) -> bool:
    """SIGKILL every process of the group but `exclude`, again while any is left (one may have
    been forking). True when none is left."""
    for _ in range(rounds):
        members = group_members(group, exclude)
        if not members:
            return True
        for pid in members:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.02)
    return not group_members(group, exclude)


def record_group(path: Path, leader: int) -> None:
    """Note the group that `leader` leads, for the next start to find if this service dies."""
    started = start_time(leader)
    if started is None:
        return  # no /proc: a record could not be checked, so none is kept
    temporary = path.with_name(path.name + ".tmp")
    try:
        temporary.write_text(json.dumps({"pid": leader, "start_time": started, "boot_id": boot_id()}))
        temporary.replace(path)
    except OSError as exc:  # the job runs all the same; only a crash would leave it unrecorded
        log.warning("cannot record a job's process group: %s", exc)


def _is_recorded_guard(record: dict[str, object]) -> bool:
    pid = record.get("pid")
    if not isinstance(pid, int) or pid <= 1 or record.get("boot_id") != boot_id():
        return False
    if start_time(pid) != record.get("start_time"):
        return False
    try:
        command = (PROC / str(pid) / "cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return GUARD_MODULE.encode() in command


def kill_recorded_groups(root: Path, patience: float = 10.0) -> list[str]:
    """Kill the groups that records under `root` name, wait until none of their processes is
    left, and remove the records. Returns the names of the job directories that had survivors."""
    survivors = []
    for path in sorted(root.glob(f"*/{GROUP_RECORD}")):
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            record = {}
        if isinstance(record, dict) and _is_recorded_guard(record):
            group = int(record["pid"])
            survivors.append(path.parent.name)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(group, signal.SIGKILL)
            deadline = time.monotonic() + patience
            while group_members(group) and time.monotonic() < deadline:
                time.sleep(0.05)
            if group_members(group):
                log.error(
                    "processes of a job of an earlier run do not die",
                    extra={"job": path.parent.name, "process_group": group},
                )
            else:
                log.warning(
                    "killed the processes of a job of an earlier run",
                    extra={"job": path.parent.name, "process_group": group},
                )
        path.unlink(missing_ok=True)
    return survivors
