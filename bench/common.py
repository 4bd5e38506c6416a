"""Helpers for the benchmarks: a service in a subprocess, its memory as the kernel sees it, the
test radosgw, and percentiles."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
ADMIN_KEY = "bench-admin-key-" + "b" * 32
# The test radosgw's admin credentials (tests/services/radosgw.sh).
S3_ACCESS, S3_SECRET = "RGWADMINKEY0000000001", "rgwadminsecret000000000000000000000000001"


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * share))]


def with_s3(endpoint: str | None, port: int, work: Callable[[str], None]) -> None:
    """`work(endpoint)` against `endpoint`, or against a radosgw started on `port` for it."""
    script = REPO / "tests" / "services" / "radosgw.sh"
    if endpoint is not None:
        work(endpoint)
        return
    subprocess.run(["bash", str(script), "start", str(port)], check=True)  # noqa: S603, S607
    try:
        work(f"http://127.0.0.1:{port}")
    finally:
        subprocess.run(["bash", str(script), "stop", str(port)], check=False)  # noqa: S603, S607


def s3_storage(endpoint: str, bucket_prefix: str, **options: Any) -> dict[str, Any]:
    """The `storage` settings of a service on the test radosgw with its admin credentials."""
    return {
        "backend": "s3",
        "s3": {
            "endpoint_url": endpoint,
            "access_key_id": S3_ACCESS,
            "secret_access_key": S3_SECRET,
            "bucket_prefix": bucket_prefix,
            **options,
        },
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def memory_kib(pid: int, field: str) -> int:
    """VmRSS (now) or VmHWM (peak) of a process, in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


class Service:
    """`provider serve` in its own process, so that its memory is measured alone."""

    def __init__(self, settings: dict[str, Any], core: int | None = None) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="provider-bench-"))
        self.port = free_port()
        config = {
            "data_dir": str(self.dir / "data"),
            "auth": {"bootstrap_admin_key": ADMIN_KEY},
            "assets": {"directory": str(REPO / "config" / "assets")},
            "logging": {"level": "WARNING"},  # a bench that measures logging sets its own level
            **settings,
            "server": {"port": self.port, **settings.get("server", {})},  # merged, not replaced
        }
        (self.dir / "config.yaml").write_text(json.dumps(config))
        self.url = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("PROVIDER_")}
        pin = ["taskset", "-c", str(core)] if core is not None else []  # one core of its own
        self.process = subprocess.Popen(  # noqa: S603
            [*pin, sys.executable, "-m", "provider", "serve", "--config", str(self.dir / "config.yaml")],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=open(self.dir / "service.log", "w"),  # noqa: SIM115
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(self.url + "/readyz", timeout=1):  # noqa: S310
                    break
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError((self.dir / "service.log").read_text()) from None
                time.sleep(0.2)

    def rss_kib(self) -> int:
        return memory_kib(self.process.pid, "VmRSS")

    def reset_peak(self) -> None:
        """Start a new peak measurement (Linux: writing 5 to clear_refs resets VmHWM)."""
        Path(f"/proc/{self.process.pid}/clear_refs").write_text("5")

    def peak_kib(self) -> int:
        return memory_kib(self.process.pid, "VmHWM")

    def stop(self) -> None:
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()


POSTGRES_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"


class Databases:
    """Fresh PostgreSQL databases (127.0.0.1:5432, as in the tests) for one run, dropped after it."""

    def __init__(self) -> None:
        self.names: list[str] = []

    async def create(self) -> str:
        import uuid

        import asyncpg

        name = f"provider_bench_{uuid.uuid4().hex[:8]}"
        admin = await asyncpg.connect(POSTGRES_ADMIN)
        try:
            await admin.execute(f'CREATE DATABASE "{name}"')
        finally:
            await admin.close()
        self.names.append(name)
        return f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"

    async def drop_all(self) -> None:
        import asyncpg

        admin = await asyncpg.connect(POSTGRES_ADMIN)
        try:
            for name in self.names:
                await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()
