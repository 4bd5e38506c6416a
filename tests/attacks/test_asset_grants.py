"""A consumer who bought one compute offering tries to run another asset of the catalog, over
HTTP against the live service, with the token of its provisioned workspace; and an operator's
limit on a tenant holds the same way."""

from __future__ import annotations

from tests.conftest import ADMIN_KEY, Api
from tests.test_edc import SECRET, WEBHOOK, Connector, example, provisioned_workspace, request_for

GRANT_PROBLEM = "urn:provider:problem:asset-not-granted"


async def test_a_transfer_for_one_offering_runs_only_what_that_offering_grants(
    live: Api, connector: Connector
) -> None:
    # compute-offering-fft grants `sleepy` (its `offerings` name it); `dummy` is in the catalog too.
    workspace, token = await provisioned_workspace(live, connector)
    shown = await live.json("GET", f"/api/v1/workspaces/{workspace}", 200, key=token)
    assert shown["allowed_assets"] == ["sleepy"]
    await live.json("PUT", f"/api/v1/workspaces/{workspace}/objects/in.bin", 201, key=token, data=b"x")
    refused = await live.json(
        "POST",
        "/api/v1/executions",
        403,
        key=token,
        json={"asset_id": "dummy", "workspace_id": workspace, "inputs": {"source": "in.bin"}},
    )
    assert refused["type"] == GRANT_PROBLEM
    assert "'dummy' is not granted" in refused["detail"] and "sleepy" in refused["detail"]
    # The tenant's API key cannot widen it either: the limit belongs to the workspace.
    tenant = (await live.json("GET", "/api/v1/me", 200, key=token))["tenant"]["id"]
    key = (await live.json("POST", f"/api/v1/tenants/{tenant}/api-keys", 201, key=ADMIN_KEY, json={}))["key"]
    await live.json(
        "POST",
        "/api/v1/executions",
        403,
        key=key,
        json={"asset_id": "dummy", "workspace_id": workspace, "inputs": {"source": "in.bin"}},
    )
    started = await live.json(
        "POST", "/api/v1/executions", 201, key=token, json={"asset_id": "sleepy", "workspace_id": workspace}
    )
    assert started["asset"]["id"] == "sleepy"


async def test_a_transfer_for_an_offering_that_grants_nothing_is_refused_and_makes_nothing(
    live: Api, connector: Connector
) -> None:
    before = await live.json("GET", "/api/v1/workspaces", 200, key=ADMIN_KEY)
    body = request_for(connector, assetId="compute-offering-unknown")
    body["policy"]["assignee"] = "did:web:nobody-seen-before.example"
    refused = await live.json("POST", WEBHOOK, 400, json=body)  # EDC takes a 4xx as final
    assert refused["type"] == "urn:provider:problem:offering-not-granted"
    assert "compute-offering-unknown" in refused["detail"] and "offerings" in refused["detail"]
    after = await live.json("GET", "/api/v1/workspaces", 200, key=ADMIN_KEY)
    assert [w["id"] for w in after["items"]] == [w["id"] for w in before["items"]]
    tenants = await live.json("GET", "/api/v1/tenants", 200, key=ADMIN_KEY)
    assert body["policy"]["assignee"] not in [t["participant_id"] for t in tenants["items"]]
    assert connector.calls.get(body["transferProcessId"]) is None  # no callback was made


async def test_the_data_plane_provisioner_grants_what_the_connector_settings_say(
    live: Api, connector: Connector
) -> None:
    """Its requests name no asset: `edc.connectors.main.dataplane_assets` (sleepy) is what it grants."""
    body = {**example("dataplane-provision-request"), "callbackAddress": connector.url}
    answer = await live.json("POST", f"/edc/main/{SECRET}/dataplane/provision", 200, json=body)
    shown = await live.json("GET", f"/api/v1/workspaces/{answer['workspace_id']}", 200, key=ADMIN_KEY)
    assert shown["allowed_assets"] == ["sleepy"]


async def test_an_operator_limits_a_tenant_to_some_assets(live: Api) -> None:
    tenant = await live.json(
        "POST",
        "/api/v1/tenants",
        201,
        key=ADMIN_KEY,
        json={"participant_id": "did:web:limited.example", "allowed_assets": ["sleepy"]},
    )
    assert tenant["allowed_assets"] == ["sleepy"]
    key = (await live.json("POST", f"/api/v1/tenants/{tenant['id']}/api-keys", 201, key=ADMIN_KEY, json={}))[
        "key"
    ]
    workspace = (await live.json("POST", "/api/v1/workspaces", 201, key=key, json={"name": "own"}))["id"]
    await live.json("PUT", f"/api/v1/workspaces/{workspace}/objects/in.bin", 201, key=key, data=b"x")
    dummy = {"asset_id": "dummy", "workspace_id": workspace, "inputs": {"source": "in.bin"}}
    refused = await live.json("POST", "/api/v1/executions", 403, key=key, json=dummy)
    assert refused["type"] == GRANT_PROBLEM and "tenant" in refused["detail"]
    # A consumer cannot lift its own limit; the operator can.
    await live.json("PATCH", f"/api/v1/tenants/{tenant['id']}", 403, key=key, json={"allowed_assets": None})
    lifted = await live.json(
        "PATCH", f"/api/v1/tenants/{tenant['id']}", 200, key=ADMIN_KEY, json={"allowed_assets": None}
    )
    assert lifted["allowed_assets"] is None
    await live.json("POST", "/api/v1/executions", 201, key=key, json=dummy)
    # Tenants made by hand are open by default.
    open_tenant = await live.json(
        "POST", "/api/v1/tenants", 201, key=ADMIN_KEY, json={"participant_id": "did:web:open.example"}
    )
    assert open_tenant["allowed_assets"] is None
