"""HTTP load with Debian's wrk, pinned to its own core, and what it cost: requests per second,
latency percentiles, and the CPU share of the generator and of the server it loaded (so that each
run shows which of the two was the bottleneck)."""

from __future__ import annotations

import os
import re
import resource
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from bench.common import REPO

TICKS = os.sysconf("SC_CLK_TCK")


def ensure_tools() -> None:
    if shutil.which("wrk") is None or shutil.which("taskset") is None:
        subprocess.run(["bash", str(REPO / "bench" / "tools.sh")], check=True)  # noqa: S603, S607


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process (all its threads) so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


@dataclass(frozen=True)
class Load:
    rate: float  # requests per second
    p50_ms: float
    p99_ms: float
    errors: int  # non-2xx answers and socket errors
    generator_cpu: float  # share of one core the load generator used
    server_cpu: float  # share of one core the server used
    problems: str = ""  # wrk's lines about them


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _ms(text: str) -> float:
    number, unit = re.fullmatch(r"([0-9.]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]
    return float(number) * _UNITS[unit]


def wrk(
    url: str,
    server_pid: int,
    seconds: float,
    connections: int,
    core: int,
    headers: dict[str, str] | None = None,
) -> Load:
    """`wrk -t1 -c<connections>` on `core` for `seconds` against `url`."""
    command = ["taskset", "-c", str(core), "wrk", "-t1", f"-c{connections}", f"-d{round(seconds)}s"]
    command.append("--latency")
    for name, value in (headers or {}).items():
        command += ["-H", f"{name}: {value}"]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    server_before, started = cpu_seconds(server_pid), time.monotonic()
    out = subprocess.run([*command, url], check=True, capture_output=True, text=True).stdout  # noqa: S603
    wall = time.monotonic() - started
    server = (cpu_seconds(server_pid) - server_before) / wall
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    generator = (after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime) / wall
    rate = float(re.search(r"Requests/sec:\s+([0-9.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"\s50%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"\s99%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    errors = sum(int(n) for n in re.findall(r"Non-2xx or 3xx responses:\s+(\d+)", out))
    socket = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if socket:
        errors += sum(int(n) for n in socket.groups())
    said = "; ".join(
        line.strip() for line in out.splitlines() if "Non-2xx" in line or "Socket errors" in line
    )
    return Load(rate, p50, p99, errors, generator, server, said)


def pinned(core: int, command: list[str]) -> list[str]:
    return ["taskset", "-c", str(core), *command]
