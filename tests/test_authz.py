"""Walk every route with every kind of caller and check the status code each time."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta

import pytest

from provider.api.routing import ANY_SCOPE, ROUTES, Access, Route
from provider.config import Settings
from tests.conftest import ADMIN_KEY, Api, Consumer, MovableClock

# Routes EDC calls without bearer credentials: a secret path segment or an access code guards them
# (tests/test_edc.py covers them with and without their secret).
SELF_GUARDED = {
    "/edc/{connector}/{secret}/provision",
    "/edc/{connector}/{secret}/dataplane/provision",
    "/api/v1/workspaces/{workspace_id}/access",
    "/edc/events",
}
SIGNALING = "/signaling/v1/"  # control planes' own bearer secrets: no API key or token opens it
SIGNALING_SECRET = "signaling-secret-" + "4d1c8b7a2e9f06354c1d8b7a2e9f0635"
# Streams answer with their headers and then stay open: only the status is read.
STREAMS = {"/api/v1/events"}
PATH_PARAMETER = re.compile(r"\{(\w+)(?::[^}]*)?\}")


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """Subscriptions point at a public address; nothing is sent from these tests. A control plane
    is configured, so that the signaling routes answer rather than being off."""
    return Settings.model_validate(
        {
            **settings.model_dump(mode="json", exclude={"auth"}),
            "auth": {"bootstrap_admin_key": ADMIN_KEY, "key_cache_seconds": 0},
            "server": {**settings.server.model_dump(mode="json"), "public_url": "https://provider.test"},
            "notifications": {"deliver": False},
            "signaling": {"control_planes": {"cp": {"secret": SIGNALING_SECRET}}},
        }
    )


@dataclass
class World:
    owner: Consumer
    other: Consumer
    revoked_key: str
    expired_key: str
    owner_key_id: str


@pytest.fixture
async def world(api: Api, new_consumer, clock: MovableClock) -> World:  # type: ignore[no-untyped-def]
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
        json={"expires_at": (clock() + timedelta(minutes=1)).isoformat()},
    )
    owner_me = await api.json("GET", "/api/v1/me", 200, key=owner.key)
    await api.json("GET", "/api/v1/me", 200, key=short["key"])  # valid until it expires
    clock.advance(120)  # the short key expires
    return World(owner, other, revoked.key, short["key"], owner_me["credential"]["id"])


async def workspace_with_tokens(api: Api, key: str) -> dict[str, str]:
    ws = await api.json("POST", "/api/v1/workspaces", 201, key=key, json={"name": "authz"})
    base = f"/api/v1/workspaces/{ws['id']}"
    full = await api.json("POST", base + "/tokens", 201, key=key, json={})
    read = await api.json("POST", base + "/tokens", 201, key=key, json={"scopes": ["objects:read"]})
    revoked = await api.json("POST", base + "/tokens", 201, key=key, json={})
    await api.json("DELETE", f"{base}/tokens/{revoked['id']}", 204, key=key)
    await api.json("PUT", base + "/objects/data/in.txt", 201, key=key, data=b"hello")
    subscription = await api.json(
        "POST",
        "/api/v1/subscriptions",
        201,
        key=key,
        json={
            "url": "https://93.184.215.14/hook",
            "events": ["execution.*"],
            "filter": {"workspace_id": ws["id"]},
        },
    )
    execution = await api.json(
        "POST",
        "/api/v1/executions",
        201,
        key=key,
        json={"asset_id": "dummy", "workspace_id": ws["id"], "inputs": {"source": "data/in.txt"}},
    )
    deliveries = await api.json("GET", f"/api/v1/subscriptions/{subscription['id']}/deliveries", 200, key=key)
    task = await api.json(
        "POST",
        "/ga4gh/tes/v1/tasks",
        200,
        key=key,
        json={
            "inputs": [{"url": f"workspace://{ws['id']}/data/in.txt", "path": "/data/source"}],
            "executors": [{"image": "asset:dummy", "command": ["python", "-m", "provider.workers.dummy"]}],
        },
    )
    return {
        "task_id": task["id"],
        "id": ws["id"],
        "full": full["token"],
        "read": read["token"],
        "revoked": revoked["token"],
        "full_id": full["id"],
        "execution_id": execution["id"],
        "subscription_id": subscription["id"],
        "delivery_id": deliveries["items"][0]["id"],
    }


def concrete(route: Route, world: World, ws: dict[str, str]) -> str:
    if route.path.startswith("/ga4gh/tes/"):
        return route.path.replace("{id}", ws["task_id"])
    values = {
        "tenant_id": world.owner.tenant_id,
        "key_id": world.owner_key_id,
        "asset_id": "dummy",
        "version": "1.0.0",
        "workspace_id": ws["id"],
        "key": "data/in.txt",
        "token_id": ws["full_id"],
        "import_id": "imp_00000000000000000000000000",
        "execution_id": ws["execution_id"],
        "connector": "main",
        "secret": "not-the-secret",
        "subscription_id": ws["subscription_id"],
        "delivery_id": ws["delivery_id"],
        "id": "process-1",
        "controlplane_id": "cp-1",
    }
    return PATH_PARAMETER.sub(lambda m: values[m.group(1)], route.path)


VALID_BODIES = {
    "/api/v1/workspaces/{workspace_id}/imports": {"source_url": "https://example.org/x", "target_key": "k"},
    "/api/v1/tenants": {"participant_id": "did:web:new"},
    "/api/v1/workspaces/{workspace_id}/links": {"key": "data/in.txt"},
    "/api/v1/workspaces/{workspace_id}/edc-transfers": {"transfer_process_id": "tp", "target_key": "k"},
    "/api/v1/subscriptions": {"url": "https://93.184.215.14/hook", "events": ["workspace.*"]},
    "/api/v1/executions": {
        "asset_id": "dummy",
        "workspace_id": "{workspace_id}",
        "inputs": {"source": "data/in.txt"},
    },
}


REDIRECTS = ("/", "/console")  # to the console's page, for anyone


async def status(
    api: Api, route: Route, path: str, key: str | None, workspace: str = "", **kwargs: object
) -> int:
    """The status for a request with a body that passes validation, so only authorization decides."""
    if route.method in ("POST", "PUT") and "data" not in kwargs:
        if route.path.endswith("{key:.+}"):
            kwargs["data"] = b"bytes"
        else:
            body = VALID_BODIES.get(route.path, {})
            kwargs["json"] = {
                k: (v.replace("{workspace_id}", workspace) if isinstance(v, str) else v)
                for k, v in body.items()
            }
    if route.path in STREAMS:
        headers = dict(kwargs.pop("headers", {}))  # type: ignore[call-overload]
        if key is not None:
            headers["Authorization"] = f"Bearer {key}"
        async with api.client.request(route.method, path, headers=headers) as streamed:
            return streamed.status
    response = await api.request(route.method, path, key=key, **kwargs)  # type: ignore[arg-type]
    return response.status


async def test_every_route_with_every_caller(api: Api, world: World) -> None:
    routes = api.app[ROUTES]
    assert len(routes) >= 30
    # Destructive routes last, so that earlier checks see the resources intact.
    for route in sorted(routes, key=lambda r: r.method == "DELETE"):
        ws = await workspace_with_tokens(api, world.owner.key)
        second = await workspace_with_tokens(api, world.owner.key)  # same tenant, other workspace
        path = concrete(route, world, ws)
        where = f"{route.method} {route.path}"
        if route.path in SELF_GUARDED:  # no bearer credential, but a secret of their own
            got = await status(api, route, path, workspace=ws["id"], key=world.owner.key)
            assert got in (401, 404), f"{where} without its secret: {got}"
            continue
        if route.path.startswith(SIGNALING):  # the secret of a control plane, and nothing else
            for label, key in {
                "no credential": None,
                "owner key": world.owner.key,
                "admin key": ADMIN_KEY,
                "token": ws["full"],
            }.items():
                got = await status(api, route, path, workspace=ws["id"], key=key)
                assert got == 401, f"{where} {label}: {got}"
            continue
        if route.path in REDIRECTS:
            got = await status(api, route, path, workspace=ws["id"], key=None, allow_redirects=False)
            assert got == 302, where
            continue
        if route.access is Access.PUBLIC:
            assert await status(api, route, path, workspace=ws["id"], key=None) == 200, where
            continue
        for label, key in {
            "no credential": None,
            "wrong key": "pk." + "x" * 43,
            "revoked key": world.revoked_key,
            "expired key": world.expired_key,
            "revoked token": ws["revoked"],
            "forged token": ws["full"][:-4] + "AAAA",
        }.items():
            got = await status(api, route, path, workspace=ws["id"], key=key)
            assert got == 401, f"{where} {label}: {got}"
        got = await status(
            api, route, path, workspace=ws["id"], key=None, headers={"Authorization": "Basic dXNlcjpwdw=="}
        )
        assert got == 401, f"{where} basic auth: {got}"

        on_workspace = "{workspace_id}" in route.path or "{execution_id}" in route.path
        consumer_expectation = {
            "other tenant's key": (world.other.key, 404 if on_workspace else None),
            "token of another workspace": (second["full"], 404 if on_workspace else None),
        }
        if route.access is Access.ADMIN:
            for label, key in (
                ("owner key", world.owner.key),
                ("other key", world.other.key),
                ("token", ws["full"]),
            ):
                got = await status(api, route, path, workspace=ws["id"], key=key)
                assert got == 403, f"{where} {label}: {got}"
            continue
        if route.token_scope is None:
            for label, key in (("token", ws["full"]), ("read token", ws["read"])):
                got = await status(api, route, path, workspace=ws["id"], key=key)
                assert got == 403, f"{where} {label} on an API-key-only route: {got}"
        else:
            if route.token_scope not in (ANY_SCOPE, "objects:read"):
                got = await status(api, route, path, workspace=ws["id"], key=ws["read"])
                assert got == 403, f"{where} read-only token: {got}"
            for label, (key, expected) in consumer_expectation.items():
                if label.startswith("token"):
                    got = await status(api, route, path, workspace=ws["id"], key=key)
                    if expected is not None:
                        assert got == expected, f"{where} {label}: {got}"
                    else:
                        assert got not in (401, 403), f"{where} {label}: {got}"
        got = await status(api, route, path, workspace=ws["id"], key=world.other.key)
        expected = consumer_expectation["other tenant's key"][1]
        if expected is not None:
            assert got == expected, f"{where} other tenant's key: {got}"
        else:
            assert got not in (401, 403), f"{where} other tenant's key: {got}"
        got = await status(api, route, path, workspace=ws["id"], key=world.owner.key)
        assert got not in (401, 403), f"{where} owner key: {got}"


async def test_me_shows_each_caller_only_itself(api: Api, world: World) -> None:
    owner = await api.json("GET", "/api/v1/me", 200, key=world.owner.key)
    other = await api.json("GET", "/api/v1/me", 200, key=world.other.key)
    assert owner["tenant"]["id"] == world.owner.tenant_id
    assert other["tenant"]["id"] == world.other.tenant_id


async def test_admin_passes_every_guard_and_sees_every_tenant(api: Api, world: World) -> None:
    ws = await workspace_with_tokens(api, world.owner.key)
    for route in api.app[ROUTES]:
        if (
            route.method != "GET"
            or "import_id" in route.path
            or route.path in SELF_GUARDED
            or route.path.startswith(SIGNALING)
        ):
            continue
        if route.path in REDIRECTS:
            got = await status(api, route, route.path, ADMIN_KEY, allow_redirects=False)
            assert got == 302, route.path
            continue
        got = await status(api, route, concrete(route, world, ws), ADMIN_KEY)
        assert got == 200, f"{route.method} {route.path}: {got}"
