"""The baseline for objects_throughput on the filesystem: a bare aiohttp server that streams a PUT
body to a file (fsync'd, as the service does) and answers a GET with the file (sendfile), in a
directory on the same disk as the service's data.

    python -m bench.bare_files DIRECTORY PORT
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from aiohttp import web


def main() -> None:
    directory, port = Path(sys.argv[1]), int(sys.argv[2])
    directory.mkdir(parents=True, exist_ok=True)

    async def put(request: web.Request) -> web.Response:
        path = directory / request.match_info["name"]
        with path.open("wb") as handle:
            async for chunk in request.content.iter_chunked(1024 * 1024):
                await asyncio.to_thread(handle.write, chunk)
            await asyncio.to_thread(handle.flush)
            await asyncio.to_thread(os.fsync, handle.fileno())
        return web.Response(status=201)

    async def get(request: web.Request) -> web.FileResponse:
        return web.FileResponse(directory / request.match_info["name"])

    async def delete(request: web.Request) -> web.Response:
        (directory / request.match_info["name"]).unlink(missing_ok=True)
        return web.Response(status=204)

    app = web.Application(client_max_size=0)
    app.router.add_put("/files/{name}", put)
    app.router.add_get("/files/{name}", get)
    app.router.add_delete("/files/{name}", delete)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


if __name__ == "__main__":
    main()
