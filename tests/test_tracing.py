"""Tracing: off by default; configured, a request's trace (continued from the caller's
traceparent) reaches an OTLP receiver with spans for the store and the storage, and the
request's log lines carry its trace id."""

from __future__ import annotations

import io
import json
import logging
import sys
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from provider.app import create_app
from provider.config import Settings
from provider.logs import configure_logging
from tests.conftest import ADMIN_KEY

CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{CALLER_TRACE}-00f067aa0ba902b7-01"


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[str, list[Any]]]:
    """An OTLP/HTTP trace receiver, as a collector is: protobuf in, spans kept."""
    spans: list[Any] = []

    async def traces(request: web.Request) -> web.Response:
        assert request.content_type == "application/x-protobuf"
        message = ExportTraceServiceRequest.FromString(await request.read())
        for resource in message.resource_spans:
            service = {a.key: a.value.string_value for a in resource.resource.attributes}
            for scope in resource.scope_spans:
                spans.extend((service, span) for span in scope.spans)
        return web.Response(body=b"", content_type="application/x-protobuf")

    app = web.Application()
    app.router.add_post("/v1/traces", traces)
    server = TestServer(app)
    await server.start_server()
    yield str(server.make_url("")).rstrip("/"), spans
    await server.close()


async def test_a_request_is_traced_through_store_and_storage_and_its_logs_carry_the_trace(
    settings: Settings, receiver: tuple[str, list[Any]]
) -> None:
    endpoint, spans = receiver
    traced = settings.model_copy(
        update={
            "tracing": settings.tracing.model_copy(
                update={"otlp_endpoint": endpoint, "service_name": "provider-test"}
            )
        }
    )
    stream = io.StringIO()
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    configure_logging("INFO", "json", stream)
    try:
        client = TestClient(TestServer(create_app(traced)))
        await client.start_server()
        admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
        me = await (await client.get("/api/v1/me", headers=admin)).json()
        made = await client.post(
            "/api/v1/workspaces",
            json={"tenant_id": me["tenant"]["id"]},
            headers={**admin, "Traceparent": TRACEPARENT},
        )
        assert made.status == 201
        workspace = (await made.json())["id"]
        put = await client.put(f"/api/v1/workspaces/{workspace}/objects/a.txt", data=b"hello", headers=admin)
        assert put.status == 201
        await client.close()  # the service's end exports the last spans
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])

    by_trace: dict[str, list[Any]] = {}
    for service, span in spans:
        assert service["service.name"] == "provider-test"
        by_trace.setdefault(span.trace_id.hex(), []).append(span)
    # The caller's trace goes on here: the server span is the child of the caller's span.
    created = by_trace[CALLER_TRACE]
    server = next(s for s in created if s.name == "POST /api/v1/workspaces")
    assert server.parent_span_id.hex() == "00f067aa0ba902b7"
    attributes = {a.key: a.value for a in server.attributes}
    assert attributes["http.response.status_code"].int_value == 201
    names = {s.name for s in created}
    assert "store.transaction" in names and "storage.create_location" in names, names
    children = [s for s in created if s is not server]
    assert all(s.parent_span_id for s in children)
    # A request without a traceparent starts its own trace, with the storage write in it.
    upload = next(t for t, found in by_trace.items() if any(s.name.startswith("PUT ") for s in found))
    assert "storage.put" in {s.name for s in by_trace[upload]}

    lines = [json.loads(line) for line in stream.getvalue().splitlines() if line.startswith("{")]
    access = [line for line in lines if line.get("logger") == "provider.http"]
    assert any(line.get("trace_id") == CALLER_TRACE and "POST" in line["message"] for line in access), access
    assert any(line.get("trace_id") == upload for line in access)


def test_tracing_is_off_by_default_and_imports_nothing_of_opentelemetry(tmp_path: Any) -> None:
    import subprocess

    probe = (
        "import sys; from provider.app import create_app; from provider.config import Settings; "
        f"create_app(Settings(data_dir='{tmp_path}', auth={{'bootstrap_admin_key': '{ADMIN_KEY}'}})); "
        "print(any(m.startswith('opentelemetry') for m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
