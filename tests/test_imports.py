"""Imports from remote HTTP sources: retries, resume, verification, the SSRF guard, restarts."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from provider.app import create_app
from provider.config import Settings
from tests.conftest import ADMIN_KEY, WAIT_SECONDS, Api, poll_until

DATA = os.urandom(3 * 1024 * 1024 + 17)
SHA = hashlib.sha256(DATA).hexdigest()


@dataclass
class Source:
    """A remote data plane with the faults imports must survive."""

    server: TestServer
    failures: dict[str, int] = field(default_factory=dict)
    ranges_seen: list[str] = field(default_factory=list)
    authorizations: list[str | None] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    started: asyncio.Event = field(default_factory=asyncio.Event)  # /slow has sent its first bytes

    def url(self, path: str) -> str:
        return str(self.server.make_url(path))


async def serve_bytes(
    request: web.Request, data: bytes, drop_after: int | None = None, ranges: bool = True
) -> web.StreamResponse:
    headers = {"Accept-Ranges": "bytes", "ETag": '"v1"'}  # said even when `ranges` is False
    start, status = 0, 200
    if ranges and "Range" in request.headers:
        start = int(request.headers["Range"].removeprefix("bytes=").split("-")[0])
        status = 206
        headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
    response = web.StreamResponse(status=status, headers=headers)
    response.content_length = len(data) - start
    await response.prepare(request)
    position = start
    while position < len(data):
        piece = data[position : position + 65536]
        if drop_after is not None and position >= drop_after:
            request.transport.close()  # type: ignore[union-attr]
            return response
        await response.write(piece)
        position += len(piece)
    await response.write_eof()
    return response


@pytest.fixture
async def source() -> AsyncIterator[Source]:
    app = web.Application()
    state = Source(TestServer(app))

    async def file(request: web.Request) -> web.StreamResponse:
        state.authorizations.append(request.headers.get("Authorization"))
        if "Range" in request.headers:
            state.ranges_seen.append(request.headers["Range"])
        return await serve_bytes(request, DATA)

    async def flaky(request: web.Request) -> web.StreamResponse:
        if state.failures.get("flaky", 0) > 0:
            state.failures["flaky"] -= 1
            return web.Response(status=503)
        return await serve_bytes(request, DATA)

    async def drop(request: web.Request) -> web.StreamResponse:
        if "Range" in request.headers:
            state.ranges_seen.append(request.headers["Range"])
            return await serve_bytes(request, DATA)
        return await serve_bytes(request, DATA, drop_after=len(DATA) // 2)

    async def drop_ignoring_ranges(request: web.Request) -> web.StreamResponse:
        if "Range" in request.headers:
            state.ranges_seen.append(request.headers["Range"])
        return await serve_bytes(request, DATA, drop_after=len(DATA) // 2, ranges=False)

    async def slow(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Length": str(len(DATA))})
        await response.prepare(request)
        await response.write(DATA[:1000])
        state.started.set()
        await state.release.wait()
        await response.write(DATA[1000:])
        return response

    async def missing(request: web.Request) -> web.Response:
        return web.Response(status=404, text="no such asset")

    async def redirect_out(request: web.Request) -> web.Response:
        raise web.HTTPFound("http://10.1.2.3/internal")

    async def redirect_in(request: web.Request) -> web.Response:
        raise web.HTTPFound("/file")

    for path, handler in [
        ("/file", file),
        ("/flaky", flaky),
        ("/drop", drop),
        ("/drop-ignoring-ranges", drop_ignoring_ranges),
        ("/slow", slow),
        ("/missing", missing),
        ("/redirect-out", redirect_out),
        ("/redirect-in", redirect_in),
    ]:
        app.router.add_get(path, handler)
    await state.server.start_server()
    yield state
    state.release.set()
    await state.server.close()


@pytest.fixture
def import_settings(settings: Settings) -> Settings:
    return settings.model_copy(
        update={
            "imports": settings.imports.model_copy(
                update={"allowed_networks": ["127.0.0.1/32"], "backoff_seconds": 0.05, "max_attempts": 4}
            )
        }
    )


@pytest.fixture
async def iapi(aiohttp_client, import_settings: Settings, contract) -> Api:  # type: ignore[no-untyped-def]
    client = await aiohttp_client(create_app(import_settings))
    return Api(client, contract, client.app)


async def setup_workspace(api: Api) -> tuple[str, str]:
    tenant = await api.json(
        "POST", "/api/v1/tenants", 201, key=ADMIN_KEY, json={"participant_id": "importer"}
    )
    key = (await api.json("POST", f"/api/v1/tenants/{tenant['id']}/api-keys", 201, key=ADMIN_KEY, json={}))[
        "key"
    ]
    ws = await api.json("POST", "/api/v1/workspaces", 201, key=key, json={})
    return key, ws["id"]


async def finished(api: Api, key: str, ws: str, import_id: str) -> dict[str, Any]:
    async def final() -> dict[str, Any] | None:
        item = await api.json("GET", f"/api/v1/workspaces/{ws}/imports/{import_id}", 200, key=key)
        return dict(item) if item["state"] in ("succeeded", "failed", "canceled") else None

    return await poll_until(final, f"import {import_id} to end")


async def slow_source_reached(source: Source) -> None:
    """The import is running: the source has sent its first bytes and waits to be released."""
    await asyncio.wait_for(source.started.wait(), WAIT_SECONDS)


async def stopped(api: Api, import_id: str) -> None:
    """The import's task has ended: nothing more can come of it."""
    from provider.api.context import CONTEXT

    imports = api.app[CONTEXT].imports
    await poll_until(lambda: import_id not in imports._tasks, f"the task of import {import_id} to end")


