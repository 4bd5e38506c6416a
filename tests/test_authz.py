"""Walk every route with every kind of caller and check the status code each time."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime, timedelta

import pytest

from provider.api.routing import ROUTES, Access
from tests.conftest import ADMIN_KEY, Api


@pytest.fixture
async def callers(api: Api, new_consumer) -> dict[str, str]:  # type: ignore[no-untyped-def]
    owner, other, revoked = await new_consumer("did:web:owner"), await new_consumer(), await new_consumer()
    revoked_me = await api.json("GET", "/api/v1/me", 200, key=revoked.key)
    await api.json(
        "DELETE",
        f"/api/v1/tenants/{revoked.tenant_id}/api-keys/{revoked_me['credential']['id']}",
        204,
        key=ADMIN_KEY,
    )
    short = await api.json(
        "POST",
        f"/api/v1/tenants/{other.tenant_id}/api-keys",
        201,
        key=ADMIN_KEY,
        json={"expires_at": (datetime.now(UTC) + timedelta(seconds=1)).isoformat()},
    )
    owner_me = await api.json("GET", "/api/v1/me", 200, key=owner.key)
    return {
        "owner": owner.key,
        "other": other.key,
        "revoked": revoked.key,
        "expiring": short["key"],
        "owner_tenant": owner.tenant_id,
        "owner_key_id": owner_me["credential"]["id"],
    }


def concrete(path: str, callers: dict[str, str]) -> str:
    values = {
        "tenant_id": callers["owner_tenant"],
        "key_id": callers["owner_key_id"],
        "asset_id": "dummy",
        "version": "1.0.0",
    }
    return re.sub(r"\{(\w+)\}", lambda m: values[m.group(1)], path)


async def test_every_route_with_every_caller(api: Api, callers: dict[str, str]) -> None:
    await asyncio.sleep(1.1)  # let the expiring key expire
    routes = api.app[ROUTES]
    assert len(routes) >= 15
    unauthenticated = {
        "no credential": None,
        "wrong key": "pk." + "x" * 43,
        "not bearer": None,
        "revoked key": callers["revoked"],
        "expired key": callers["expiring"],
    }
    for route in routes:
        path = concrete(route.path, callers)
        if route.access is Access.PUBLIC:
            response = await api.request(route.method, path)
            assert response.status == 200, f"{route.method} {route.path} public: {response.status}"
            continue
        for label, key in unauthenticated.items():
            headers = {"Authorization": "Basic dXNlcjpwdw=="} if label == "not bearer" else {}
            response = await api.request(route.method, path, key=key, headers=headers)
            assert response.status == 401, f"{route.method} {route.path} {label}: {response.status}"
            assert response.headers["WWW-Authenticate"].startswith("Bearer")
        for label in ("owner", "other"):
            response = await api.request(route.method, path, key=callers[label], json={})
            if route.access is Access.ADMIN:
                assert response.status == 403, f"{route.method} {route.path} consumer: {response.status}"
            else:
                assert response.status not in (401, 403), (
                    f"{route.method} {route.path} {label}: {response.status}"
                )


async def test_me_shows_each_caller_only_itself(api: Api, callers: dict[str, str]) -> None:
    owner = await api.json("GET", "/api/v1/me", 200, key=callers["owner"])
    other = await api.json("GET", "/api/v1/me", 200, key=callers["other"])
    assert owner["tenant"]["id"] == callers["owner_tenant"]
    assert other["tenant"]["id"] != callers["owner_tenant"]


async def test_admin_passes_every_guard(api: Api, callers: dict[str, str]) -> None:
    for route in api.app[ROUTES]:
        if route.method != "GET":
            continue
        response = await api.request(route.method, concrete(route.path, callers), key=ADMIN_KEY)
        assert response.status == 200, f"{route.method} {route.path}: {response.status}"
