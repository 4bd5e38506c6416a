"""Reading request bodies: a client that pauses within a body longer than
`server.body_idle_timeout_seconds` gets 408 instead of holding its connection."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from aiohttp import web

from provider.api.context import ctx
from provider.api.problems import ProblemError


async def body_chunks(request: web.Request, size: int) -> AsyncIterator[bytes]:
    """The body in chunks of at most `size` bytes; ProblemError 408 once the client stalls."""
    content = request.content
    content.set_read_chunk_size(size)
    idle = ctx(request).body_idle_timeout_seconds
    while True:
        chunk = content.read_nowait(size)
        if not chunk:
            if content.at_eof():
                return
            # Only waits for the client are timed: buffered bytes are taken without a timer.
            try:
                async with asyncio.timeout(idle):
                    chunk = await content.read(size)
            except TimeoutError:
                raise ProblemError(
                    408, "body-timeout", f"no part of the request body arrived for {idle:g} seconds"
                ) from None
            if not chunk:
                return
        yield chunk


async def read_body(request: web.Request) -> bytes:
    """The whole body, as request.read() reads it (413 beyond client_max_size), within the idle limit."""
    body = bytearray()
    async for chunk in body_chunks(request, request.client_max_size):
        body += chunk
        if len(body) > request.client_max_size:
            raise web.HTTPRequestEntityTooLarge(max_size=request.client_max_size, actual_size=len(body))
    return bytes(body)
