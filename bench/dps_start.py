"""100 concurrent Data Plane Signaling `start` requests on the S3 backend (radosgw), against the
same number of bare workspace creations through the API in the same run: p50 and p99 to the
answer, and their ratio. A `start` makes a workspace too (tenant, bucket, row) and then a flow
and a token, so the baseline is the part of the work every compute offering needs anyway.

    python -m bench.dps_start [--count 100] [--s3-endpoint URL] [--store sqlite|postgresql]

On SQLite (one writer at a time) a start's three write transactions (the workspace, the flow, its
token) queue behind each other where a bare creation has one; PostgreSQL runs them side by side.

The client's own CPU time is printed beside the wall time: the load generator is mostly idle,
waiting for the service, so it is not what is measured.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid
from collections.abc import Awaitable, Callable

import aiohttp

from bench.common import (
    ADMIN_KEY,
    REPO,
    Databases,
    Service,
    percentile,
    s3_storage,
    with_s3,
)

CONTROL_PLANE_SECRET = "bench-control-plane-" + "5e2a9c4b7d1f3a6e8c0b"


async def timed(count: int, request: Callable[[], Awaitable[None]]) -> tuple[list[float], float, float]:
    """Latencies (ms) of `count` concurrent requests, the wall time and the client's CPU time (s)."""
    latencies: list[float] = []

    async def one() -> None:
        sent = time.perf_counter()
        await request()
        latencies.append((time.perf_counter() - sent) * 1000)

    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(one() for _ in range(count)))
    return latencies, time.perf_counter() - wall, time.process_time() - cpu


async def run(count: int, endpoint: str, store: str) -> None:
    databases = Databases()
    store_url = await databases.create() if store == "postgresql" else None
    service = Service(
        {
            **({"store": {"url": store_url}} if store_url else {}),
            "server": {"public_url": "https://provider.bench"},
            "storage": s3_storage(endpoint, "bench-dps-"),
            "signaling": {"control_planes": {"bench": {"secret": CONTROL_PLANE_SECRET}}},
        }
    )
    start_message = json.loads((REPO / "contracts" / "dps" / "examples" / "start.json").read_text())
    try:
        async with aiohttp.ClientSession() as session:
            admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
            async with session.get(f"{service.url}/api/v1/me", headers=admin) as r:
                operator = (await r.json())["tenant"]["id"]

            async def create_workspace() -> None:
                body = {"tenant_id": operator, "name": "bench"}
                async with session.post(f"{service.url}/api/v1/workspaces", json=body, headers=admin) as r:
                    assert r.status == 201, await r.text()

            async def start() -> None:
                body = {**start_message, "processId": str(uuid.uuid4())}
                headers = {"Authorization": f"Bearer {CONTROL_PLANE_SECRET}"}
                async with session.post(
                    f"{service.url}/signaling/v1/dataflows/start", json=body, headers=headers
                ) as r:
                    assert r.status == 200, await r.text()

            await timed(5, create_workspace)  # warm both paths: connections, caches
            await timed(5, start)
            bare, bare_wall, bare_cpu = await timed(count, create_workspace)
            flows, flow_wall, flow_cpu = await timed(count, start)
    finally:
        service.stop()
        await databases.drop_all()
    print(f"{count} concurrent requests each, S3 backend (radosgw), {store} store")
    for label, values, wall, cpu in (
        ("workspace creation (baseline)", bare, bare_wall, bare_cpu),
        ("DPS start", flows, flow_wall, flow_cpu),
    ):
        p50, p99 = percentile(values, 0.5), percentile(values, 0.99)
        print(
            f"  {label:<30} p50 {p50:7.0f} ms   p99 {p99:7.0f} ms   "
            f"all in {wall:5.2f} s, client CPU {cpu:4.2f} s"
        )
    print(f"  start p99 / baseline p99: {percentile(flows, 0.99) / percentile(bare, 0.99):.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--s3-endpoint")
    parser.add_argument("--store", choices=["sqlite", "postgresql"], default="sqlite")
    args = parser.parse_args()
    with_s3(args.s3_endpoint, 7497, lambda endpoint: asyncio.run(run(args.count, endpoint, args.store)))


if __name__ == "__main__":
    main()