async def start(api: Api, key: str, ws: str, **body: Any) -> dict[str, Any]:
    return dict(await api.json("POST", f"/api/v1/workspaces/{ws}/imports", 202, key=key, json=body))


async def content(api: Api, key: str, ws: str, object_key: str) -> bytes:
    response = await api.request("GET", f"/api/v1/workspaces/{ws}/objects/{object_key}", key=key)
    assert response.status == 200
    return await response.read()


async def test_import_streams_verifies_and_sends_the_edr_authorization_as_given(
    iapi: Api, source: Source
) -> None:
    key, ws = await setup_workspace(iapi)
    item = await start(
        iapi,
        key,
        ws,
        source_url=source.url("/file"),
        target_key="in/data.bin",
        sha256=SHA,
        headers={"Authorization": "eyJhbGciOiJSUzI1NiJ9.edr-token.sig"},
    )
    assert item["state"] == "queued" and item["header_names"] == ["Authorization"]
    assert "edr-token" not in str(item)
    done = await finished(iapi, key, ws, item["id"])
    assert done["state"] == "succeeded" and done["sha256"] == SHA
    assert done["bytes_done"] == done["bytes_total"] == len(DATA) and done["attempts"] == 1
    assert source.authorizations == ["eyJhbGciOiJSUzI1NiJ9.edr-token.sig"]  # no "Bearer " added
    assert await content(iapi, key, ws, "in/data.bin") == DATA
    listed = await iapi.json("GET", f"/api/v1/workspaces/{ws}/imports", 200, key=key)
    assert [i["id"] for i in listed["items"]] == [item["id"]]


async def test_upstream_404_fails_with_the_status_recorded(iapi: Api, source: Source) -> None:
    key, ws = await setup_workspace(iapi)
    item = await start(iapi, key, ws, source_url=source.url("/missing"), target_key="x")
    done = await finished(iapi, key, ws, item["id"])
    assert done["state"] == "failed" and done["upstream_status"] == 404 and done["attempts"] == 1
    assert "404" in done["error"]
    await iapi.json("GET", f"/api/v1/workspaces/{ws}/objects/x", 404, key=key)


async def test_transient_5xx_is_retried_with_backoff(iapi: Api, source: Source) -> None:
    key, ws = await setup_workspace(iapi)
    source.failures["flaky"] = 2
    item = await start(iapi, key, ws, source_url=source.url("/flaky"), target_key="f")
    done = await finished(iapi, key, ws, item["id"])
    assert done["state"] == "succeeded" and done["attempts"] == 3
    assert await content(iapi, key, ws, "f") == DATA


