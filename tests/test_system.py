"""Health, readiness, metrics and the offline API docs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from provider.api.context import CONTEXT
from tests.conftest import ADMIN_KEY, Api


async def test_healthz_and_readyz(api: Api) -> None:
    assert (await api.json("GET", "/healthz", 200))["status"] == "ok"
    assert await api.json("GET", "/readyz", 200) == {
        "status": "ready",
        "checks": {"store": {"ready": True}, "storage": {"ready": True}, "compute": {"ready": True}},
    }


@pytest.mark.parametrize("dependency", ["store", "storage", "compute"])
async def test_readyz_is_503_naming_the_dependency_that_is_down(
    api: Api, monkeypatch: pytest.MonkeyPatch, dependency: str
) -> None:
    async def broken() -> None:
        raise ConnectionRefusedError("down")

    context = api.app[CONTEXT]
    target = {
        "store": context.store,
        "storage": context.workspaces.storage,
        "compute": context.executions.compute,
    }
    monkeypatch.setattr(target[dependency], "ping", broken)
    problem = await api.json("GET", "/readyz", 503)
    assert problem["type"] == "urn:provider:problem:not-ready"
    assert problem["detail"] == f"not ready: {dependency} unavailable"
    assert problem["checks"][dependency] == {"ready": False, "error": "ConnectionRefusedError"}
    assert all(v == {"ready": True} for k, v in problem["checks"].items() if k != dependency)
    assert (await api.json("GET", "/healthz", 200))["status"] == "ok"


async def test_an_s3_endpoint_that_does_not_answer_stops_start_up_naming_the_key(
    aiohttp_client, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    from provider.app import create_app
    from provider.config import ConfigError, Settings
    from tests.conftest import free_port

    settings = Settings(
        data_dir=tmp_path / "data",
        auth={"bootstrap_admin_key": ADMIN_KEY},
        storage={
            "backend": "s3",
            "s3": {
                "endpoint_url": f"http://127.0.0.1:{free_port()}",  # nothing listens there
                "access_key_id": "AKIAEXAMPLEEXAMPLE00",
                "secret_access_key": "not-a-real-secret-key-but-long-enough-000",
            },
        },
    )
    with pytest.raises(
        ConfigError, match=r"^storage\.s3\.endpoint_url: cannot use the S3 server at http://127"
    ):
        await aiohttp_client(create_app(settings))


def test_a_malformed_s3_endpoint_is_a_configuration_error() -> None:
    from provider.config import ConfigError, load_settings

    with pytest.raises(ConfigError, match=r"storage\.s3\.endpoint_url: .*not an http:// or https:// URL"):
        load_settings(None, storage={"backend": "s3", "s3": {"endpoint_url": "htp//s3"}})


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
