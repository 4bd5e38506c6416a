"""100 concurrent EDC provision requests against the S3 backend (radosgw): every callback must
arrive; p50 and p99 from the request to its webhook answer and to the connector's callback.

    python -m bench.edc_provisioning [--count 100] [--s3-endpoint URL] [--busy 1]

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

from bench.common import REPO, S3_ACCESS, S3_SECRET, Service, percentile, with_s3

WEBHOOK_SECRET = "bench-connector-secret-" + "x" * 20


async def run(count: int, endpoint: str, busy: int) -> None:
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
            "storage": {
                "backend": "s3",
                "s3": {
                    "endpoint_url": endpoint,
                    "access_key_id": S3_ACCESS,
                    "secret_access_key": S3_SECRET,
                    "bucket_prefix": "bench-edc-",
                },
            },
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
        async with aiohttp.ClientSession() as session:

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
    to_answer = [(answered[p] - sent[p]) * 1000 for p in sent]
    to_callback = [(received[p] - sent[p]) * 1000 for p in sent]
    print(f"{count} concurrent provision requests, S3 backend (radosgw), connector answers 409 {busy}x first")
    print(f"  callbacks delivered: {len(received)} of {count} in {wall:.1f} s")
    for label, values in (("request -> 200 answer", to_answer), ("request -> callback", to_callback)):
        p50, p99 = percentile(values, 0.5), percentile(values, 0.99)
        print(f"  {label:<22} p50 {p50:7.0f} ms   p99 {p99:7.0f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--busy", type=int, default=1)
    parser.add_argument("--s3-endpoint")
    args = parser.parse_args()
    with_s3(args.s3_endpoint, 7496, lambda endpoint: asyncio.run(run(args.count, endpoint, args.busy)))


if __name__ == "__main__":
    main()