async def test_giving_up_after_max_attempts(iapi: Api, source: Source) -> None:
    key, ws = await setup_workspace(iapi)
    source.failures["flaky"] = 100
    item = await start(iapi, key, ws, source_url=source.url("/flaky"), target_key="f")
    done = await finished(iapi, key, ws, item["id"])
    assert done["state"] == "failed" and done["attempts"] == 4 and done["upstream_status"] == 503


async def test_dropped_connection_resumes_with_range(iapi: Api, source: Source) -> None:
    key, ws = await setup_workspace(iapi)
    item = await start(iapi, key, ws, source_url=source.url("/drop"), target_key="d", sha256=SHA)
    done = await finished(iapi, key, ws, item["id"])
    assert done["state"] == "succeeded" and done["attempts"] == 1, done
    assert len(source.ranges_seen) == 1 and source.ranges_seen[0] != "bytes=0-"
    assert await content(iapi, key, ws, "d") == DATA


async def test_a_source_that_ignores_the_range_is_fetched_again_from_the_start(
    iapi: Api, source: Source
) -> None:
    key, ws = await setup_workspace(iapi)
    item = await start(iapi, key, ws, source_url=source.url("/drop-ignoring-ranges"), target_key="r")
    done = await finished(iapi, key, ws, item["id"])
    assert done["state"] == "failed" and done["attempts"] == 4
    assert done["error"] == "gave up after 4 attempts: the source ignored the range request; starting over"
    # Each attempt asked once for the rest, from where its body broke off.
    assert len(source.ranges_seen) == 4 and len(set(source.ranges_seen)) == 1
    assert source.ranges_seen[0] != "bytes=0-"
    response = await iapi.request("GET", f"/api/v1/workspaces/{ws}/objects/r", key=key)
    assert response.status == 404  # nothing half-stored


async def test_wrong_checksum_or_size_fails_and_stores_nothing(iapi: Api, source: Source) -> None:
    key, ws = await setup_workspace(iapi)
    bad = await start(iapi, key, ws, source_url=source.url("/file"), target_key="c", sha256="0" * 64)
    done = await finished(iapi, key, ws, bad["id"])
    assert done["state"] == "failed" and "SHA-256" in done["error"]
    small = await start(iapi, key, ws, source_url=source.url("/file"), target_key="c", expected_size=100)
    done = await finished(iapi, key, ws, small["id"])
    assert done["state"] == "failed" and "100 bytes" in done["error"]
    await iapi.json("GET", f"/api/v1/workspaces/{ws}/objects/c", 404, key=key)


async def test_cancel_stops_a_running_import(iapi: Api, source: Source) -> None:
    key, ws = await setup_workspace(iapi)
    item = await start(iapi, key, ws, source_url=source.url("/slow"), target_key="s")
    await slow_source_reached(source)
    canceled = await iapi.json("POST", f"/api/v1/workspaces/{ws}/imports/{item['id']}/cancel", 200, key=key)
    assert canceled["state"] == "canceled"
    problem = await iapi.json("POST", f"/api/v1/workspaces/{ws}/imports/{item['id']}/cancel", 409, key=key)
    assert "canceled" in problem["detail"]
    source.release.set()  # the rest of the data would now arrive, were the import still running
    await stopped(iapi, item["id"])
    assert (await finished(iapi, key, ws, item["id"]))["state"] == "canceled"
    await iapi.json("GET", f"/api/v1/workspaces/{ws}/objects/s", 404, key=key)


