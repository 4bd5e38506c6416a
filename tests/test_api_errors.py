"""Bad input gets a 4xx problem naming the field; nothing is written; never a 500."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest

from provider.api.routing import ROUTES
from provider.app import create_app
from provider.backends.sql import SqlStore
from provider.config import ServerSettings, Settings
from provider.server import start
from tests.conftest import ADMIN_KEY, Api
from tests.contract import OpenApiContract


async def tenant_count(api: Api) -> int:
    page = await api.json("GET", "/api/v1/tenants?page_size=500", 200, key=ADMIN_KEY)
    return len(page["items"])


@pytest.mark.parametrize(
    ("body", "status", "field", "words"),
    [
        ('{"participant_id": ', 400, "body", "not valid JSON"),
        ("\xff\xfe", 400, "body", "not valid JSON"),
        ('{"participant_id": 7}', 422, "body.participant_id", "valid string"),
        ('{"participant_id": "x", "colour": "red"}', 422, "body.colour", "Extra inputs"),
        ("{}", 422, "body.participant_id", "Field required"),
        ("[]", 422, "body", "valid dictionary"),
        ('{"participant_id": ""}', 422, "body.participant_id", "at least 1 character"),
    ],
)
async def test_bad_bodies_name_the_field(api: Api, body: str, status: int, field: str, words: str) -> None:
    before = await tenant_count(api)
    problem = await api.json(
        "POST",
        "/api/v1/tenants",
        status,
        key=ADMIN_KEY,
        data=body.encode("latin-1"),
        headers={"Content-Type": "application/json"},
    )
    assert problem["status"] == status
    assert any(e["field"] == field and words in e["message"] for e in problem["errors"]), problem
    assert await tenant_count(api) == before


async def test_wrong_content_type_is_415(api: Api) -> None:
    response = await api.request(
        "POST",
        "/api/v1/tenants",
        key=ADMIN_KEY,
        data="participant_id=x",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status == 415
    assert response.content_type == "application/problem+json"
    assert "application/json" in (await response.json())["detail"]


async def test_oversize_body_is_413_and_writes_nothing(api: Api) -> None:
    before = await tenant_count(api)
    big = '{"participant_id": "' + "x" * (2 * 1024 * 1024) + '"}'
    response = await api.request(
        "POST", "/api/v1/tenants", key=ADMIN_KEY, data=big, headers={"Content-Type": "application/json"}
    )
    assert response.status == 413
    assert (await response.json())["type"] == "about:blank"
    assert await tenant_count(api) == before


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("page_size=0", "query.page_size"),
        ("page_size=many", "query.page_size"),
        ("page_size=501", "query.page_size"),
        ("page_token=%%%", "query.page_token"),
        ("page_token=WyJ4Il0", "query.page_token"),  # a token of the wrong shape for this list
        ("colour=red", "query.colour"),
    ],
)
async def test_bad_query_parameters_are_400(api: Api, query: str, field: str) -> None:
    problem = await api.json("GET", f"/api/v1/assets?{query}", 400, key=ADMIN_KEY)
    assert [e["field"] for e in problem["errors"]] == [field]


async def test_unknown_path_and_method_answer_problem_json(api: Api) -> None:
    missing = await api.request("GET", "/api/v1/nothing-here")
    assert missing.status == 404 and missing.content_type == "application/problem+json"
    wrong = await api.request("PATCH", "/api/v1/tenants", key=ADMIN_KEY)
    assert wrong.status == 405 and wrong.content_type == "application/problem+json"
    assert set(wrong.headers["Allow"].split(",")) == {"GET", "POST"}


async def test_request_id_is_echoed_and_generated(api: Api) -> None:
    given = await api.request("GET", "/healthz", headers={"X-Request-ID": "abc-123"})
    assert given.headers["X-Request-ID"] == "abc-123"
    made = await api.request("GET", "/healthz", headers={"X-Request-ID": "bad id with spaces\u00e9"})
    assert (
        made.headers["X-Request-ID"] != "bad id with spaces\u00e9" and len(made.headers["X-Request-ID"]) == 32
    )
    problem = await api.json(
        "GET", "/api/v1/assets/none", 404, key=ADMIN_KEY, headers={"X-Request-ID": "r-1"}
    )
    assert problem["request_id"] == "r-1"


async def test_every_json_route_refuses_bad_bodies_without_a_500(api: Api, contract: OpenApiContract) -> None:
    operator = (await api.json("GET", "/api/v1/me", 200, key=ADMIN_KEY))["tenant"]["id"]
    ws = await api.json("POST", "/api/v1/workspaces", 201, key=ADMIN_KEY, json={"tenant_id": operator})
    values = {"tenant_id": operator, "asset_id": "dummy", "version": "1.0.0", "workspace_id": ws["id"]}
    json_routes = []
    for route in api.app[ROUTES]:
        if route.path.startswith(("/edc/", "/signaling/", "/ga4gh/")):
            continue  # 400 for every malformed body (tests/test_edc.py, test_signaling.py, test_tes.py)
        path = re.sub(r"\{(\w+)(?::[^}]*)?\}", lambda m: values.get(m.group(1), "x"), route.path)
        operation = contract.operation(route.method, path)
        assert operation is not None
        content = operation.spec.get("requestBody", {}).get("content", {})
        if "application/json" in content:
            json_routes.append((route, path))
    assert len(json_routes) >= 6
    cases = [
        ("malformed", b"{", "application/json", 400),
        (
            "wrong type",
            b'{"title": 5, "participant_id": 5, "role": 5, "name": 5, "source_url": 5}',
            "application/json",
            422,
        ),
        ("not an object", b"[1]", "application/json", 422),
        ("content type", b"{}", "text/plain", 415),
        ("oversize", b'{"x": "' + b"y" * (1024 * 1024 + 10) + b'"}', "application/json", 413),
    ]
    for route, path in json_routes:
        for label, body, content_type, status in cases:
            response = await api.request(
                route.method, path, key=ADMIN_KEY, data=body, headers={"Content-Type": content_type}
            )
            assert response.status == status, f"{route.method} {route.path} {label}: {response.status}"
            assert response.content_type == "application/problem+json"
    # Nothing was written by any of them.
    assert (await api.json("GET", "/api/v1/assets/dummy", 200, key=ADMIN_KEY))["title"] == "Dummy job"
    assert await tenant_count(api) == 1
    workspaces = await api.json("GET", "/api/v1/workspaces", 200, key=ADMIN_KEY)
    assert [w["id"] for w in workspaces["items"]] == [ws["id"]]


# --- inputs found by fuzzing: each answered 500 before --------------------------------------

DEEP_ARRAYS = b"[" * 1000 + b"]" * 1000  # RecursionError in the JSON parser
DEEP_OBJECTS = b'{"a":' * 1000 + b"1" + b"}" * 1000
ONE_TOO_DEEP = b"[" * 65 + b"]" * 65  # the limit is 64 levels
HUGE_INTEGER = b'{"participant_id": "x", "name": ' + b"9" * 5000 + b"}"  # ValueError past 4300 digits
JSON_LIMIT_CASES = [
    ("1000 nested arrays", DEEP_ARRAYS),
    ("1000 nested objects", DEEP_OBJECTS),
    ("65 nested arrays", ONE_TOO_DEEP),
    ("5000-digit integer", HUGE_INTEGER),
    ("integer beyond 64 bits", b'{"participant_id": "x", "name": 9223372036854775808}'),
    ("NaN", b'{"participant_id": "x", "name": NaN}'),
    ("infinite number", b'{"participant_id": "x", "name": 1e999}'),
]


async def test_every_json_route_refuses_json_beyond_the_limits_with_400(
    api: Api, contract: OpenApiContract
) -> None:
    operator = (await api.json("GET", "/api/v1/me", 200, key=ADMIN_KEY))["tenant"]["id"]
    ws = await api.json("POST", "/api/v1/workspaces", 201, key=ADMIN_KEY, json={"tenant_id": operator})
    values = {"tenant_id": operator, "asset_id": "dummy", "version": "1.0.0", "workspace_id": ws["id"]}
    checked = 0
    for route in api.app[ROUTES]:
        if route.path.startswith(("/edc/", "/signaling/", "/ga4gh/")):
            continue  # tests/test_edc.py and tests/test_signaling.py send these
        path = re.sub(r"\{(\w+)(?::[^}]*)?\}", lambda m: values.get(m.group(1), "x"), route.path)
        operation = contract.operation(route.method, path)
        assert operation is not None
        if "application/json" not in operation.spec.get("requestBody", {}).get("content", {}):
            continue
        checked += 1
        for label, body in JSON_LIMIT_CASES:
            response = await api.request(
                route.method, path, key=ADMIN_KEY, data=body, headers={"Content-Type": "application/json"}
            )
            assert response.status == 400, f"{route.method} {route.path} {label}: {response.status}"
            problem = await response.json(content_type="application/problem+json")
            assert problem["type"] == "urn:provider:problem:malformed-json", problem
            assert problem["errors"][0]["field"] == "body"
    assert checked >= 6
    assert await tenant_count(api) == 1


async def test_64_levels_and_64_bit_integers_are_still_read(api: Api) -> None:
    nested: Any = "x"
    for _ in range(62):
        nested = [nested]
    body = {"participant_id": "did:web:deep", "display_name": "d", "colour": nested}
    problem = await api.json("POST", "/api/v1/tenants", 422, key=ADMIN_KEY, json=body)  # 64 levels
    assert [e["field"] for e in problem["errors"]] == ["body.colour"]  # refused by the model, not the parser
    big = await api.json(
        "POST",
        "/api/v1/tenants",
        422,
        key=ADMIN_KEY,
        data=b'{"participant_id": 9223372036854775807}',
        headers={"Content-Type": "application/json"},
    )
    assert [e["field"] for e in big["errors"]] == ["body.participant_id"]


@pytest.fixture
async def store_api(
    store: SqlStore, aiohttp_client: Any, settings: Settings, contract: OpenApiContract
) -> Api:
    """The API over the parametrized store, SQLite and PostgreSQL (set up first so that it is
    dropped only after the app has stopped)."""
    app = create_app(settings, store=store)
    client = await aiohttp_client(app)
    return Api(client, contract, app)


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/api/v1/tenants", {"participant_id": "did:web:a\u0000b"}, "body.participant_id"),
        ("/api/v1/tenants", {"participant_id": "p", "display_name": "\u0000"}, "body.display_name"),
        ("/api/v1/workspaces", {"name": "study\u0000"}, "body.name"),
        ("/api/v1/workspaces", {"labels": {"team": "a\u0000"}}, "body.labels.team"),
        ("/api/v1/workspaces", {"labels": {"te\u0000am": "a"}}, "body.labels"),
        ("/api/v1/tenants/{tenant}/api-keys", {"name": "laptop\u0000"}, "body.name"),
        (
            "/api/v1/tenants/{tenant}",
            {"allowed_assets": ["dummy", "x\u0000"]},
            "body.allowed_assets.1",
        ),
    ],
)
async def test_nul_in_any_json_string_is_422_on_every_store(
    store_api: Api, path: str, body: dict[str, Any], field: str
) -> None:
    operator = (await store_api.json("GET", "/api/v1/me", 200, key=ADMIN_KEY))["tenant"]["id"]
    method = "PATCH" if path == "/api/v1/tenants/{tenant}" else "POST"
    if path == "/api/v1/workspaces":
        body = {**body, "tenant_id": operator}
    problem = await store_api.json(method, path.format(tenant=operator), 422, key=ADMIN_KEY, json=body)
    assert problem["type"] == "urn:provider:problem:validation-error"
    assert [e["field"] for e in problem["errors"]] == [field]
    assert "must not contain NUL" in problem["errors"][0]["message"]
    assert await tenant_count(store_api) == 1
    assert (await store_api.json("GET", "/api/v1/workspaces", 200, key=ADMIN_KEY))["items"] == []
    keys = await store_api.json("GET", f"/api/v1/tenants/{operator}/api-keys", 200, key=ADMIN_KEY)
    assert all("\u0000" not in k["name"] for k in keys["items"])


@pytest.mark.parametrize(
    ("path", "status", "field"),
    [
        ("/api/v1/tenants/ten_%00x", 404, "path.tenant_id"),  # names nothing
        ("/api/v1/workspaces/ws_%00x", 404, "path.workspace_id"),
        ("/api/v1/assets/x%00", 404, "path.asset_id"),
        ("/api/v1/workspaces/{ws}/imports/imp_%00", 404, "path.import_id"),
        ("/api/v1/executions/ex_%00", 404, "path.execution_id"),
        ("/api/v1/executions?asset_id=%00", 400, "query.asset_id"),
        ("/api/v1/executions?label=a%3D%00", 400, "query.label"),
        (
            "/api/v1/tenants?page_token=" + base64.urlsafe_b64encode(b'["\\u0000"]').decode(),
            400,
            "query.page_token",
        ),
        (
            "/api/v1/tenants?page_token=" + base64.urlsafe_b64encode(b"[" * 1000).decode(),
            400,
            "query.page_token",
        ),
    ],
)
async def test_nul_in_a_path_segment_or_query_is_refused_on_every_store(
    store_api: Api, path: str, status: int, field: str
) -> None:
    operator = (await store_api.json("GET", "/api/v1/me", 200, key=ADMIN_KEY))["tenant"]["id"]
    ws = await store_api.json("POST", "/api/v1/workspaces", 201, key=ADMIN_KEY, json={"tenant_id": operator})
    problem = await store_api.json("GET", path.format(ws=ws["id"]), status, key=ADMIN_KEY)
    assert [e["field"] for e in problem["errors"]] == [field], problem


@pytest.mark.parametrize("value", ["0.5", "1700000000", "2026-01-01", "2026-01-01T00:00:00", "tomorrow"])
async def test_date_time_query_parameters_take_rfc_3339_only(api: Api, value: str) -> None:
    problem = await api.json("GET", f"/api/v1/executions?created_after={value}", 400, key=ADMIN_KEY)
    assert [e["field"] for e in problem["errors"]] == ["query.created_after"]
    for good in ("2026-01-01T00:00:00Z", "2026-01-01T00:00:00.5%2B02:00", "2026-01-01t00:00:00z"):
        await api.json("GET", f"/api/v1/executions?created_before={good}", 200, key=ADMIN_KEY)


@pytest.mark.parametrize("value", [0.5, 1893456000, "1893456000", "2030-01-01"])
async def test_date_time_body_fields_take_rfc_3339_only(api: Api, value: Any) -> None:
    operator = (await api.json("GET", "/api/v1/me", 200, key=ADMIN_KEY))["tenant"]["id"]
    problem = await api.json(
        "POST", f"/api/v1/tenants/{operator}/api-keys", 422, key=ADMIN_KEY, json={"expires_at": value}
    )
    assert [e["field"] for e in problem["errors"]] == ["body.expires_at"]
    await api.json(
        "POST",
        f"/api/v1/tenants/{operator}/api-keys",
        201,
        key=ADMIN_KEY,
        json={"expires_at": "2030-01-01T00:00:00Z"},
    )


# --- requests aiohttp cannot parse, and clients that leave: over raw sockets ------------------


@asynccontextmanager
async def served(settings: Settings) -> AsyncIterator[int]:
    """The service as `provider serve` runs it (provider.server.start) on a free loopback port."""
    server = ServerSettings.model_validate({**settings.server.model_dump(), "port": 0})
    app = create_app(settings.model_copy(update={"server": server}))
    runner, site = await start(app, server)
    try:
        yield site.port
    finally:
        await runner.cleanup()


async def exchange(port: int, *parts: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send `parts` (after the first, each once the server has answered 100 Continue), read until
    the server closes the connection; the final response's status, headers and body."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for index, part in enumerate(parts):
            if index:
                assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 100")
            writer.write(part)
        head = await reader.readuntil(b"\r\n\r\n")
        body = await reader.read()
    finally:
        writer.close()
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines if line)}
    return int(status_line.split()[1]), headers, body


MALFORMED = [
    ("request line too long", b"GET /" + b"a" * 10_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"),
    ("header too long", b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 10_000 + b"\r\n\r\n"),
    ("bad Content-Length", b"POST /api/v1/tenants HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n"),
    (
        "two Content-Lengths",
        b"POST /api/v1/tenants HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
    ),
    (
        "bad chunk size",
        b"POST /api/v1/tenants HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"zz\r\nabc\r\n0\r\n\r\n",
    ),
    ("bad HTTP version", b"GET /healthz HTTP/9.9\r\nHost: x\r\n\r\n"),
    ("not HTTP", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n"),
]


def client_error_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if r.levelno >= logging.WARNING and r.name.startswith(("provider", "aiohttp"))
    ]


async def test_requests_aiohttp_cannot_parse_get_problem_json_and_one_warning_per_kind(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    async with served(settings) as port:
        for label, data in MALFORMED:
            for _ in range(3):
                status, headers, body = await exchange(port, data)
                assert status == 400, label
                assert headers["content-type"].startswith("application/problem+json"), label
                problem = json.loads(body)
                assert (
                    problem["status"] == 400 and problem["type"] == "urn:provider:problem:malformed-request"
                )
    lines = client_error_lines(caplog)
    assert lines, "nothing logged"
    assert all(r.levelno == logging.WARNING and r.exc_info is None for r in lines), [
        (r.levelname, r.getMessage()[:80]) for r in lines
    ]
    kinds = [getattr(r, "kind", None) for r in lines]
    assert len(kinds) == len(set(kinds)) < len(MALFORMED) * 3, kinds  # one line per kind at most


async def test_bad_chunked_encoding_after_the_headers_is_400_at_once_and_stores_nothing(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    async with served(settings) as port:
        operator = await served_request(port, "GET", "/api/v1/me")
        ws = await served_request(port, "POST", "/api/v1/workspaces", {"tenant_id": operator["tenant"]["id"]})
        head = (
            f"PUT /api/v1/workspaces/{ws['id']}/objects/k HTTP/1.1\r\nHost: x\r\n"
            f"Authorization: Bearer {ADMIN_KEY}\r\nExpect: 100-continue\r\n"
            "Transfer-Encoding: chunked\r\n\r\n"
        ).encode()
        # The handler is reading the body (100 Continue came) when the bad chunk arrives: it
        # used to wait for the rest of a body that could never come.
        status, _, body = await exchange(port, head, b"3\r\nabc\r\nzz\r\n")
        assert status == 400 and json.loads(body)["type"] == "urn:provider:problem:malformed-request"
        listed = await served_request(port, "GET", f"/api/v1/workspaces/{ws['id']}/objects")
        assert listed["items"] == []
    assert [r for r in client_error_lines(caplog) if r.levelno >= logging.ERROR] == []


async def test_clients_that_leave_mid_request_are_one_warning_without_traceback(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    async with served(settings) as port:
        operator = await served_request(port, "GET", "/api/v1/me")
        ws = await served_request(port, "POST", "/api/v1/workspaces", {"tenant_id": operator["tenant"]["id"]})
        for attempt in range(5):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(
                (
                    f"PUT /api/v1/workspaces/{ws['id']}/objects/k{attempt} HTTP/1.1\r\nHost: x\r\n"
                    f"Authorization: Bearer {ADMIN_KEY}\r\nExpect: 100-continue\r\n"
                    "Content-Length: 100000\r\n\r\n"
                ).encode()
            )
            assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 100")
            writer.write(b"abc")
            await writer.drain()
            watch = LogWatch(lambda r: getattr(r, "status", None) == 499)
            logging.getLogger("provider.http").addHandler(watch)
            try:
                writer.close()  # mid-body
                await writer.wait_closed()
                async with asyncio.timeout(60):
                    await watch.seen.wait()
            finally:
                logging.getLogger("provider.http").removeHandler(watch)
        listed = await served_request(port, "GET", f"/api/v1/workspaces/{ws['id']}/objects")
        assert listed["items"] == []
    lines = client_error_lines(caplog)
    assert [(r.levelname, getattr(r, "kind", None), r.exc_info) for r in lines] == [
        ("WARNING", "client-disconnected", None)
    ]


async def served_request(port: int, method: str, path: str, body: Any = None) -> Any:
    async with (
        aiohttp.ClientSession() as session,
        session.request(
            method,
            f"http://127.0.0.1:{port}{path}",
            json=body,
            headers={"Authorization": f"Bearer {ADMIN_KEY}"},
        ) as response,
    ):
        assert response.status < 300, await response.text()
        return await response.json()


class LogWatch(logging.Handler):
    """Sets `seen` once a record matches (the server handles a hang-up in its own time)."""

    def __init__(self, match: Any) -> None:
        super().__init__()
        self.match = match
        self.seen = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if self.match(record):
            self.seen.set()
