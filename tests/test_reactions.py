"""Each row of the reactions table (provider/services/reactions.py), performed through the API."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from provider.app import build_components
from provider.config import Settings
from provider.services import reactions
from tests import test_executions
from tests.conftest import ADMIN_KEY, Api, live_api
from tests.test_executions import run, setup, until

exec_settings = test_executions.exec_settings  # fixtures shared with the execution tests
live = test_executions.live
local = test_executions.local


def test_the_documented_table_is_what_is_wired(settings: Settings) -> None:
    documented = {
        tuple(cell.strip() for cell in line.strip().strip("|").split("|")[:2])
        for line in (reactions.__doc__ or "").splitlines()
        if line.startswith("| ") and "." in line.split("|")[1]
    }
    wired = {(r.event, r.reactor) for r in build_components(settings).reactions}
    assert wired == documented and len(wired) == 7


async def test_deleting_a_workspace_through_the_api_cancels_its_running_executions(live: Api) -> None:
    key, ws = await setup(live)
    running = await until(live, key, await run(live, key, ws, "sleepy"), {"RUNNING"})
    await live.json("DELETE", f"/api/v1/workspaces/{ws}", 204, key=key)
    ended = await until(live, ADMIN_KEY, running, {"CANCELED", "SYSTEM_ERROR", "EXECUTOR_ERROR", "COMPLETE"})
    assert ended["state"] == "CANCELED", ended
    assert ended["reason"] == "Canceled", ended
    assert any(step["state"] == "CANCELING" for step in ended["history"]), ended


@pytest.fixture
async def cached(exec_settings: Settings, contract) -> AsyncIterator[Api]:  # type: ignore[no-untyped-def]
    """The service with long-lived credential caches and loopback imports allowed."""
    settings = exec_settings.model_copy(
        update={
            "auth": exec_settings.auth.model_copy(update={"key_cache_seconds": 300}),
            "imports": exec_settings.imports.model_copy(update={"allowed_networks": ["127.0.0.1/32"]}),
        }
    )
    api, close = await live_api(settings, contract)
    yield api
    await close()


async def test_deleting_a_workspace_cancels_its_imports(cached: Api) -> None:
    """The source of a running import sees its connection dropped when the workspace goes."""
    started, dropped = asyncio.Event(), asyncio.Event()

    async def stall(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Length": "1000000"})
        await response.prepare(request)
        await response.write(b"x" * 1000)
        started.set()
        try:
            await asyncio.sleep(3600)
        finally:
            dropped.set()
        return response

    app = web.Application()
    app.router.add_get("/slow", stall)
    source = TestServer(app, host="127.0.0.1")
    await source.start_server()
    try:
        key, ws = await setup(cached)
        await cached.json(
            "POST",
            f"/api/v1/workspaces/{ws}/imports",
            202,
            key=key,
            json={"source_url": str(source.make_url("/slow")), "target_key": "slow.bin"},
        )
        await asyncio.wait_for(started.wait(), 30)
        await cached.json("DELETE", f"/api/v1/workspaces/{ws}", 204, key=key)
        await asyncio.wait_for(dropped.wait(), 30)
    finally:
        await source.close()


async def test_a_revoked_api_key_stops_at_once(cached: Api) -> None:
    tenant = await cached.json(
        "POST", "/api/v1/tenants", 201, key=ADMIN_KEY, json={"participant_id": "did:web:k"}
    )
    issued = await cached.json(
        "POST", f"/api/v1/tenants/{tenant['id']}/api-keys", 201, key=ADMIN_KEY, json={}
    )
    await cached.json("GET", "/api/v1/me", 200, key=issued["key"])  # now in the cache for 300 s
    await cached.json("DELETE", f"/api/v1/tenants/{tenant['id']}/api-keys/{issued['id']}", 204, key=ADMIN_KEY)
    await cached.json("GET", "/api/v1/me", 401, key=issued["key"])


async def test_revoked_workspace_tokens_stop_at_once(cached: Api) -> None:
    key, ws = await setup(cached)
    token = (await cached.json("POST", f"/api/v1/workspaces/{ws}/tokens", 201, key=key, json={}))["token"]
    await cached.json("GET", f"/api/v1/workspaces/{ws}", 200, key=token)  # cached
    await cached.json("DELETE", f"/api/v1/workspaces/{ws}", 204, key=key)
    await cached.json("GET", f"/api/v1/workspaces/{ws}", 401, key=token)
