"""1,000 concurrent executions on the Kubernetes backend, against the fake API server.

    python -m bench.kubernetes [--count 1000] [--rate 250] [--store postgresql|sqlite]

The service runs in its own process with `compute.backend: kubernetes`; this process hosts the
fake API server (tests/fake_kube) and plays kubelet: for every execution it creates the pod and
moves it through stage-in, worker and stage-out, `--rate` pod updates per second in all. Clients
long-poll every execution. Printed:
- the delay from each pod update to the new state being visible through the API, p50 and p99
  (target p99 <= 100 ms), against a baseline measured in the same run: a bare watch client on the
  same fake API server receiving the same updates;
- watch connections the service opened (target: 3 per namespace, whatever the count: Jobs, Pods
  and the Job controller's FailedCreate Events);
- the service's CPU time and peak memory, against the same service idle.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from bench.common import ADMIN_KEY, Databases, Service, free_port
from provider.backends.compute.kubernetes.backend import REFUSALS
from provider.backends.compute.kubernetes.manifests import SELECTOR, job_name

NS = "default"
FINAL = ("COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR", "CANCELED")
# (container, state, details, the execution state it leads to)
STEPS: list[tuple[str, str, dict[str, Any], str]] = [
    ("stage-in", "running", {}, "INITIALIZING"),
    ("worker", "running", {}, "RUNNING"),
    ("worker", "terminated", {"exit_code": 0}, "FINALIZING"),
    ("stage-out", "terminated", {"exit_code": 0}, "COMPLETE"),
]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def follow(
    session: aiohttp.ClientSession, url: str, execution: dict[str, Any], seen: dict[tuple[str, str], float]
) -> dict[str, Any]:
    """Long-poll one execution to its end, noting when each state became visible."""
    while execution["state"] not in FINAL:
        async with session.get(
            f"{url}/api/v1/executions/{execution['id']}",
            params={"wait": "60", "version": str(execution["version"])},
        ) as response:
            if response.status != 200:
                continue
            now = time.monotonic()
            execution = await response.json()
        for step in execution["history"]:
            seen.setdefault((execution["id"], step["state"]), now)
    return execution


async def bare_watch(url: str, received: dict[str, float], stop: asyncio.Event) -> None:
    """The baseline: a plain watch client on the same server, noting when each pod update arrives."""
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None)) as session,
        session.get(
            f"{url}/api/v1/namespaces/{NS}/pods",
            params={"watch": "true", "labelSelector": SELECTOR, "resourceVersion": "0"},
        ) as response,
    ):
        while not stop.is_set():
            line = await response.content.readline()
            if not line:
                return
            event = json.loads(line)
            version = event["object"]["metadata"].get("resourceVersion")
            if version:
                received[version] = time.monotonic()


class FakeProcess:
    """The fake API server in its own process (bench/fake_kube_process.py), driven over HTTP."""

    def __init__(self) -> None:
        self.control = f"http://127.0.0.1:{free_port()}"
        self.process = subprocess.Popen(  # noqa: S603
            [
                sys.executable,
                "-m",
                "bench.fake_kube_process",
                "--control-port",
                self.control.rsplit(":", 1)[1],
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        self.url = self.process.stdout.readline().strip()
        self.session: aiohttp.ClientSession | None = None

    async def hook(self, name: str, *args: Any, **kwargs: Any) -> tuple[Any, float]:
        if self.session is None:
            self.session = aiohttp.ClientSession()
        async with self.session.post(
            f"{self.control}/hook/{name}", json={"args": args, "kwargs": kwargs}
        ) as r:
            assert r.status == 200, await r.text()
            answer = await r.json()
        return answer["result"], float(answer["at"])

    async def info(self) -> dict[str, Any]:
        assert self.session is not None
        async with self.session.get(f"{self.control}/info") as response:
            return dict(await response.json())

    async def stop(self) -> None:
        if self.session is not None:
            await self.session.close()
        self.process.terminate()
        self.process.wait(10)


async def run(count: int, rate: float, store: str) -> None:
    fake = FakeProcess()
    scratch = Path(tempfile.mkdtemp(prefix="provider-bench-k8s-"))
    kubeconfig, _ = await fake.hook("write_kubeconfig", str(scratch / "kubeconfig"))
    databases = Databases()
    settings: dict[str, Any] = {
        "compute": {
            "backend": "kubernetes",
            "kubernetes": {"kubeconfig": kubeconfig, "lease_seconds": 5, "renew_seconds": 1},
        }
    }
    if store == "postgresql":
        settings["store"] = {"url": await databases.create()}
    service = Service(settings)
    try:
        await asyncio.sleep(2)  # leadership and the first list
        idle_rss = service.rss_kib()
        service.reset_peak()
        cpu_before = cpu_seconds(service.process.pid)
        headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
        async with aiohttp.ClientSession(
            headers=headers,
            connector=aiohttp.TCPConnector(limit=0),
            timeout=aiohttp.ClientTimeout(total=None),
        ) as session:
            url = service.url
            async with session.get(url + "/api/v1/me") as response:
                tenant = (await response.json())["tenant"]["id"]
            async with session.post(url + "/api/v1/workspaces", json={"tenant_id": tenant}) as response:
                workspace = (await response.json())["id"]
            async with session.put(
                f"{url}/api/v1/workspaces/{workspace}/objects/in.bin", data=b"x"
            ) as response:
                assert response.status == 201, await response.text()
            creating = asyncio.Semaphore(16)

            async def create() -> dict[str, Any]:
                body = {"asset_id": "dummy", "workspace_id": workspace, "inputs": {"source": "in.bin"}}
                async with creating, session.post(url + "/api/v1/executions", json=body) as response:
                    assert response.status == 201, await response.text()
                    return dict(await response.json())

            started = time.perf_counter()
            executions = await asyncio.gather(*(create() for _ in range(count)))
            created_in = time.perf_counter() - started
            seen: dict[tuple[str, str], float] = {}
            followers = [asyncio.create_task(follow(session, url, e, seen)) for e in executions]
            service_watches = {(k, n): v for k, n, v in (await fake.info())["open_watches"]}
            received: dict[str, float] = {}
            stop = asyncio.Event()
            baseline = asyncio.create_task(bare_watch(fake.url, received, stop))
            await asyncio.sleep(0.5)

            # Play kubelet: every pod update is timed; `made[(execution, state)] = (when, version)`.
            made: dict[tuple[str, str], tuple[float, str]] = {}
            pods = {}
            interval = 1 / rate
            for execution in executions:
                pod, _ = await fake.hook("create_job_pod", NS, job_name(execution["id"]))
                pods[execution["id"]] = pod["metadata"]["name"]
                await asyncio.sleep(interval)
            for container, state, details, execution_state in STEPS:
                for execution in executions:
                    pod = pods[execution["id"]]
                    if container == "worker" and state == "running":
                        await fake.hook("set_container_state", NS, pod, "stage-in", "terminated", exit_code=0)
                    if container == "stage-out":
                        await fake.hook("set_container_state", NS, pod, "stage-out", "running")
                    updated, at = await fake.hook("set_container_state", NS, pod, container, state, **details)
                    made[(execution["id"], execution_state)] = (
                        at,
                        str(updated["metadata"]["resourceVersion"]),
                    )
                    await asyncio.sleep(interval)
            results = await asyncio.gather(*followers)
            elapsed = time.perf_counter() - started
            stop.set()
            baseline.cancel()
            info = await fake.info()
            mine = [
                w
                for w in info["watch_requests"]
                if w.get("labelSelector") == SELECTOR or w.get("fieldSelector") == REFUSALS
            ]
            watch_requests = len(mine) - 1  # less the bare watch client's
            cpu = cpu_seconds(service.process.pid) - cpu_before
            peak = service.peak_kib()
    finally:
        service.stop()
        await fake.stop()
        await databases.drop_all()

    delays, bare = [], []
    for (execution_id, state), (when, version) in made.items():
        if (execution_id, state) in seen:
            delays.append(seen[(execution_id, state)] - when)
        if version in received:
            bare.append(received[version] - when)
    delays.sort()
    bare.sort()

    def pct(values: list[float], q: float) -> float:
        return values[min(len(values) - 1, int(len(values) * q))] * 1000

    states: dict[str, int] = {}
    for r in results:
        states[r["state"]] = states.get(r["state"], 0) + 1
    print(
        f"{count} executions on the kubernetes backend (fake API server), {store} store, "
        f"{rate:g} pod updates/s"
    )
    print(f"  created in {created_in:.1f} s; all done in {elapsed:.1f} s; final states {states}")
    print(
        f"  pod update -> state visible through the API: p50 {pct(delays, 0.5):.1f} ms, "
        f"p99 {pct(delays, 0.99):.1f} ms over {len(delays)} updates (target p99 <= 100 ms)"
    )
    print(
        f"  baseline, a bare watch client: p50 {pct(bare, 0.5):.1f} ms, p99 {pct(bare, 0.99):.1f} ms; "
        f"ratio p99 {pct(delays, 0.99) / max(pct(bare, 0.99), 0.001):.1f}x"
    )
    print(
        f"  the service's open watch connections with {count} executions: {service_watches} "
        f"(target 3 per namespace); watch requests in the run: {watch_requests}"
    )
    print(
        f"  service CPU {cpu:.1f} s ({cpu / count * 1000:.1f} ms per execution); "
        f"peak RSS {peak / 1024:.0f} MiB vs idle {idle_rss / 1024:.0f} MiB ({peak / idle_rss:.2f}x)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=250.0)
    parser.add_argument(
        "--store",
        choices=["postgresql", "sqlite"],
        default="postgresql",
        help="several replicas need PostgreSQL",
    )
    args = parser.parse_args()
    asyncio.run(run(args.count, args.rate, args.store))


if __name__ == "__main__":
    main()
