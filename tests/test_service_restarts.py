"""`provider serve` as a real process: killed with SIGKILL, started twice, restarted.

Job processes of the local backend die with the service, a restart kills any survivor its records
name (and nothing else) before it reports the executions Lost, and a second service on the same
data directory refuses to start instead of taking the first one's jobs for lost.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from provider.backends.compute.process_groups import GROUP_RECORD, record_group, start_time
from provider.client import ApiClient
from tests.conftest import ADMIN_KEY, REPO, free_port

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")

# A worker that starts a grandchild, so that the test sees a job's whole process group die.
SPAWNER = {
    "id": "spawner",
    "version": "1.0.0",
    "title": "spawner",
    "image": "python:3.12-slim",
    "outputs": [{"name": "result", "path": "result.txt"}],
    "max_run_seconds": 3600,
    "local": {
        "command": [
            "{python}",
            "-c",
            "import subprocess, sys, time; "
            "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(3600) # spawner-grandchild']);"
            "time.sleep(3600)  # spawner-worker",
        ]
    },
}


async def until(condition: Callable[[], Any], what: Callable[[], str], limit: float = 90) -> Any:
    """Wait for `condition` to hold (a loaded machine may be slow), failing with `what()`."""
    deadline = time.monotonic() + limit
    while not (result := condition()):
        assert time.monotonic() < deadline, f"timed out waiting for {what()}"
        await asyncio.sleep(0.1)
    return result


def live(pid: int, started: int | None) -> bool:
    """The process that had this pid and start time still exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    fields = stat.rsplit(")", 1)[1].split()
    return fields[0] not in ("Z", "X") and int(fields[19]) == started


def descendants(root: int) -> dict[int, str]:
    """pid -> command line of every process below `root`."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    found: dict[int, str] = {}
    for pid in parents:
        ancestor = parents.get(pid)
        while ancestor is not None and ancestor != root:
            ancestor = parents.get(ancestor)
        if ancestor == root:
            try:
                found[pid] = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
    return found


class Service:
    """`provider serve` in a subprocess with a configuration of its own in `home`."""

    def __init__(self, home: Path, data_dir: Path) -> None:
        self.home = home
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        assets = home / "assets"
        if not assets.exists():
            assets.mkdir(parents=True)
            shutil.copy(REPO / "config" / "assets" / "dummy.yaml", assets)
            (assets / "spawner.yaml").write_text(yaml.safe_dump(SPAWNER))
        self.config = home / f"provider-{self.port}.yaml"
        self.config.write_text(
            yaml.safe_dump(
                {
                    "data_dir": str(data_dir),
                    "server": {"port": self.port},
                    "auth": {"bootstrap_admin_key": ADMIN_KEY, "key_cache_seconds": 0},
                    "assets": {"directory": str(assets)},
                    "logging": {"level": "WARNING", "format": "text"},
                }
            )
        )
        self.output = home / f"service-{self.port}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> subprocess.Popen[bytes]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PROVIDER_")}
        with self.output.open("wb") as output:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "provider", "serve", "--config", str(self.config)],
                cwd=self.home,
                env=env,
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        return self.process

    def log(self) -> str:
        return self.output.read_text(errors="replace")

    async def ready(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + 90
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
            while True:
                assert self.process.poll() is None, self.log()
                try:
                    async with session.get(f"{self.url}/healthz") as response:
                        if response.status == 200:
                            return
                except (TimeoutError, OSError):
                    pass
                assert time.monotonic() < deadline, "the service did not start:\n" + self.log()
                await asyncio.sleep(0.2)

    def admin(self) -> ApiClient:
        return ApiClient(self.url, ADMIN_KEY, timeout=60)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=30)


@pytest.fixture
def services(tmp_path: Path) -> Iterator[Callable[[Path], Service]]:
    made: list[Service] = []

    def make(data_dir: Path) -> Service:
        made.append(Service(tmp_path, data_dir))
        return made[-1]

    yield make
    for service in made:
        if service.process is not None and service.process.poll() is None:
            service.process.send_signal(signal.SIGINT)
            try:
                service.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                service.kill()


@pytest.fixture
def strays() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Processes a test starts outside any service; killed at the end whatever happened."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.fixture
def jobs_seen() -> Iterator[dict[int, int | None]]:
    """pid -> start time of job processes a test saw; any still there at the end is killed."""
    seen: dict[int, int | None] = {}
    yield seen
    for pid, started in seen.items():
        if live(pid, started):
            os.kill(pid, signal.SIGKILL)


async def execution_in(api: ApiClient, workspace: str, asset: str) -> dict[str, Any]:
    body: dict[str, Any] = {"asset_id": asset, "workspace_id": workspace}
    if asset == "dummy":
        body |= {"inputs": {"source": "in.bin"}, "env": {"SLEEP_SECONDS": "3600"}}
    return dict(await api.json("POST", "/api/v1/executions", json=body))


def ended_lost(execution: dict[str, Any]) -> bool:
    """The execution, or its attempt before a retry, ended SYSTEM_ERROR with reason Lost."""
    ended = execution["attempts"][-1] if execution["state"] == "QUEUED" else execution
    return (ended["state"], ended["reason"]) == ("SYSTEM_ERROR", "Lost")


async def running(api: ApiClient, execution: dict[str, Any]) -> dict[str, Any]:
    current = execution
    deadline = time.monotonic() + 90
    while current["state"] != "RUNNING":
        assert current["state"] in ("QUEUED", "INITIALIZING"), current
        assert time.monotonic() < deadline, current
        changed = await api.json(
            "GET", f"/api/v1/executions/{current['id']}", params={"wait": "5", "version": current["version"]}
        )
        current = changed or current  # None: 304, nothing changed while waiting
    return current


def guard(pipe: int) -> list[str]:
    """A job process as the local backend starts it, watching `pipe` for the service's end."""
    return [
        sys.executable,
        "-m",
        "provider.backends.compute.local_guard",
        str(pipe),
        "--",
        sys.executable,
        "-c",
        "import time; time.sleep(3600)",
    ]


