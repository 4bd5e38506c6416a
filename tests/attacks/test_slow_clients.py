"""Slow clients: connections that send their headers or body slowly, or merely stay open, must
not hold the service's connections, and the service answers other clients meanwhile.

The service runs as `provider serve` runs it (provider.server.start: the same runner, site and
connection limit) on loopback, with limits of about a second so that nothing waits long. Every
assertion waits for an event (the server closing a socket, a response), never for a fixed time.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any

import aiohttp

from provider.app import create_app
from provider.config import ServerSettings, Settings
from provider.server import start
from tests.conftest import ADMIN_KEY

DEADLINE = 90.0  # generous, for a loaded machine; the limits act within seconds

Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]


@asynccontextmanager
async def service(settings: Settings, **limits: Any) -> AsyncIterator[tuple[str, int]]:
    """The service on a free loopback port with these server settings; its URL and port."""
    server = ServerSettings.model_validate({**settings.server.model_dump(), "port": 0, **limits})
    app = create_app(settings.model_copy(update={"server": server}))
    runner, site = await start(app, server)
    try:
        yield f"http://127.0.0.1:{site.port}", site.port
    finally:
        await runner.cleanup()


async def closed_by_server(reader: asyncio.StreamReader) -> bytes:
    """Everything the server sends until it closes the connection."""
    received = b""
    try:
        while chunk := await reader.read(65536):
            received += chunk
    except ConnectionResetError:
        pass
    return received


async def hang_up(connections: list[Connection]) -> None:
    for _, writer in connections:
        writer.close()
        with suppress(OSError):
            await writer.wait_closed()


async def get(url: str, path: str = "/healthz", key: str | None = None) -> int:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    async with aiohttp.ClientSession() as session, session.get(url + path, headers=headers) as response:
        await response.read()
        return response.status


async def test_partial_headers_are_cut_off_while_other_clients_are_served(settings: Settings) -> None:
    # 3 s: long enough that the honest client's own request is read in time on a loaded machine.
    async with service(settings, header_timeout_seconds=3.0) as (url, port):
        attackers: list[Connection] = []
        tricklers: list[asyncio.Task[None]] = []
        try:
            for _ in range(200):
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(b"GET /healthz HTTP/1.1\r\nHost: provider\r\n")  # never the blank line
                attackers.append((reader, writer))

            async def trickle(writer: asyncio.StreamWriter) -> None:
                # A header line now and then: slowloris keeps its connections busy this way.
                with suppress(OSError):
                    while not writer.is_closing():
                        writer.write(b"X-Slow: 1\r\n")
                        await writer.drain()
                        await asyncio.sleep(0.2)

            tricklers += [asyncio.create_task(trickle(writer)) for _, writer in attackers]
            # Another client during the attack.
            assert await get(url) == 200
            assert await get(url, "/api/v1/me", ADMIN_KEY) == 200
            received = await asyncio.wait_for(
                asyncio.gather(*(closed_by_server(reader) for reader, _ in attackers)), DEADLINE
            )
            assert received == [b""] * 200, "a partial request got an answer"
            assert await get(url) == 200
        finally:
            for task in tricklers:
                task.cancel()
            await hang_up(attackers)


async def test_an_idle_keep_alive_connection_is_closed_after_the_header_timeout(settings: Settings) -> None:
    async with service(settings, header_timeout_seconds=1.0) as (_, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: provider\r\n\r\n")
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), DEADLINE)
            assert head.startswith(b"HTTP/1.1 200") and b"connection: close" not in head.lower()
            await asyncio.wait_for(closed_by_server(reader), DEADLINE)  # then nothing more is sent
        finally:
            await hang_up([(reader, writer)])


async def consumer_workspace(url: str) -> tuple[str, str, str]:
    """A tenant's API key and a new workspace of that tenant: (key, workspace id, location)."""
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    async with aiohttp.ClientSession(url, headers=admin) as session:
        async with session.post("/api/v1/tenants", json={"participant_id": "did:web:slow.example"}) as r:
            tenant = await r.json()
        async with session.post(f"/api/v1/tenants/{tenant['id']}/api-keys", json={"name": "k"}) as r:
            key = (await r.json())["key"]
        async with session.post("/api/v1/workspaces", json={"tenant_id": tenant["id"]}) as r:
            assert r.status == 201, await r.text()
            workspace = await r.json()
    return key, workspace["id"], workspace["storage"]["location"]


