"""Shared fixtures: settings in a temporary data directory, stores on SQLite and PostgreSQL,
and an HTTP client whose every response is checked against contracts/openapi.yaml."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import pytest
from aiohttp import ClientResponse, web
from aiohttp.test_utils import TestClient

from provider.app import create_app
from provider.backends.sql import SqlStore, default_sqlite_url
from provider.backends.sql import migrate as migrations
from provider.config import Settings
from tests.contract import OpenApiContract

REPO = Path(__file__).resolve().parents[1]
POSTGRES_URL = os.environ.get(
    "PROVIDER_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)
ADMIN_KEY = "test-admin-key-" + "a" * 32


def postgres_enabled() -> bool:
    return POSTGRES_URL.lower() not in ("", "none", "off")


@pytest.fixture(scope="session")
def contract() -> OpenApiContract:
    return OpenApiContract.load()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        auth={"bootstrap_admin_key": ADMIN_KEY, "key_cache_seconds": 0},
        assets={"directory": REPO / "config" / "assets"},
    )


async def _postgres_store() -> AsyncIterator[SqlStore]:
    """A store in a fresh PostgreSQL schema, dropped afterwards."""
    schema = f"test_{uuid.uuid4().hex[:16]}"
    admin = await asyncpg.connect(POSTGRES_URL.replace("postgresql+asyncpg", "postgresql"))
    try:
        await admin.execute(f'CREATE SCHEMA "{schema}"')
        store = SqlStore(POSTGRES_URL, schema=schema, pool_size=5)
        try:
            await migrations.upgrade(store)
            yield store
        finally:
            await store.close()
    finally:
        await admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await admin.close()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[SqlStore]:
    if request.param == "sqlite":
        sqlite = SqlStore(default_sqlite_url(tmp_path))
        await migrations.upgrade(sqlite)
        yield sqlite
        await sqlite.close()
        return
    if not postgres_enabled():
        pytest.skip("PROVIDER_TEST_POSTGRES_URL is off")
    async for pg in _postgres_store():
        yield pg


@dataclass
class Api:
    """A test client that checks every response against the OpenAPI contract."""

    client: TestClient[web.Request, web.Application]
    contract: OpenApiContract
    app: web.Application

    async def request(
        self, method: str, path: str, *, key: str | None = None, check: bool = True, **kwargs: Any
    ) -> ClientResponse:
        headers = dict(kwargs.pop("headers", {}))
        if key is not None:
            headers["Authorization"] = f"Bearer {key}"
        response = await self.client.request(method, path, headers=headers, **kwargs)
        body = await response.read()
        if check:
            problems = self.contract.check_response(
                method, urlsplit(path).path, response.status, response.content_type, body
            )
            assert not problems, "response breaks the contract:\n" + "\n".join(problems)
        return response

    async def json(self, method: str, path: str, status: int, **kwargs: Any) -> Any:
        """Request, assert the status, return the decoded JSON body."""
        response = await self.request(method, path, **kwargs)
        text = await response.text()
        assert response.status == status, f"{method} {path}: {response.status} {text}"
        return await response.json(content_type=None) if text else None


@pytest.fixture
async def api(
    aiohttp_client: Callable[[web.Application], Awaitable[TestClient[web.Request, web.Application]]],
    settings: Settings,
    contract: OpenApiContract,
) -> Api:
    app = create_app(settings)
    client = await aiohttp_client(app)
    return Api(client, contract, app)


@dataclass
class Consumer:
    tenant_id: str
    key: str


@pytest.fixture
def new_consumer(api: Api) -> Callable[[str], Awaitable[Consumer]]:
    """Create a tenant with a consumer key through the API."""

    async def make(participant: str = "") -> Consumer:
        participant = participant or f"did:web:{uuid.uuid4().hex[:8]}.example"
        tenant = await api.json(
            "POST", "/api/v1/tenants", 201, key=ADMIN_KEY, json={"participant_id": participant}
        )
        issued = await api.json(
            "POST", f"/api/v1/tenants/{tenant['id']}/api-keys", 201, key=ADMIN_KEY, json={"name": "test"}
        )
        return Consumer(tenant["id"], issued["key"])

    return make
