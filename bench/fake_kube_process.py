"""The fake API server in a process of its own, with its test hooks behind a small control API.

    python -m bench.fake_kube_process --control-port C

`POST /hook/{name}` with {"args": [...], "kwargs": {...}} calls that FakeKube hook and answers
{"result": ..., "at": time.monotonic() just after the change}. CLOCK_MONOTONIC is system-wide
on Linux, so the benchmark can compare it with its own clock.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any

from aiohttp import web

from tests.fake_kube.server import FakeKube


async def serve(control_port: int) -> None:
    fake = FakeKube()
    await fake.start()

    async def hook(request: web.Request) -> web.Response:
        body: dict[str, Any] = await request.json()
        result = getattr(fake, request.match_info["name"])(*body.get("args", []), **body.get("kwargs", {}))
        at = time.monotonic()
        return web.json_response({"result": result, "at": at}, dumps=lambda v: json.dumps(v, default=str))

    async def info(_: web.Request) -> web.Response:
        return web.json_response(
            {
                "url": fake.url,
                "open_watches": [[k[0], k[1], v] for k, v in fake.open_watches.items()],
                "watch_requests": [dict(w) for w in fake.watch_requests],
            }
        )

    app = web.Application()
    app.router.add_post("/hook/{name}", hook)
    app.router.add_get("/info", info)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", control_port).start()
    print(fake.url, flush=True)
    await asyncio.Event().wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--control-port", type=int, required=True)
    args = parser.parse_args()
    asyncio.run(serve(args.control_port))


if __name__ == "__main__":
    main()
