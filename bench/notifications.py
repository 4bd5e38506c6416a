"""Webhook notifications on SQLite: 1,000 executions, each with a callback, change state while a
local aiohttp receiver (its own process) acknowledges.

  latency     p50/p99 from a state change to its delivery, state changes paced at --rate
              (target p99 <= 100 ms); baseline: a bare aiohttp client POSTing the same bodies to
              the same receiver at the same pace, latency from send to receipt
  throughput  deliveries per second draining a backlog of every execution's events (target
              >= 1,000/s); baseline: the bare client POSTing the same bodies at the same concurrency
  outage      the receiver down for --down-seconds while executions change state, then back:
              every event delivered, none lost, order kept per subscription

    python -m bench.notifications [--executions 1000] [--rate 500] [--down-seconds 60]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import defaultdict
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from bench.common import ADMIN_KEY, REPO, Databases, free_port
from provider.app import create_app
from provider.config import Settings
from provider.domain.executions import State
from provider.services.ports import ComputeEvent, EventSink, JobSpec, Reconciler

STEPS = [State.INITIALIZING, State.RUNNING, State.FINALIZING, State.COMPLETE]


# --- the receiver (its own process) -------------------------------------------------------------


def serve_receiver(port: int) -> None:
    records: list[list[Any]] = []

    async def hook(request: web.Request) -> web.Response:
        body = await request.read()
        now = time.time()
        event = json.loads(body)
        data = event.get("data", {})
        records.append(
            [
                request.headers.get("webhook-id", ""),
                request.path,
                event.get("type"),
                data.get("id"),
                data.get("version"),
                event.get("occurred_at") or event.get("sent_at"),
                now,
            ]
        )
        return web.Response(status=204)

    async def dump(request: web.Request) -> web.Response:
        return web.json_response(records)

    async def count(request: web.Request) -> web.Response:
        return web.json_response(len({r[0] for r in records}))

    async def reset(request: web.Request) -> web.Response:
        records.clear()
        return web.Response(status=204)

    app = web.Application()
    app.router.add_get("/records", dump)
    app.router.add_get("/count", count)
    app.router.add_post("/reset", reset)
    app.router.add_post("/{tail:.*}", hook)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


class Receiver:
    def __init__(self) -> None:
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(  # noqa: S603
            [sys.executable, "-m", "bench.notifications", "--serve-receiver", str(self.port)], cwd=REPO
        )
        for _ in range(200):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}/records", timeout=1)
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("the receiver did not start")

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def records(self, session: aiohttp.ClientSession) -> list[list[Any]]:
        async with session.get(self.url("/records")) as response:
            found: list[list[Any]] = await response.json()
            return found

    async def count(self, session: aiohttp.ClientSession) -> int:
        """Distinct deliveries received: cheap to ask while the service is being measured."""
        async with session.get(self.url("/count")) as response:
            found: int = await response.json()
            return found

    async def reset(self, session: aiohttp.ClientSession) -> None:
        async with session.post(self.url("/reset")):
            pass


# --- the service, in this process, with a compute backend the benchmark drives -----------------


class DrivenCompute:
    name = "driven"

    def __init__(self) -> None:
        self.sink: EventSink | None = None
        self.jobs: set[str] = set()

    async def start(self, sink: EventSink, reconcile: Reconciler) -> None:
        self.sink = sink

    async def submit(self, job: JobSpec) -> None:
        self.jobs.add(job.execution_id)

    async def cancel(self, execution_id: str) -> None:
        return None

    async def logs(self, execution_id: str, tail: int | None, follow: bool) -> AsyncIterator[bytes]:
        return
        yield b""

    async def known(self) -> set[str]:
        return set(self.jobs)

    async def release(self, execution_id: str) -> None:
        self.jobs.discard(execution_id)

    async def stop(self) -> None:
        return None

    async def emit(self, execution_id: str, state: State) -> None:
        assert self.sink is not None
        await self.sink(ComputeEvent(execution_id, state, exit_code=0 if state is State.COMPLETE else None))


# With --store postgresql: the database of each phase (by its directory's name).
DATABASES: dict[str, str] = {}


class Service:
    def __init__(self, data_dir: Path, deliver: bool = True) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        store = {"url": DATABASES[data_dir.name]} if data_dir.name in DATABASES else {}
        self.settings = Settings(
            data_dir=data_dir,
            store=store,
            server={"port": self.port},
            auth={"bootstrap_admin_key": ADMIN_KEY},
            assets={"directory": REPO / "config" / "assets"},
            logging={"level": "WARNING"},
            notifications={
                "deliver": deliver,
                "allow_http": True,
                "allowed_networks": ["127.0.0.1/32"],
                "backoff_seconds": 0.5,
                "max_backoff_seconds": 4,
                "max_attempts": 1000,
                "poll_seconds": 0.25,
            },
        )
        self.compute = DrivenCompute()
        self.runner: web.AppRunner | None = None

    async def start(self) -> None:
        self.runner = web.AppRunner(create_app(self.settings, compute=self.compute), access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


async def create_executions(service: Service, receiver: Receiver, count: int, prefix: str) -> list[str]:
    """`count` executions, each with a callback to its own receiver path (one subscription each)."""
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
    async with aiohttp.ClientSession(service.url, headers=headers) as session:
        async with session.post("/api/v1/workspaces", json={"name": "bench"}) as response:
            workspace = (await response.json())["id"]
        async with session.put(f"/api/v1/workspaces/{workspace}/objects/in", data=b"x"):
            pass
        slots = asyncio.Semaphore(16)

        async def one(i: int) -> str:
            body = {
                "asset_id": "dummy",
                "workspace_id": workspace,
                "inputs": {"source": "in"},
                "callback": {"url": receiver.url(f"/{prefix}/{i}")},
            }
            async with slots, session.post("/api/v1/executions", json=body) as response:
                assert response.status == 201, await response.text()
                return str((await response.json())["id"])

        return list(await asyncio.gather(*(one(i) for i in range(count))))


async def paced(changes: list[tuple[str, State]], rate: float, compute: DrivenCompute) -> None:
    started = time.monotonic()
    for n, (execution_id, state) in enumerate(changes):
        delay = started + n / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        await compute.emit(execution_id, state)


async def wait_for(
    receiver: Receiver, session: aiohttp.ClientSession, count: int, seconds: float
) -> list[Any]:
    deadline = time.monotonic() + seconds
    while True:
        if await receiver.count(session) >= count or time.monotonic() > deadline:
            return await receiver.records(session)
        await asyncio.sleep(0.1)


def seconds_since(occurred_at: str, received: float) -> float:
    return received - datetime.fromisoformat(occurred_at.replace("Z", "+00:00")).timestamp()


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


# --- baselines ----------------------------------------------------------------------------------


async def baseline_latency(receiver: Receiver, bodies: list[bytes], rate: float) -> list[float]:
    """A bare aiohttp client POSTing the bodies at `rate`, one task each: send to receipt."""
    async with aiohttp.ClientSession() as session:
        await receiver.reset(session)
        sent: dict[str, float] = {}
        tasks = []
        started = time.monotonic()

        async def post(i: int, body: bytes) -> None:
            sent[f"b{i}"] = time.time()
            async with session.post(receiver.url("/baseline"), data=body, headers={"webhook-id": f"b{i}"}):
                pass

        for i, body in enumerate(bodies):
            delay = started + i / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(post(i, body)))
        await asyncio.gather(*tasks)
        records = await receiver.records(session)
        await receiver.reset(session)
    return [r[6] - sent[r[0]] for r in records]


async def baseline_throughput(receiver: Receiver, bodies: list[bytes], concurrency: int) -> float:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:
        queue = list(enumerate(bodies))
        started = time.monotonic()

        async def client() -> None:
            while queue:
                i, body = queue.pop()
                async with session.post(receiver.url(f"/bare/{i % 1000}"), data=body) as response:
                    await response.read()

        await asyncio.gather(*(client() for _ in range(concurrency)))
        rate = len(bodies) / (time.monotonic() - started)
        await receiver.reset(session)
    return rate


# --- phases -------------------------------------------------------------------------------------


def expected(count: int) -> int:
    return count * (2 + len(STEPS))  # QUEUED, four state changes, and execution.completed


async def latency_phase(
    args: argparse.Namespace, receiver: Receiver, root: Path
) -> tuple[list[float], list[bytes]]:
    service = Service(root / "latency")
    await service.start()
    try:
        ids = await create_executions(service, receiver, args.executions, "lat")
        async with aiohttp.ClientSession() as session:
            await wait_for(receiver, session, len(ids), 60)
            await receiver.reset(session)
            changes = [(execution_id, state) for state in STEPS for execution_id in ids]
            await paced(changes, args.rate, service.compute)
            records = await wait_for(receiver, session, len(ids) * (len(STEPS) + 1), 120)
            await receiver.reset(session)
        latencies = [seconds_since(r[5], r[6]) for r in records]
        bodies = [
            json.dumps({"data": {"id": r[3], "version": r[4]}, "pad": "x" * 1400}).encode() for r in records
        ]
        return latencies, bodies
    finally:
        await service.stop()


async def throughput_phase(args: argparse.Namespace, receiver: Receiver, root: Path) -> tuple[int, float]:
    """A backlog recorded by a replica that does not deliver, then drained by one that does."""
    producer = Service(root / "throughput", deliver=False)
    await producer.start()
    try:
        ids = await create_executions(producer, receiver, args.executions, "thr")
        for state in STEPS:
            await asyncio.gather(*(producer.compute.emit(i, state) for i in ids))
    finally:
        await producer.stop()
    consumer = Service(root / "throughput")
    started = time.time()
    await consumer.start()
    try:
        async with aiohttp.ClientSession() as session:
            records = await wait_for(receiver, session, expected(len(ids)), 300)
            await receiver.reset(session)
        unique = len({r[0] for r in records})
        return unique, unique / (max(r[6] for r in records) - started)
    finally:
        await consumer.stop()


async def outage_phase(args: argparse.Namespace, receiver: Receiver, root: Path) -> dict[str, Any]:
    service = Service(root / "outage")
    await service.start()
    try:
        count = min(args.executions, 200)
        ids = await create_executions(service, receiver, count, "out")
        async with aiohttp.ClientSession() as session:
            await wait_for(receiver, session, count, 60)
        receiver.stop()
        down_at = time.monotonic()
        changes = [(execution_id, state) for state in STEPS for execution_id in ids]
        await paced(changes, len(changes) / max(1.0, args.down_seconds * 0.8), service.compute)
        await asyncio.sleep(max(0.0, args.down_seconds - (time.monotonic() - down_at)))
        receiver.start()
        back_at = time.monotonic()
        async with aiohttp.ClientSession() as session:
            records = await wait_for(receiver, session, count * (len(STEPS) + 1), args.down_seconds + 300)
            drained = time.monotonic() - back_at
            await receiver.reset(session)
        versions: dict[str, list[int]] = defaultdict(list)
        seen: set[str] = set()
        for r in records:  # in the order received; a repeated delivery counts where it came first
            if r[0] not in seen:
                seen.add(r[0])
                versions[r[1]].append(r[4])
        in_order = all(items == sorted(items) for items in versions.values())
        unique = len({r[0] for r in records})
        return {
            "expected": count * (len(STEPS) + 1),
            "delivered": unique,
            "duplicates": len(records) - unique,
            "in_order": in_order,
            "drain_seconds": drained,
        }
    finally:
        await service.stop()


async def run(args: argparse.Namespace) -> None:
    root = Path(tempfile.mkdtemp(prefix="provider-bench-notifications-"))
    receiver = Receiver()
    receiver.start()
    databases = Databases()
    if args.store == "postgresql":
        for phase in ("latency", "throughput", "outage"):
            DATABASES[phase] = await databases.create()
    try:
        latencies, bodies = await latency_phase(args, receiver, root)
        base_latencies = await baseline_latency(receiver, bodies, args.rate)
        delivered, rate = await throughput_phase(args, receiver, root)
        base_rate = await baseline_throughput(receiver, bodies[: expected(args.executions)], args.concurrency)
        outage = await outage_phase(args, receiver, root)
    finally:
        receiver.stop()
        await databases.drop_all()
    p50, p99 = percentile(latencies, 50) * 1000, percentile(latencies, 99) * 1000
    b50, b99 = percentile(base_latencies, 50) * 1000, percentile(base_latencies, 99) * 1000
    print(f"webhook notifications, {args.store} store, {args.executions} executions with a callback each")
    print(
        f"  latency at {args.rate:g} state changes/s ({len(latencies)} deliveries, state change -> receipt)"
    )
    print(
        f"    service p50 {p50:6.1f} ms  p99 {p99:6.1f} ms  mean {statistics.mean(latencies) * 1000:6.1f} ms"
        " (target p99 <= 100 ms)"
    )
    print(
        f"    bare    p50 {b50:6.1f} ms  p99 {b99:6.1f} ms   ratio p50 {p50 / b50:.1f}  p99 {p99 / b99:.1f}"
    )
    print(f"  throughput draining a backlog of {delivered} deliveries")
    print(
        f"    service {rate:7.0f} deliveries/s (target >= 1000)   bare {base_rate:7.0f} POST/s"
        f"   ratio {rate / base_rate:.2f}"
    )
    print(f"  receiver down {args.down_seconds:g} s while {outage['expected']} events happened, then back")
    print(
        f"    delivered {outage['delivered']}/{outage['expected']}, "
        f"lost {outage['expected'] - outage['delivered']}, "
        f"repeated {outage['duplicates']}, order kept per subscription: {outage['in_order']}, "
        f"drained {outage['drain_seconds']:.1f} s after the receiver came back"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--executions", type=int, default=1000)
    parser.add_argument(
        "--rate", type=float, default=500, help="state changes per second in the latency phase"
    )
    parser.add_argument("--concurrency", type=int, default=128, help="the bare client's connections")
    parser.add_argument("--down-seconds", type=float, default=60, help="how long the receiver is down")
    parser.add_argument("--store", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--serve-receiver", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_receiver:
        serve_receiver(args.serve_receiver)
        return
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
