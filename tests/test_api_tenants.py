"""Tenants, API keys and `me` through the HTTP API."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tests.conftest import ADMIN_KEY, Api


async def test_admin_creates_tenant_and_consumer_key_that_works_once_shown(api: Api) -> None:
    tenant = await api.json(
        "POST",
        "/api/v1/tenants",
        201,
        key=ADMIN_KEY,
        json={"participant_id": "did:web:alice.example", "display_name": "Alice"},
    )
    assert tenant["participant_id"] == "did:web:alice.example" and tenant["display_name"] == "Alice"
    assert await api.json("GET", f"/api/v1/tenants/{tenant['id']}", 200, key=ADMIN_KEY) == tenant

    issued = await api.json("POST", f"/api/v1/tenants/{tenant['id']}/api-keys", 201, key=ADMIN_KEY, json={})
    assert issued["role"] == "consumer" and issued["key"].startswith("pk.")
    assert issued["key"].startswith(issued["prefix"])

    me = await api.json("GET", "/api/v1/me", 200, key=issued["key"])
    assert me["tenant"]["id"] == tenant["id"] and me["role"] == "consumer"
    assert me["credential"] == {"kind": "api_key", "id": issued["id"]}

    listed = await api.json("GET", f"/api/v1/tenants/{tenant['id']}/api-keys", 200, key=ADMIN_KEY)
    assert [k["id"] for k in listed["items"]] == [issued["id"]]
    assert "key" not in listed["items"][0]  # the secret is never shown again


async def test_duplicate_participant_is_409_and_writes_nothing(api: Api) -> None:
    await api.json("POST", "/api/v1/tenants", 201, key=ADMIN_KEY, json={"participant_id": "bpn:1"})
    problem = await api.json("POST", "/api/v1/tenants", 409, key=ADMIN_KEY, json={"participant_id": "bpn:1"})
    assert "bpn:1" in problem["detail"]
    page = await api.json("GET", "/api/v1/tenants", 200, key=ADMIN_KEY)
    assert [t["participant_id"] for t in page["items"]].count("bpn:1") == 1


async def test_display_name_defaults_to_participant(api: Api) -> None:
    tenant = await api.json("POST", "/api/v1/tenants", 201, key=ADMIN_KEY, json={"participant_id": "bpn:2"})
    assert tenant["display_name"] == "bpn:2"


async def test_revoked_key_stops_working_at_once(api: Api, new_consumer) -> None:  # type: ignore[no-untyped-def]
    consumer = await new_consumer()
    await api.json("GET", "/api/v1/me", 200, key=consumer.key)
    me = await api.json("GET", "/api/v1/me", 200, key=consumer.key)
    await api.json(
        "DELETE",
        f"/api/v1/tenants/{consumer.tenant_id}/api-keys/{me['credential']['id']}",
        204,
        key=ADMIN_KEY,
    )
    problem = await api.json("GET", "/api/v1/me", 401, key=consumer.key)
    assert problem["type"] == "urn:provider:problem:unauthenticated"
    # Revoking again is harmless; the list shows the revocation time.
    await api.json(
        "DELETE",
        f"/api/v1/tenants/{consumer.tenant_id}/api-keys/{me['credential']['id']}",
        204,
        key=ADMIN_KEY,
    )
    keys = await api.json("GET", f"/api/v1/tenants/{consumer.tenant_id}/api-keys", 200, key=ADMIN_KEY)
    assert keys["items"][0]["revoked_at"] is not None


async def test_revoking_a_key_through_another_tenant_path_is_404(api: Api, new_consumer) -> None:  # type: ignore[no-untyped-def]
    a, b = await new_consumer(), await new_consumer()
    me = await api.json("GET", "/api/v1/me", 200, key=a.key)
    await api.json(
        "DELETE", f"/api/v1/tenants/{b.tenant_id}/api-keys/{me['credential']['id']}", 404, key=ADMIN_KEY
    )
    await api.json("GET", "/api/v1/me", 200, key=a.key)


async def test_key_with_expiry_works_until_then(api: Api, new_consumer) -> None:  # type: ignore[no-untyped-def]
    consumer = await new_consumer()
    soon = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    issued = await api.json(
        "POST",
        f"/api/v1/tenants/{consumer.tenant_id}/api-keys",
        201,
        key=ADMIN_KEY,
        json={"expires_at": soon},
    )
    await api.json("GET", "/api/v1/me", 200, key=issued["key"])
    past = (datetime.now(UTC) - timedelta(seconds=1)).isoformat()
    problem = await api.json(
        "POST",
        f"/api/v1/tenants/{consumer.tenant_id}/api-keys",
        422,
        key=ADMIN_KEY,
        json={"expires_at": past},
    )
    assert problem["errors"][0]["field"] == "body.expires_at"
    naive = await api.json(
        "POST",
        f"/api/v1/tenants/{consumer.tenant_id}/api-keys",
        422,
        key=ADMIN_KEY,
        json={"expires_at": "2030-01-01T00:00:00"},
    )
    assert naive["errors"][0]["field"] == "body.expires_at"


async def test_admin_keys_only_for_the_operator_tenant(api: Api, new_consumer) -> None:  # type: ignore[no-untyped-def]
    consumer = await new_consumer()
    problem = await api.json(
        "POST", f"/api/v1/tenants/{consumer.tenant_id}/api-keys", 422, key=ADMIN_KEY, json={"role": "admin"}
    )
    assert problem["errors"] == [
        {"field": "body.role", "message": "admin is only allowed for the operator tenant"}
    ]
    operator = (await api.json("GET", "/api/v1/me", 200, key=ADMIN_KEY))["tenant"]
    second = await api.json(
        "POST", f"/api/v1/tenants/{operator['id']}/api-keys", 201, key=ADMIN_KEY, json={"role": "admin"}
    )
    await api.json("GET", "/api/v1/tenants", 200, key=second["key"])


async def test_keys_of_unknown_tenant_are_404(api: Api) -> None:
    await api.json("POST", "/api/v1/tenants/ten_nobody/api-keys", 404, key=ADMIN_KEY, json={})
    await api.json("GET", "/api/v1/tenants/ten_nobody/api-keys", 404, key=ADMIN_KEY)
    await api.json("GET", "/api/v1/tenants/ten_nobody", 404, key=ADMIN_KEY)


async def test_tenant_list_paginates(api: Api) -> None:
    for i in range(5):
        await api.json("POST", "/api/v1/tenants", 201, key=ADMIN_KEY, json={"participant_id": f"p{i}"})
    seen: list[str] = []
    token = None
    while True:
        query = "page_size=2" + (f"&page_token={token}" if token else "")
        page = await api.json("GET", f"/api/v1/tenants?{query}", 200, key=ADMIN_KEY)
        assert len(page["items"]) <= 2
        seen.extend(t["participant_id"] for t in page["items"])
        token = page["next_page_token"]
        if token is None:
            break
    assert seen == ["operator", "p0", "p1", "p2", "p3", "p4"]
