"""Health, readiness, metrics and the offline API docs."""

from __future__ import annotations

import re

import pytest

from provider.api.context import CONTEXT
from tests.conftest import ADMIN_KEY, Api


async def test_healthz_and_readyz(api: Api) -> None:
    assert (await api.json("GET", "/healthz", 200))["status"] == "ok"
    assert await api.json("GET", "/readyz", 200) == {"status": "ready"}


async def test_readyz_is_503_when_the_store_is_unreachable(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    async def broken() -> None:
        raise ConnectionRefusedError("database down")

    monkeypatch.setattr(api.app[CONTEXT].store, "ping", broken)
    problem = await api.json("GET", "/readyz", 503)
    assert problem["type"] == "urn:provider:problem:not-ready"
    assert (await api.json("GET", "/healthz", 200))["status"] == "ok"


async def test_metrics_count_requests_by_route_template_and_status(api: Api) -> None:
    await api.json("GET", "/api/v1/assets/dummy", 200, key=ADMIN_KEY)
    await api.json("GET", "/api/v1/assets/nothing", 404, key=ADMIN_KEY)
    await api.json("GET", "/api/v1/assets/nothing", 404, key=ADMIN_KEY)
    text = await (await api.request("GET", "/metrics")).text()
    counted = {
        m.group(1): float(m.group(2))
        for m in re.finditer(r"provider_http_requests_total\{(.*?)\} ([0-9.]+)", text)
    }
    assert counted['method="GET",route="/api/v1/assets/{asset_id}",status="404"'] == 2
    assert counted['method="GET",route="/api/v1/assets/{asset_id}",status="200"'] == 1
    assert "provider_http_request_duration_seconds_bucket" in text


async def test_docs_render_offline_from_packaged_assets(api: Api) -> None:
    page = await (await api.request("GET", "/docs")).text()
    sources = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert sources and all(s.startswith("/docs/static/") for s in sources), sources
    for source in sources:
        response = await api.request("GET", source, check=False)  # static files, not API operations
        assert response.status == 200 and len(await response.read()) > 1000, source
    assert '"/openapi.json"' in page