async def test_redirect_to_a_forbidden_address_fails_and_same_origin_redirect_works(
    iapi: Api, source: Source
) -> None:
    key, ws = await setup_workspace(iapi)
    out = await start(iapi, key, ws, source_url=source.url("/redirect-out"), target_key="r")
    done = await finished(iapi, key, ws, out["id"])
    assert done["state"] == "failed" and "private address" in done["error"]
    inside = await start(iapi, key, ws, source_url=source.url("/redirect-in"), target_key="r")
    assert (await finished(iapi, key, ws, inside["id"]))["state"] == "succeeded"


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("http://127.0.0.1:9/x", "loopback"),
        ("http://169.254.169.254/latest/meta-data", "cloud metadata"),
        ("http://10.0.0.5/x", "private"),
        ("http://[::1]/x", "loopback"),
        ("ftp://example.org/x", "scheme"),
        ("http:///nohost", "no host"),
    ],
)
async def test_forbidden_sources_are_400_naming_the_rule(api: Api, url: str, words: str) -> None:
    key, ws = await setup_workspace(api)
    problem = await api.json(
        "POST",
        f"/api/v1/workspaces/{ws}/imports",
        400,
        key=key,
        json={"source_url": url, "target_key": "x"},
    )
    assert words in (problem["detail"] + str(problem.get("errors"))), problem
    assert problem["errors"][0]["field"] == "body.source_url"
    assert (await api.json("GET", f"/api/v1/workspaces/{ws}/imports", 200, key=key))["items"] == []


async def test_bad_target_key_is_400(iapi: Api, source: Source) -> None:
    key, ws = await setup_workspace(iapi)
    problem = await iapi.json(
        "POST",
        f"/api/v1/workspaces/{ws}/imports",
        400,
        key=key,
        json={"source_url": source.url("/file"), "target_key": "../x"},
    )
    assert problem["errors"][0]["field"] == "body.target_key"


async def test_headers_that_http_cannot_carry_are_422_and_nothing_is_queued(
    iapi: Api, source: Source
) -> None:
    """A header that would split the request to the source (CR LF), or a name that is not an HTTP
    token, is refused when the import is asked for, not found out by the import in the background."""
    key, ws = await setup_workspace(iapi)
    for headers, named in (
        ({"Authorization": "token\r\nX-Injected: 1"}, "body.headers.Authorization"),
        ({"X-Trace": "a\nb"}, "body.headers.X-Trace"),
        ({"Bad Name": "v"}, "body.headers.Bad Name"),
        ({"X-Colon:": "v"}, "body.headers.X-Colon:"),
    ):
        problem = await iapi.json(
            "POST",
            f"/api/v1/workspaces/{ws}/imports",
            422,
            key=key,
            json={"source_url": source.url("/file"), "target_key": "in/x", "headers": headers},
        )
        assert [e["field"] for e in problem["errors"]] == [named], problem
    assert (await iapi.json("GET", f"/api/v1/workspaces/{ws}/imports", 200, key=key))["items"] == []
    assert source.authorizations == []
    # A tab is allowed in a value.
    item = await start(
        iapi, key, ws, source_url=source.url("/file"), target_key="in/x", headers={"X-Trace": "a\tb"}
    )
    assert (await finished(iapi, key, ws, item["id"]))["state"] == "succeeded"


async def test_an_interrupted_import_resumes_after_a_restart(
    aiohttp_client,
    import_settings: Settings,
    contract,
    source: Source,  # type: ignore[no-untyped-def]
) -> None:
    first = await aiohttp_client(create_app(import_settings))
    api = Api(first, contract, first.app)
    key, ws = await setup_workspace(api)
    item = await start(api, key, ws, source_url=source.url("/slow"), target_key="later")
    await slow_source_reached(source)
    assert (await api.json("GET", f"/api/v1/workspaces/{ws}/imports/{item['id']}", 200, key=key))[
        "state"
    ] == "running"
    await first.close()  # the service stops in the middle of the import
    source.release.set()
    second = await aiohttp_client(create_app(import_settings))
    again = Api(second, contract, second.app)
    done = await finished(again, key, ws, item["id"])
    assert done["state"] == "succeeded" and done["attempts"] == 2
    assert await content(again, key, ws, "later") == DATA


async def test_deleting_the_workspace_cancels_its_imports(iapi: Api, source: Source) -> None:
    key, ws = await setup_workspace(iapi)
    item = await start(iapi, key, ws, source_url=source.url("/slow"), target_key="s")
    await slow_source_reached(source)
    await iapi.json("DELETE", f"/api/v1/workspaces/{ws}", 204, key=key)
    from provider.api.context import CONTEXT

    async with iapi.app[CONTEXT].store.read() as uow:
        stored = await uow.imports.get(item["id"])
    assert stored is not None and stored.state.value == "canceled"


