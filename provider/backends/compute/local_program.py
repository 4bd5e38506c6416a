"""Runs a program's steps for the local backend, in a file system of their own.

Started as `unshare [--user --map-root-user] --mount --pid --fork python -I -m
provider.backends.compute.local_program PLAN` in new mount and process namespaces (and a user
namespace unless the service runs as root), so that what it mounts is seen by the steps alone and
they see no other process. The steps then run without privileges (`give_up_privileges`): as
`nobody` when the service is root, else as the namespace's root without any capability. It builds a root from
the host's top-level directories, bound read-only, with a private /tmp, its own /proc, a /dev of
the harmless devices only, and empty directories over what the steps must not read (the
service's data, configuration and other jobs: the plan's `hide`); then the program's directories
and its placed inputs at the paths the task gave. The steps run one after another inside it
(chroot), as in a container.

It writes how each step ended to STEPS (JSON) as it goes: the local backend reads it. A root that
cannot be built is written there as `setup_error`, and nothing runs. Standard library only.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import json
import os
import signal
import subprocess
import sys
import threading
from collections import deque
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 16384
TAIL_BYTES = 8192
DEVICES = ("null", "zero", "full", "random", "urandom", "tty")
PRIVATE = ("root", "home")  # users' homes: only what the plan exposes of them
MS_NOEXEC = 8

_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


class SetupError(Exception):
    pass


def _mount(source: str, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    result = _libc.mount(
        source.encode(),
        target.encode(),
        fstype.encode() if fstype else None,
        flags,
        data.encode() if data else None,
    )
    if result != 0:
        errno = ctypes.get_errno()
        raise SetupError(f"cannot mount {source} at {target}: {os.strerror(errno)}")


def _bind(source: str, target: str, read_only: bool) -> None:
    _mount(source, target, None, MS_BIND | MS_REC)
    if read_only:
        # Read-only all the way down: the bind and every mount beneath it (a recursive bind
        # brings the host's submounts along writable). Each keeps its own flags (a namespace may
        # not drop them); one that cannot be made read-only is no root to run in.
        for place in [target, *_submounts(target)]:
            kept = os.statvfs(place).f_flag & (MS_NOSUID | MS_NODEV | MS_NOEXEC)
            _mount("none", place, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV | kept)


def _submounts(target: str) -> list[str]:
    """The mount points below `target`, outermost first (from this namespace's mountinfo)."""
    found = []
    with open("/proc/self/mountinfo") as table:
        for line in table:
            point = line.split()[4].encode().decode("unicode_escape")  # "\040" for a space
            if point.startswith(target.rstrip("/") + "/"):
                found.append(point)
    return sorted(set(found), key=lambda p: p.count("/"))


PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
_LINUX_CAPABILITY_VERSION_3 = 0x20080522
SYS_CAPSET = {"x86_64": 126, "aarch64": 91}


def give_up_privileges(run_as: tuple[int, int] | None) -> None:
    """What the steps run with: as root on the host (no user namespace), another user, `run_as`;
    in a user namespace, its root without a single capability, so that no step can mount,
    unmount or chroot its way out. No step gains privileges by exec (setuid files, file
    capabilities) either."""
    if run_as is not None:
        uid, gid = run_as
        os.setgroups([])
        os.setgid(gid)
        os.setuid(uid)  # from root to another user: every capability goes with it
    else:
        for capability in range(64):
            if _libc.prctl(PR_CAPBSET_DROP, capability, 0, 0, 0) != 0 and ctypes.get_errno() != errno.EINVAL:
                raise SetupError(f"cannot drop capability {capability}: {os.strerror(ctypes.get_errno())}")
        header = (ctypes.c_uint32 * 2)(_LINUX_CAPABILITY_VERSION_3, 0)
        data = (ctypes.c_uint32 * 6)()  # effective, permitted, inheritable: none, twice (64 bits)
        number = SYS_CAPSET.get(os.uname().machine)
        if number is None or _libc.syscall(number, header, data) != 0:
            raise SetupError("cannot give up the namespace's capabilities")
    if _libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise SetupError("cannot set no_new_privs")


def _mount_point(target: Path, directory: bool) -> None:
    try:
        if directory:
            target.mkdir(parents=True, exist_ok=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.touch(exist_ok=True)
    except OSError as exc:
        raise SetupError(
            f"cannot make {target} a mount point ({exc.strerror}): on the local backend a task's paths "
            "must lie under /tmp or under a top-level directory the host does not have"
        ) from exc


def build_root(plan: dict[str, Any]) -> Path:
    """The steps' root: the host's top level read-only, /tmp private, the program's paths."""
    root = Path(plan["root"])
    root.mkdir(parents=True, exist_ok=True)
    _mount("none", str(root), "tmpfs", MS_NOSUID, "mode=0755")
    for entry in sorted(os.listdir("/")):
        host = Path("/") / entry
        inside = root / entry
        if host.is_symlink():
            inside.symlink_to(os.readlink(host))
        elif entry == "tmp":
            inside.mkdir()
            _bind(plan["tmp"], str(inside), read_only=False)
        elif entry in ("proc", "dev", "sys") or entry in PRIVATE:
            continue  # made below, or left out (sys, the homes)
        elif host.is_dir():
            inside.mkdir()
            _bind(str(host), str(inside), read_only=True)
    for path in plan.get("expose", []):  # what the steps need of the homes: the interpreter, say
        place = root / path.lstrip("/")
        if Path(path).is_dir() and not place.exists():
            place.mkdir(parents=True)
            _bind(path, str(place), read_only=True)
    (root / "proc").mkdir()
    _mount("proc", str(root / "proc"), "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)  # this namespace's
    dev = root / "dev"
    dev.mkdir()
    _mount("none", str(dev), "tmpfs", MS_NOSUID | MS_NOEXEC, "mode=0755")
    for name in DEVICES:
        if Path("/dev", name).exists():
            (dev / name).touch()
            _mount(f"/dev/{name}", str(dev / name), None, MS_BIND)
    for name, target in (
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ):
        (dev / name).symlink_to(target)
    (dev / "shm").mkdir()
    _mount("none", str(dev / "shm"), "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777")
    for hidden in plan.get("hide", []):
        place = root / hidden.lstrip("/")
        if place.is_symlink() or not place.exists():
            continue
        if place.is_dir():
            _mount("none", str(place), "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_RDONLY, "mode=0755")
        else:
            _mount("/dev/null", str(place), None, MS_BIND)
    for source, target in plan["directories"]:
        place = root / target.lstrip("/")
        _mount_point(place, directory=True)
        _bind(source, str(place), read_only=False)
    for source, target, directory in plan["placements"]:
        place = root / target.lstrip("/")
        _mount_point(place, directory=directory)
        _bind(source, str(place), read_only=True)
    return root


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _pump(pipe: IO[bytes], sinks: list[IO[bytes]], tail: deque[bytes]) -> None:
    """Copy a step's output to its sinks, keeping the last bytes for the step's log."""
    for chunk in iter(lambda: pipe.read1(65536), b""):  # type: ignore[attr-defined]
        for sink in sinks:
            sink.write(chunk)
            sink.flush()
        tail.append(chunk)
        while sum(len(c) for c in tail) > TAIL_BYTES and len(tail) > 1:
            tail.popleft()


def _text(tail: deque[bytes]) -> str:
    return b"".join(tail)[-TAIL_BYTES:].decode("utf-8", "replace")


def run_step(step: dict[str, Any], env: dict[str, str]) -> dict[str, Any]:
    started = _now()
    with contextlib.ExitStack() as files:
        stdin = files.enter_context(open(step["stdin"], "rb")) if step.get("stdin") else subprocess.DEVNULL
        outs: dict[str, list[IO[bytes]]] = {"stdout": [sys.stdout.buffer], "stderr": [sys.stderr.buffer]}
        for name in ("stdout", "stderr"):
            if step.get(name):
                outs[name].append(files.enter_context(open(step[name], "wb")))
        try:
            process = subprocess.Popen(  # noqa: S603 - the task's own command, in its own root
                step["command"],
                cwd=step.get("workdir") or "/",
                env={**env, **step.get("env", {})},
                stdin=stdin,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
        except OSError as exc:
            message = f"cannot start {step['command'][0]}: {exc.strerror}\n"
            sys.stderr.write(message)
            return {
                "exit_code": 127,
                "started_at": started,
                "ended_at": _now(),
                "stdout": "",
                "stderr": message,
            }
        _running[:] = [process]
        tails: dict[str, deque[bytes]] = {"stdout": deque(), "stderr": deque()}
        pumps = [
            threading.Thread(target=_pump, args=(getattr(process, name), outs[name], tails[name]))
            for name in ("stdout", "stderr")
        ]
        for pump in pumps:
            pump.start()
        code = process.wait()
        for pump in pumps:
            pump.join()
    return {
        "exit_code": code if code >= 0 else 128 - code,  # killed by signal n: 128 + n, as shells say
        "started_at": started,
        "ended_at": _now(),
        "stdout": _text(tails["stdout"]),
        "stderr": _text(tails["stderr"]),
    }


_running: list[subprocess.Popen[bytes]] = []


def _stop(signum: int, _frame: object) -> None:
    """Asked to stop (a cancel): the running step first, then this process."""
    for process in _running:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
    os._exit(128 + signum)


def main(plan_path: str) -> int:
    # The first process of its namespace: a signal without a handler would not reach it.
    signal.signal(signal.SIGTERM, _stop)
    plan = json.loads(Path(plan_path).read_text())
    report = open(plan["report"], "w")  # noqa: SIM115 - opened before chroot, used after it

    def write(data: dict[str, Any]) -> None:
        report.seek(0)
        report.truncate()
        report.write(json.dumps(data))
        report.flush()

    try:
        run_as = tuple(plan["run_as"]) if plan.get("run_as") else None
        if run_as is not None:  # the directories the steps write to become the steps' user's
            for path in [plan["tmp"], *(source for source, _ in plan["directories"])]:
                os.chown(path, run_as[0], run_as[1])
        root = build_root(plan)
        os.chroot(root)
        os.chdir("/")
        give_up_privileges(run_as)
    except (SetupError, OSError) as exc:
        write({"setup_error": str(exc), "steps": []})
        return 125
    done: list[dict[str, Any]] = []
    failed = 0
    for step in plan["steps"]:
        result = run_step(step, plan["env"])
        done.append(result)
        write({"steps": done})
        if result["exit_code"] != 0 and not step.get("ignore_error"):
            failed = result["exit_code"]
            break
    write({"steps": done})
    return failed


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