async def drip(port: int, head: bytes, interval: float) -> bytes:
    """Send `head`, then the body one byte per `interval` (more than the idle limit) until the
    server answers; returns the answer and everything after it until the server closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head)
        while True:
            writer.write(b"x")
            await writer.drain()
            try:
                first = await asyncio.wait_for(reader.read(65536), interval)
            except TimeoutError:
                continue  # no answer yet: the next byte, after `interval` without one
            return first + await closed_by_server(reader)
    finally:
        await hang_up([(reader, writer)])


def problem(answer: bytes) -> tuple[int, dict[str, Any]]:
    head, _, body = answer.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    assert b"content-type: application/problem+json" in head.lower(), head
    return status, json.loads(body)


async def test_an_upload_dripping_one_byte_at_a_time_is_cut_off_and_nothing_is_stored(
    settings: Settings,
) -> None:
    async with service(settings, body_idle_timeout_seconds=1.0) as (url, port):
        key, workspace_id, location = await consumer_workspace(url)
        path = f"/api/v1/workspaces/{workspace_id}/objects/slow.bin"
        head = (
            f"PUT {path} HTTP/1.1\r\nHost: provider\r\nAuthorization: Bearer {key}\r\n"
            "Content-Type: application/octet-stream\r\nContent-Length: 1000000\r\n\r\n"
        ).encode()
        answer = await asyncio.wait_for(drip(port, head, interval=2.0), DEADLINE)
        status, body = problem(answer)
        assert status == 408 and body["type"] == "urn:provider:problem:body-timeout", body

        assert await get(url, path, key) == 404
        async with aiohttp.ClientSession() as session:
            headers = {"Authorization": f"Bearer {key}"}
            async with session.get(f"{url}/api/v1/workspaces/{workspace_id}", headers=headers) as r:
                usage = (await r.json())["usage"]
                assert (usage["bytes"], usage["objects"]) == (0, 0)
        stored = Path(settings.data_dir) / "workspaces" / location
        assert [p for p in stored.rglob("*") if p.is_file()] == [], "a partial upload was left behind"


async def test_a_json_body_dripping_one_byte_at_a_time_is_cut_off(settings: Settings) -> None:
    async with service(settings, body_idle_timeout_seconds=1.0) as (url, port):
        head = (
            f"POST /api/v1/tenants HTTP/1.1\r\nHost: provider\r\nAuthorization: Bearer {ADMIN_KEY}\r\n"
            "Content-Type: application/json\r\nContent-Length: 500\r\n\r\n"
        ).encode()
        answer = await asyncio.wait_for(drip(port, head, interval=2.0), DEADLINE)
        status, body = problem(answer)
        assert status == 408 and body["type"] == "urn:provider:problem:body-timeout", body
        assert await get(url) == 200


async def served(port: int) -> Connection:
    """A connection on which one request was answered (so the server has admitted it)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: provider\r\n\r\n")
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    await reader.readexactly(length)
    return reader, writer


async def test_connections_beyond_the_limit_hold_nothing_and_slots_come_back(settings: Settings) -> None:
    limit = 8
    # A long header timeout: the held connections keep their slots for the whole test.
    async with service(settings, max_connections=limit, header_timeout_seconds=300.0) as (url, port):
        held = [await asyncio.wait_for(served(port), DEADLINE) for _ in range(limit)]
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: provider\r\n\r\n")
            with suppress(ConnectionResetError):
                await writer.drain()
            first = b""
            with suppress(ConnectionResetError):
                first = await asyncio.wait_for(reader.read(65536), DEADLINE)
            assert first == b"", f"served beyond the limit: {first[:40]!r}"
            await hang_up([(reader, writer)])
            # The admitted connections are still served.
            reader, writer = held[0]
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: provider\r\n\r\n")
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), DEADLINE)
            assert head.startswith(b"HTTP/1.1 200")
        finally:
            await hang_up(held)

        async def served_again() -> int:
            while True:  # the server frees a slot once it has seen its connection end
                with suppress(aiohttp.ClientConnectionError):
                    return await get(url)
                await asyncio.sleep(0.05)

        assert await asyncio.wait_for(served_again(), DEADLINE) == 200
        fresh = [await asyncio.wait_for(served(port), DEADLINE) for _ in range(limit)]
        await hang_up(fresh)
