"""1,000 executions of a trivial asset on the local backend with a concurrency limit of 32.

    python -m bench.executions_local [--count 1000] [--concurrency 32]

Prints the total wall time against a baseline measured in the same run (the same worker command
as many times at the same concurrency by a minimal asyncio runner that copies the output out;
target <= 2x its wall time); the service's overhead per execution beyond the worker process's
own run time; and the delay from each state change (its time in the execution's history) to a
long-polling client seeing it: p50 and p99 (target p99 <= 100 ms).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp

from bench.common import ADMIN_KEY, Service

WORKER = "open('{result_dir}/out.txt', 'w').write('x')"


def worker_seconds(runs: int = 20) -> float:
    """The worker process's own run time, without the service around it."""
    with tempfile.TemporaryDirectory() as scratch:
        started = time.perf_counter()
        for _ in range(runs):
            subprocess.run([sys.executable, "-c", WORKER.replace("{result_dir}", scratch)], check=True)  # noqa: S603
        return (time.perf_counter() - started) / runs


async def minimal_runner(count: int, concurrency: int) -> float:
    """The baseline: the same worker command `count` times at the same concurrency, by a minimal
    asyncio runner that copies the output out of each result directory into a shared one (what
    stage-out does, with its checksum); its wall time in seconds."""
    slots = asyncio.Semaphore(concurrency)
    with tempfile.TemporaryDirectory() as scratch:
        kept = Path(scratch) / "workspace"
        kept.mkdir()

        async def one(number: int) -> None:
            async with slots:
                results = Path(scratch) / f"job-{number}"
                results.mkdir()
                process = await asyncio.create_subprocess_exec(
                    sys.executable, "-c", WORKER.replace("{result_dir}", str(results))
                )
                assert await process.wait() == 0
                data = (results / "out.txt").read_bytes()
                hashlib.sha256(data).hexdigest()
                (kept / f"{number}.txt").write_bytes(data)
                shutil.rmtree(results)

        started = time.perf_counter()
        await asyncio.gather(*(one(n) for n in range(count)))
        return time.perf_counter() - started


async def follow(
    session: aiohttp.ClientSession, url: str, execution: dict[str, Any], delays: list[float]
) -> dict[str, Any]:
    """Long-poll one execution to its end, recording how late each change became visible."""
    while execution["state"] not in ("COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR", "CANCELED"):
        async with session.get(
            f"{url}/api/v1/executions/{execution['id']}",
            params={"wait": "30", "version": str(execution["version"])},
        ) as response:
            if response.status != 200:
                continue
            seen = time.time()
            execution = await response.json()
        changed = datetime.fromisoformat(execution["history"][-1]["at"].replace("Z", "+00:00")).timestamp()
        delays.append(seen - changed)
    return execution


async def run(count: int, concurrency: int) -> None:
    service = Service({"compute": {"local": {"max_concurrent": concurrency}}})
    try:
        headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(
            headers=headers, connector=connector, timeout=aiohttp.ClientTimeout(total=None)
        ) as session:
            url = service.url
            spec = {
                "title": "trivial",
                "image": "python:3.12-slim",
                "outputs": [{"name": "out", "path": "out.txt"}],
                "local": {"command": ["{python}", "-c", WORKER]},
            }
            async with session.put(f"{url}/api/v1/assets/trivial/versions/1.0.0", json=spec) as response:
                assert response.status in (200, 201), await response.text()
            async with session.get(url + "/api/v1/me") as response:
                tenant = (await response.json())["tenant"]["id"]
            async with session.post(url + "/api/v1/workspaces", json={"tenant_id": tenant}) as response:
                workspace = (await response.json())["id"]
            delays: list[float] = []
            creating = asyncio.Semaphore(16)

            async def one() -> dict[str, Any]:
                async with (
                    creating,
                    session.post(
                        url + "/api/v1/executions", json={"asset_id": "trivial", "workspace_id": workspace}
                    ) as response,
                ):
                    execution = await response.json()
                return await follow(session, url, execution, delays)

            started = time.perf_counter()
            results = await asyncio.gather(*(one() for _ in range(count)))
            wall = time.perf_counter() - started
    finally:
        service.stop()
    states = {r["state"] for r in results}
    lifetimes = []
    for r in results:
        times = {h["state"]: datetime.fromisoformat(h["at"].replace("Z", "+00:00")) for h in r["history"]}
        lifetimes.append((times["COMPLETE"] - times["INITIALIZING"]).total_seconds())
    alone = worker_seconds()
    baseline = await minimal_runner(count, concurrency)
    delays.sort()
    p50, p99 = delays[len(delays) // 2], delays[int(len(delays) * 0.99)]
    print(f"{count} executions of a trivial local asset, concurrency limit {concurrency}")
    print(f"  final states: {sorted(states)}")
    print(f"  total wall time {wall:.1f} s ({count / wall:.1f} executions/s)")
    print(
        f"  baseline, a minimal asyncio runner doing the same at the same concurrency: {baseline:.1f} s; "
        f"ratio {wall / baseline:.1f}x (target <= 2x)"
    )
    print(f"  the worker process alone: {alone * 1000:.0f} ms")
    print(
        f"  INITIALIZING -> COMPLETE per execution: p50 {statistics.median(lifetimes) * 1000:.0f} ms; "
        f"overhead beyond the worker p50 {(statistics.median(lifetimes) - alone) * 1000:.0f} ms "
        "(two sidecar processes, staging and uploads, bookkeeping; contended by 31 neighbours)"
    )
    print(
        f"  state change -> visible to a long-polling client: p50 {p50 * 1000:.1f} ms, "
        f"p99 {p99 * 1000:.1f} ms over {len(delays)} changes (target p99 <= 100 ms)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    asyncio.run(run(args.count, args.concurrency))


if __name__ == "__main__":
    main()