async def test_connect_time_guard_drops_rebound_addresses() -> None:
    """A name that resolved to a public address when checked but to a private one when
    connecting (DNS rebinding) is refused by the resolver itself."""
    from provider.backends.http_source import AllAddressesForbidden, GuardedResolver
    from provider.domain.addresses import parse_networks

    class Rebinding:
        async def resolve(self, host: str, port: int = 0, family: int = 0) -> list[dict[str, Any]]:
            return [
                {"hostname": host, "host": "10.0.0.7", "port": port, "family": 2, "proto": 0, "flags": 0},
                {
                    "hostname": host,
                    "host": "93.184.216.34",
                    "port": port,
                    "family": 2,
                    "proto": 0,
                    "flags": 0,
                },
            ]

        async def close(self) -> None:
            return None

    resolver = GuardedResolver(parse_networks([]))
    resolver.inner = Rebinding()  # type: ignore[assignment]
    kept = await resolver.resolve("example.org", 80)
    assert [r["host"] for r in kept] == ["93.184.216.34"]

    class Private(Rebinding):
        async def resolve(self, host: str, port: int = 0, family: int = 0) -> list[dict[str, Any]]:
            return (await super().resolve(host, port, family))[:1]

    resolver.inner = Private()  # type: ignore[assignment]
    with pytest.raises(AllAddressesForbidden, match="private address"):
        await resolver.resolve("example.org", 80)
    allowed = GuardedResolver(parse_networks(["10.0.0.0/8"]))
    allowed.inner = Private()  # type: ignore[assignment]
    assert len(await allowed.resolve("example.org", 80)) == 1


async def test_no_import_of_either_kind_starts_in_a_workspace_being_deleted(
    aiohttp_client,  # type: ignore[no-untyped-def]
    import_settings: Settings,
    contract,
    source: Source,
) -> None:
    """A caller's import and the service's own (an EDC transfer the workspace registered) take the
    same path: while the workspace is being deleted, neither starts."""
    from provider.api.context import CONTEXT
    from tests.test_edc import EVENTS_SECRET

    events = import_settings.edc.events.model_validate({"auth_code": EVENTS_SECRET})
    settings = import_settings.model_copy(
        update={"edc": import_settings.edc.model_copy(update={"events": events})}
    )
    client = await aiohttp_client(create_app(settings))
    api = Api(client, contract, client.app)
    key, ws = await setup_workspace(api)
    await api.json(
        "POST",
        f"/api/v1/workspaces/{ws}/edc-transfers",
        201,
        key=key,
        json={"transfer_process_id": "tp-deleting", "target_key": "in.bin"},
    )
    # Hold the deletion after the workspace is marked deleting (as a slow storage would).
    deleting, finish = asyncio.Event(), asyncio.Event()

    async def hold(_: str) -> None:
        deleting.set()
        await finish.wait()

    api.app[CONTEXT].workspaces.before_delete.append(hold)
    deletion = asyncio.create_task(api.json("DELETE", f"/api/v1/workspaces/{ws}", 204, key=key))
    await asyncio.wait_for(deleting.wait(), WAIT_SECONDS)
    try:
        event = {
            "type": "TransferProcessStarted",
            "payload": {
                "transferProcessId": "tp-deleting",
                "dataAddress": {"properties": {"endpoint": source.url("/file")}},
            },
        }
        answer = await api.json("POST", "/edc/events", 200, json=event, headers={"X-Api-Key": EVENTS_SECRET})
        assert answer == {"imports_started": 0}
        problem = await api.json(
            "POST",
            f"/api/v1/workspaces/{ws}/imports",
            409,
            key=key,
            json={"source_url": source.url("/file"), "target_key": "mine.bin"},
        )
        assert "being deleted" in problem["detail"]
        assert (await api.json("GET", f"/api/v1/workspaces/{ws}/imports", 200, key=key))["items"] == []
        assert source.authorizations == []  # the source was never asked
    finally:
        finish.set()
        await deletion