async def test_job_processes_die_with_a_killed_service_and_a_restart_kills_only_recorded_survivors(
    tmp_path: Path,
    services: Callable[[Path], Service],
    strays: list[subprocess.Popen[bytes]],
    jobs_seen: dict[int, int | None],
) -> None:
    data = tmp_path / "data"
    first = services(data)
    first.start()
    await first.ready()
    async with first.admin() as api:
        workspace = (await api.json("POST", "/api/v1/workspaces", json={"name": "crash"}))["id"]
        await api.json("PUT", f"/api/v1/workspaces/{workspace}/objects/in.bin", data=b"input")
        executions = [
            await running(api, await execution_in(api, workspace, asset)) for asset in ("dummy", "spawner")
        ]
    assert first.process is not None
    service_pid = first.process.pid

    def job_processes() -> dict[int, str] | None:
        found = descendants(service_pid)
        text = "\n".join(found.values())
        wanted = ("provider.workers.dummy", "spawner-worker", "spawner-grandchild")
        return found if all(marker in text for marker in wanted) else None

    jobs = await until(job_processes, lambda: "the job processes, the spawner's grandchild among them")
    started = {pid: start_time(pid) for pid in jobs}
    jobs_seen.update(started)

    first.kill()  # SIGKILL: the service can do nothing more
    await until(
        lambda: not any(live(pid, started[pid]) for pid in jobs),
        lambda: (
            "every job process to die with the service; alive: "
            + "; ".join(f"{pid} {command}" for pid, command in jobs.items() if live(pid, started[pid]))
        ),
    )

    # Records as processes that did not die would leave them. The survivor is a job process whose
    # guard was not told (the pipe it watches stays open). The recycled one is a job process too,
    # but its start time is not the record's: the recorded process is gone and its pid reused.
    # The impostor has the recorded pid and start time but is no job process (a forged record).
    holder_read, holder_write = os.pipe()
    try:
        survivor, recycled = (
            subprocess.Popen(guard(holder_read), pass_fds=[holder_read], start_new_session=True)  # noqa: ASYNC220
            for _ in range(2)
        )
        impostor = subprocess.Popen(  # noqa: ASYNC220
            [sys.executable, "-c", "import time; time.sleep(3600)"], start_new_session=True
        )
    finally:
        os.close(holder_read)
    strays.extend([survivor, recycled, impostor])
    record_group(data / "executions" / executions[0]["id"] / GROUP_RECORD, survivor.pid)
    for name, process in (("left-over-1", recycled), ("left-over-2", impostor)):
        record = data / "executions" / name / GROUP_RECORD
        record.parent.mkdir()
        record_group(record, process.pid)
    forged = json.loads((data / "executions" / "left-over-1" / GROUP_RECORD).read_text())
    forged["start_time"] -= 1
    (data / "executions" / "left-over-1" / GROUP_RECORD).write_text(json.dumps(forged))

    again = services(data)
    again.start()
    try:
        await again.ready()
        async with again.admin() as api:
            for execution in executions:
                lost = await api.json("GET", f"/api/v1/executions/{execution['id']}")
                assert ended_lost(lost), lost
                # Reported only once the survivor was gone: the restart killed it first.
                assert survivor.poll() == -signal.SIGKILL
        assert recycled.poll() is None, "a process whose pid was recorded for another was killed"
        assert impostor.poll() is None, "a process that is no job process was killed"
    finally:
        os.close(holder_write)


async def test_a_second_service_on_the_same_data_refuses_to_start_and_names_the_first(
    tmp_path: Path, services: Callable[[Path], Service]
) -> None:
    data = tmp_path / "data"
    first = services(data)
    first.start()
    await first.ready()
    async with first.admin() as api:
        workspace = (await api.json("POST", "/api/v1/workspaces", json={}))["id"]
        await api.json("PUT", f"/api/v1/workspaces/{workspace}/objects/in.bin", data=b"input")
        execution = await running(api, await execution_in(api, workspace, "dummy"))

        second = services(data)
        process = second.start()
        assert await asyncio.to_thread(process.wait, 90) != 0
        message = second.log()
        assert first.process is not None
        assert f"process {first.process.pid}" in message, message
        assert "Traceback" not in message, message

        # The first one's execution is untouched: still running, its directory still there.
        current = await api.json("GET", f"/api/v1/executions/{execution['id']}")
        assert current["state"] == "RUNNING", current
        assert (data / "executions" / execution["id"] / "worker.log").is_file()
