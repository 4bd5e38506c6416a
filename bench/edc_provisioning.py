"""100 concurrent EDC provision requests against the S3 backend (radosgw): every callback must
arrive; p50 and p99 from the request to its webhook answer and to the connector's callback.
In the same run, before it: 100 concurrent bare workspace creations through the API to warm
radosgw up (a fresh one makes its first buckets several times slower than the rest), then 100
more as the baseline: the part of the work every provision does (a bucket, its user and role, a
row).

    python -m bench.edc_provisioning [--count 100] [--s3-endpoint URL] [--busy 1] [--store postgresql]

`--busy N` makes the connector answer 409 to the first N callbacks of each transfer, as a real
connector does while it holds the process lease.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid

import aiohttp
from aiohttp import web

from bench.common import (
    ADMIN_KEY,
    REPO,
    Databases,
    Service,
    percentile,
    s3_storage,
    with_s3,
)

WEBHOOK_SECRET = "bench-connector-secret-" + "x" * 20


async def run(count: int, endpoint: str, busy: int, store: str = "sqlite") -> None:
    databases = Databases()
    store_url = await databases.create() if store == "postgresql" else None
    received: dict[str, float] = {}
    calls: dict[str, int] = {}
    done = asyncio.Event()

    async def callback(request: web.Request) -> web.Response:
        process = request.match_info["process"]
        calls[process] = calls.get(process, 0) + 1
        if calls[process] <= busy:
            return web.Response(status=409)
        received.setdefault(process, time.perf_counter())
        if len(received) >= count:
            done.set()
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/callback/{process}/provision", callback)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    service = Service(
        {
            **({"store": {"url": store_url}} if store_url else {}),
            "storage": s3_storage(endpoint, "bench-edc-"),
            "edc": {
                "connectors": {"main": {"secret": WEBHOOK_SECRET, "callback_networks": ["127.0.0.1/32"]}},
                "callback_backoff_seconds": 0.1,
            },
        }
    )
    try:
        body = json.loads((REPO / "contracts" / "edc" / "provision-request.example.json").read_text())
        body["callbackAddress"] = f"http://127.0.0.1:{port}/callback"
        body["assetId"] = "compute-offering-dummy"  # the offering config/assets/dummy.yaml names
        sent: dict[str, float] = {}
        answered: dict[str, float] = {}
        created: list[float] = []
        warm_up: list[float] = []
        async with aiohttp.ClientSession() as session:
            admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
            async with session.get(f"{service.url}/api/v1/me", headers=admin) as r:
                operator = (await r.json())["tenant"]["id"]

            async def create_workspace() -> None:
                begun = time.perf_counter()
                workspace = {"tenant_id": operator, "name": "bench"}
                async with session.post(
                    f"{service.url}/api/v1/workspaces", json=workspace, headers=admin
                ) as r:
                    assert r.status == 201, await r.text()
                created.append((time.perf_counter() - begun) * 1000)

            await asyncio.gather(*(create_workspace() for _ in range(count)))
            warm_up, created[:] = created[:], []
            await asyncio.gather(*(create_workspace() for _ in range(count)))

            async def provision() -> None:
                process = str(uuid.uuid4())
                sent[process] = time.perf_counter()
                request = {**body, "transferProcessId": process}
                async with session.post(
                    f"{service.url}/edc/main/{WEBHOOK_SECRET}/provision", json=request
                ) as r:
                    assert r.status == 200, await r.text()
                answered[process] = time.perf_counter()

            started = time.perf_counter()
            await asyncio.gather(*(provision() for _ in range(count)))
            await asyncio.wait_for(done.wait(), 300)
            wall = time.perf_counter() - started
    finally:
        service.stop()
        await runner.cleanup()
        await databases.drop_all()
    to_answer = [(answered[p] - sent[p]) * 1000 for p in sent]
    to_callback = [(received[p] - sent[p]) * 1000 for p in sent]
    print(
        f"{count} concurrent provision requests, S3 backend (radosgw), store {store}, "
        f"connector answers 409 {busy}x first"
    )
    print(f"  callbacks delivered: {len(received)} of {count} in {wall:.1f} s")
    for label, values in (
        ("warm-up creation", warm_up),
        ("bare workspace creation", created),
        ("request -> 200 answer", to_answer),
        ("request -> callback", to_callback),
    ):
        p50, p99 = percentile(values, 0.5), percentile(values, 0.99)
        print(f"  {label:<22} p50 {p50:7.0f} ms   p99 {p99:7.0f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--busy", type=int, default=1)
    parser.add_argument("--s3-endpoint")
    parser.add_argument("--store", choices=("sqlite", "postgresql"), default="sqlite")
    args = parser.parse_args()
    with_s3(
        args.s3_endpoint,
        7496,
        lambda endpoint: asyncio.run(run(args.count, endpoint, args.busy, args.store)),
    )


if __name__ == "__main__":
    main()
