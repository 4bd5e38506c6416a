"""Playing an EDC connector to the letter: provision and deprovision requests as EDC sends them,
and a callback receiver that enforces EDC's rules."""

from __future__ import annotations

import asyncio
import copy
import json
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import TestServer
from jsonschema import Draft202012Validator

from provider.app import create_app
from provider.backends.sql import SqlStore
from provider.config import Settings
from tests.conftest import ADMIN_KEY, REPO, WAIT_SECONDS, Api, live_api, poll_until

EDC = REPO / "contracts" / "edc"
SECRET = "connector-secret-" + "s" * 32
API_KEY = "management-api-key"


def example(name: str) -> dict[str, Any]:
    return dict(json.loads((EDC / f"{name}.example.json").read_text()))


def schema(name: str) -> Draft202012Validator:
    return Draft202012Validator(json.loads((EDC / f"{name}.schema.json").read_text()))


@dataclass
class Connector:
    """The connector's provisioner callback, with EDC's rules."""

    server: TestServer | None = None
    known: set[str] = field(default_factory=set)
    busy_first: int = 2  # 409 for the first calls: the process is leased right after our 200
    calls: dict[str, int] = field(default_factory=dict)
    requests: dict[str, int] = field(default_factory=dict)  # every request, known process or not
    accepted: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    refused: list[str] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        process = request.match_info["process"]
        self.requests[process] = self.requests.get(process, 0) + 1
        if request.headers.get("x-api-key") != API_KEY:
            self.refused.append("x-api-key")
            return web.Response(status=401)
        body = await request.json()
        errors = [e.message for e in schema("provision-callback").iter_errors(body)]
        if errors:  # Jackson: missing edctype or null fields -> 400
            self.refused.extend(errors)
            return web.Response(status=400, text="; ".join(errors))
        if process not in self.known:
            return web.Response(status=404)
        self.calls[process] = self.calls.get(process, 0) + 1
        if self.calls[process] <= self.busy_first:
            return web.Response(status=409)
        self.accepted.setdefault(process, []).append(body)
        return web.Response(status=204)

    @property
    def url(self) -> str:
        assert self.server is not None
        return str(self.server.make_url("/management/callback"))  # EDC: <management API>/callback


@pytest.fixture
async def connector() -> AsyncIterator[Connector]:
    state = Connector()
    app = web.Application()

    async def handle(request: web.Request) -> web.Response:
        return await state.handle(request)  # looked up per request: a test may replace it

    app.router.add_post("/management/callback/{process}/provision", handle)
    state.server = TestServer(app)
    await state.server.start_server()
    yield state
    await state.server.close()


@pytest.fixture
def edc_settings(settings: Settings, tmp_path: Path) -> Settings:
    assets = tmp_path / "assets"
    assets.mkdir()
    shutil.copy(REPO / "config" / "assets" / "dummy.yaml", assets)
    sleepy = {
        "id": "sleepy",
        "version": "1",
        "title": "sleepy",
        "image": "python:3.12-slim",
        "max_run_seconds": 600,
        "outputs": [],
        "local": {"command": ["{python}", "-c", "import time; time.sleep(600)"]},
        "offerings": ["compute-offering-fft"],  # the EDC asset of contracts/edc's examples
    }
    (assets / "sleepy.yaml").write_text(yaml.safe_dump(sleepy))
    return settings.model_copy(
        update={
            "assets": settings.assets.model_copy(update={"directory": assets}),
            "edc": settings.edc.model_validate(
                {
                    "connectors": {
                        "main": {
                            "secret": SECRET,
                            "management_api_key": API_KEY,
                            "callback_networks": ["127.0.0.1/32"],  # the test connector's callbacks
                            "dataplane_assets": ["sleepy"],
                        }
                    },
                    "callback_backoff_seconds": 0.05,
                    "callback_max_backoff_seconds": 0.2,
                    "callback_deadline_seconds": 30,
                }
            ),
        }
    )


@pytest.fixture
async def live(edc_settings: Settings, contract) -> AsyncIterator[Api]:  # type: ignore[no-untyped-def]
    api, close = await live_api(edc_settings, contract)
    yield api
    await close()


def request_for(connector: Connector, kind: str = "provision", **changes: Any) -> dict[str, Any]:
    body = copy.deepcopy(example("provision-request"))
    body.update(callbackAddress=connector.url, type=kind, **changes)
    connector.known.add(body["transferProcessId"])
    return body


async def accepted(connector: Connector, process: str, count: int = 1) -> dict[str, Any]:
    await poll_until(
        lambda: len(connector.accepted.get(process, [])) >= count,
        lambda: f"callback {count} of {process} (calls {connector.calls}, refused {connector.refused})",
    )
    return connector.accepted[process][-1]


async def execution_in(api: Api, execution_id: str, state: str) -> dict[str, Any]:
    async def reached() -> dict[str, Any] | None:
        execution = await api.json("GET", f"/api/v1/executions/{execution_id}", 200, key=ADMIN_KEY)
        return dict(execution) if execution["state"] == state else None

    return await poll_until(reached, f"execution {execution_id} {state}")


WEBHOOK = f"/edc/main/{SECRET}/provision"


async def provisioned(
    live: Api, connector: Connector, body: dict[str, Any] | None = None
) -> tuple[str, dict[str, Any]]:
    """Provision through the webhook as EDC does; the workspace id and its access document."""
    body = body or request_for(connector)
    workspace = (await live.json("POST", WEBHOOK, 200, json=body))["workspace_id"]
    address = (await accepted(connector, body["transferProcessId"]))["contentDataAddress"]["properties"]
    document = await live.json(
        "GET",
        f"/api/v1/workspaces/{workspace}/access",
        200,
        headers={address["authKey"]: address["authCode"]},
    )
    return workspace, document


async def provisioned_workspace(
    live: Api, connector: Connector, body: dict[str, Any] | None = None
) -> tuple[str, str]:
    """Provision through the webhook as EDC does; the workspace id and its access token."""
    workspace, document = await provisioned(live, connector, body)
    return workspace, str(document["token"])


def test_examples_match_their_schemas() -> None:
    for name in ("provision-request", "deprovision-request", "provision-callback"):
        kind = "provision-callback" if name == "provision-callback" else "provision-request"
        assert list(schema(kind).iter_errors(example(name))) == []


async def test_provision_calls_back_with_an_access_document_that_opens_the_workspace(
    live: Api, connector: Connector
) -> None:
    body = request_for(connector)
    answer = await live.json("POST", WEBHOOK, 200, json=body)  # no authentication header, as EDC sends it
    workspace = answer["workspace_id"]
    callback = await accepted(connector, body["transferProcessId"])
    assert connector.calls[body["transferProcessId"]] == 3  # two 409s, then accepted
    assert (
        callback["resourceDefinitionId"] == body["resourceDefinitionId"]
        and callback["assetId"] == body["assetId"]
    )
    address = callback["contentDataAddress"]["properties"]
    assert address["type"] == "HttpData" and address["baseUrl"].endswith(
        f"/api/v1/workspaces/{workspace}/access"
    )
    # The connector's data plane fetches the access document with authKey: authCode.
    document = await live.json(
        "GET",
        f"/api/v1/workspaces/{workspace}/access",
        200,
        headers={address["authKey"]: address["authCode"]},
    )
    assert document["workspace_id"] == workspace and document["storage"] == {"backend": "fs"}
    await live.json(
        "PUT", f"/api/v1/workspaces/{workspace}/objects/in.csv", 201, key=document["token"], data=b"a,b"
    )
    me = await live.json("GET", "/api/v1/me", 200, key=document["token"])
    assert me["tenant"]["participant_id"] == body["policy"]["assignee"]  # the tenant comes from the policy
    await live.json("GET", f"/api/v1/workspaces/{workspace}/access", 401, headers={"X-Access-Code": "wrong"})
    await live.json("GET", f"/api/v1/workspaces/{workspace}/access", 401)


async def test_a_repeated_provision_request_gets_the_same_workspace_and_another_callback(
    live: Api, connector: Connector
) -> None:
    body = request_for(connector)
    first = await live.json("POST", WEBHOOK, 200, json=body)
    await accepted(connector, body["transferProcessId"])
    again = await live.json("POST", WEBHOOK, 200, json=body)
    assert again["workspace_id"] == first["workspace_id"]
    callback = await accepted(connector, body["transferProcessId"], count=2)
    address = callback["contentDataAddress"]["properties"]
    # The newest callback carries a working access code.
    path = urlsplit(address["baseUrl"]).path
    await live.json("GET", path, 200, headers={address["authKey"]: address["authCode"]})
    tenants = await live.json("GET", "/api/v1/tenants", 200, key=ADMIN_KEY)
    assert [t["participant_id"] for t in tenants["items"]].count(body["policy"]["assignee"]) == 1


async def test_operators_list_provisionings_with_their_callback_state(
    live: Api, connector: Connector
) -> None:
    body = request_for(connector)
    answer = await live.json("POST", WEBHOOK, 200, json=body)
    await accepted(connector, body["transferProcessId"])

    async def provisioned() -> dict[str, Any] | None:
        page = await live.json("GET", "/api/v1/provisionings?state=provisioned", 200, key=ADMIN_KEY)
        return next((p for p in page["items"] if p["transfer_process_id"] == body["transferProcessId"]), None)

    record = await poll_until(provisioned, "the provisioning recorded as provisioned")
    assert record["workspace_id"] == answer["workspace_id"] and record["pending_callback"] is None
    assert record["attempts"] == 3 and record["last_status"] in (200, 204)  # two 409s first
    assert "access_code_hash" not in record
    pending = await live.json("GET", "/api/v1/provisionings?state=callback_pending", 200, key=ADMIN_KEY)
    assert body["transferProcessId"] not in [p["transfer_process_id"] for p in pending["items"]]
    await live.json("GET", "/api/v1/provisionings?state=nonsense", 400, key=ADMIN_KEY)
    consumer = await live.json(
        "POST", f"/api/v1/tenants/{record['tenant_id']}/api-keys", 201, key=ADMIN_KEY, json={}
    )
    await live.json("GET", "/api/v1/provisionings", 403, key=consumer["key"])


async def test_a_burst_of_the_same_request_makes_one_workspace_and_leaves_no_other_behind(
    live: Api, connector: Connector, edc_settings: Settings
) -> None:
    """A connector that retries at once (its request timed out) sends the same provision while
    the first is under way: each copy makes a bucket, one record wins, and every other copy's
    bucket and workspace row go with its refused transaction."""
    body = request_for(connector)
    body["policy"]["assignee"] = "did:web:burst.example"  # a participant seen for the first time
    answers = await asyncio.gather(*(live.json("POST", WEBHOOK, 200, json=body) for _ in range(8)))
    assert len({a["workspace_id"] for a in answers}) == 1
    listed = await live.json("GET", "/api/v1/workspaces?page_size=500", 200, key=ADMIN_KEY)
    mine = [w for w in listed["items"] if w["id"] == answers[0]["workspace_id"]]
    assert len(mine) == 1 and len(listed["items"]) == 1
    directories = [p.name for p in (edc_settings.data_dir / "workspaces").iterdir()]
    assert directories == [mine[0]["storage"]["location"]]
    tenants = await live.json("GET", "/api/v1/tenants", 200, key=ADMIN_KEY)
    assert [t["participant_id"] for t in tenants["items"]].count("did:web:burst.example") == 1


async def test_deprovision_answers_exactly_200_cancels_executions_and_removes_everything(
    live: Api, connector: Connector, edc_settings: Settings
) -> None:
    body = request_for(connector)
    workspace = (await live.json("POST", WEBHOOK, 200, json=body))["workspace_id"]
    address = (await accepted(connector, body["transferProcessId"]))["contentDataAddress"]["properties"]
    document = await live.json(
        "GET",
        f"/api/v1/workspaces/{workspace}/access",
        200,
        headers={address["authKey"]: address["authCode"]},
    )
    token = document["token"]
    running = await live.json(
        "POST", "/api/v1/executions", 201, key=token, json={"asset_id": "sleepy", "workspace_id": workspace}
    )
    await execution_in(live, running["id"], "RUNNING")
    response = await live.request("POST", WEBHOOK, json={**body, "type": "deprovision"})
    assert response.status == 200  # exactly 200: 202 or 204 would be fatal for EDC
    await live.json("GET", f"/api/v1/workspaces/{workspace}", 401, key=token)  # tokens revoked at once
    await execution_in(live, running["id"], "CANCELED")

    async def workspace_gone() -> bool:  # no retention configured: the data goes right away
        response = await live.request("GET", f"/api/v1/workspaces/{workspace}", key=ADMIN_KEY)
        return response.status == 404

    await poll_until(workspace_gone, "the workspace deleted")
    assert not (edc_settings.data_dir / "workspaces" / document["workspace_id"]).exists()
    await live.json(
        "GET",
        f"/api/v1/workspaces/{workspace}/access",
        404,
        headers={address["authKey"]: address["authCode"]},
    )
    assert (await live.request("POST", WEBHOOK, json={**body, "type": "deprovision"})).status == 200
    unknown = {**body, "type": "deprovision", "transferProcessId": "never-seen"}
    assert (await live.request("POST", WEBHOOK, json=unknown)).status == 200


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"transferProcessId": None}, "body.transferProcessId"),
        ({"type": "reprovision"}, "body.type"),
        ({"policy": {"permissions": []}}, "body.policy.assignee"),
        ({"callbackAddress": "ftp://x"}, "body.callbackAddress"),
    ],
)
async def test_malformed_requests_are_400_naming_the_field(
    live: Api, connector: Connector, change: dict[str, Any], field: str
) -> None:
    body = {**request_for(connector), **change}
    body = {k: v for k, v in body.items() if v is not None}
    problem = await live.json("POST", WEBHOOK, 400, json=body)
    assert field in [e["field"] for e in problem["errors"]]
    assert (await live.json("GET", "/api/v1/workspaces", 200, key=ADMIN_KEY))["items"] == []


async def test_wrong_secret_unknown_connector_or_source_is_404(
    live: Api,
    connector: Connector,
    edc_settings: Settings,
    contract,  # type: ignore[no-untyped-def]
) -> None:
    body = request_for(connector)
    await live.json("POST", f"/edc/main/{'x' * 48}/provision", 404, json=body)
    await live.json("POST", f"/edc/other/{SECRET}/provision", 404, json=body)
    guarded = edc_settings.model_copy(
        update={
            # A service of its own beside `live`: data of its own too (one service per database).
            "data_dir": edc_settings.data_dir.with_name("guarded"),
            "edc": edc_settings.edc.model_validate(
                {"connectors": {"main": {"secret": SECRET, "allowed_networks": ["10.0.0.0/8"]}}}
            ),
        }
    )
    api, close = await live_api(guarded, contract)
    try:
        await api.json("POST", WEBHOOK, 404, json=body)  # the test client calls from 127.0.0.1
    finally:
        await close()
    assert connector.calls == {}


async def test_an_unknown_process_fails_the_provisioning_without_endless_retries(
    live: Api, connector: Connector
) -> None:
    body = request_for(connector)
    connector.known.discard(body["transferProcessId"])  # the connector answers 404
    await live.json("POST", WEBHOOK, 200, json=body)
    from provider.api.context import CONTEXT

    async def failed() -> Any:
        async with live.app[CONTEXT].store.read() as uow:
            item = await uow.provisionings.find(
                "main", body["transferProcessId"], body["resourceDefinitionId"]
            )
        return item if item is not None and item.state.value == "failed" else None

    item = await poll_until(failed, "the provisioning failed")
    # A later provisioning is called back after retries of its own: the worker has had rounds
    # enough to retry the first one too, had it not given up.
    later = request_for(connector, transferProcessId="tp-later", resourceDefinitionId="rd-later")
    await live.json("POST", WEBHOOK, 200, json=later)
    await accepted(connector, later["transferProcessId"])
    assert connector.requests[body["transferProcessId"]] == 1
    assert body["transferProcessId"] not in connector.accepted
    item = await failed()
    assert item is not None and item.last_status == 404 and item.attempts == 1


async def test_pending_callbacks_survive_a_restart(
    edc_settings: Settings, contract, connector: Connector
) -> None:  # type: ignore[no-untyped-def]
    body = request_for(connector)
    connector.busy_first = 10_000  # the connector stays busy while the service runs
    first, close = await live_api(edc_settings, contract)
    workspace = (await first.json("POST", WEBHOOK, 200, json=body))["workspace_id"]
    await poll_until(lambda: connector.calls.get(body["transferProcessId"], 0) >= 2, "a retried callback")
    assert not connector.accepted
    await close()  # the service stops with the callback still pending
    connector.busy_first = 0
    connector.calls.clear()
    second, close_again = await live_api(edc_settings, contract)
    try:
        callback = await accepted(connector, body["transferProcessId"])
        address = callback["contentDataAddress"]["properties"]
        document = await second.json(
            "GET",
            f"/api/v1/workspaces/{workspace}/access",
            200,
            headers={address["authKey"]: address["authCode"]},
        )
        assert document["workspace_id"] == workspace
    finally:
        await close_again()


EVENTS_SECRET = "events-secret-" + "e" * 20


async def test_a_callback_the_connector_holds_does_not_hold_back_the_next_provisioning(
    edc_settings: Settings, connector: Connector, contract
) -> None:  # type: ignore[no-untyped-def]
    """Each due callback goes out on its own: a connector that keeps one request open (up to the
    callback timeout, here far beyond the test's wait) delays no other transfer's callback."""
    held, release = asyncio.Event(), asyncio.Event()
    answer = connector.handle

    async def holding(request: web.Request) -> web.Response:
        if request.match_info["process"] == "held-process":
            held.set()
            await release.wait()
        return await answer(request)

    connector.handle = holding  # type: ignore[method-assign]
    connector.busy_first = 0
    edc = edc_settings.edc.model_copy(update={"callback_timeout_seconds": 600.0})
    api, close = await live_api(edc_settings.model_copy(update={"edc": edc}), contract)
    try:
        await api.json("POST", WEBHOOK, 200, json=request_for(connector, transferProcessId="held-process"))
        await asyncio.wait_for(held.wait(), WAIT_SECONDS)  # its callback is under way, unanswered
        await provisioned(api, connector)  # another transfer's callback arrives meanwhile
        assert "held-process" not in connector.accepted
    finally:
        release.set()
        await close()


@pytest.fixture
async def events_api(edc_settings: Settings, contract) -> AsyncIterator[Api]:  # type: ignore[no-untyped-def]
    settings = edc_settings.model_copy(
        update={
            "edc": edc_settings.edc.model_copy(
                update={"events": edc_settings.edc.events.model_validate({"auth_code": EVENTS_SECRET})}
            ),
            "imports": edc_settings.imports.model_copy(update={"allowed_networks": ["127.0.0.1/32"]}),
        }
    )
    api, close = await live_api(settings, contract)
    yield api
    await close()


@pytest.fixture
async def data_plane() -> AsyncIterator[tuple[TestServer, list[str | None]]]:
    seen: list[str | None] = []

    async def public(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization"))
        return web.Response(body=b"rows,from,the,other,provider\n")

    app = web.Application()
    app.router.add_get("/public/", public)
    server = TestServer(app)
    await server.start_server()
    yield server, seen
    await server.close()


async def consumer_workspace(api: Api) -> tuple[str, str]:
    tenant = await api.json(
        "POST", "/api/v1/tenants", 201, key=ADMIN_KEY, json={"participant_id": "did:web:c"}
    )
    key = (await api.json("POST", f"/api/v1/tenants/{tenant['id']}/api-keys", 201, key=ADMIN_KEY, json={}))[
        "key"
    ]
    return key, (await api.json("POST", "/api/v1/workspaces", 201, key=key, json={}))["id"]


async def imported(api: Api, key: str, ws: str, object_key: str) -> Any:
    """The object once its import has stored it."""

    async def stored() -> Any:
        response = await api.request("GET", f"/api/v1/workspaces/{ws}/objects/{object_key}", key=key)
        return response if response.status == 200 else None

    return await poll_until(stored, f"{object_key} imported")


async def test_a_started_transfer_imports_into_the_registered_workspace(events_api: Api, data_plane) -> None:  # type: ignore[no-untyped-def]
    server, seen = data_plane
    key, ws = await consumer_workspace(events_api)
    event = example("transfer-started-event")
    assert list(schema("transfer-started-event").iter_errors(event)) == []
    process = event["payload"]["transferProcessId"]
    registration = await events_api.json(
        "POST",
        f"/api/v1/workspaces/{ws}/edc-transfers",
        201,
        key=key,
        json={"transfer_process_id": process, "target_key": "inputs/remote.csv"},
    )
    properties = event["payload"]["dataAddress"]["properties"]
    properties["https://w3id.org/edc/v0.0.1/ns/endpoint"] = str(server.make_url("/public/"))
    answer = await events_api.json(
        "POST", "/edc/events", 200, json=event, headers={"X-Api-Key": EVENTS_SECRET}
    )
    assert answer == {"imports_started": 1}
    token = properties["https://w3id.org/edc/v0.0.1/ns/authorization"]
    response = await imported(events_api, key, ws, "inputs/remote.csv")
    assert await response.read() == b"rows,from,the,other,provider\n"
    # As given: EDC's public data plane verifies the whole header, authType bearer or not.
    assert seen == [token] and not token.lower().startswith("bearer ")
    listed = await events_api.json("GET", f"/api/v1/workspaces/{ws}/edc-transfers", 200, key=key)
    assert listed["items"][0]["id"] == registration["id"] and listed["items"][0]["import_id"]
    # A second event for the same transfer starts nothing new.
    again = await events_api.json(
        "POST", "/edc/events", 200, json=event, headers={"X-Api-Key": EVENTS_SECRET}
    )
    assert again == {"imports_started": 0}


async def test_plain_keys_and_authorization_sent_exactly_as_given(events_api: Api, data_plane) -> None:  # type: ignore[no-untyped-def]
    server, seen = data_plane
    key, ws = await consumer_workspace(events_api)
    await events_api.json(
        "POST",
        f"/api/v1/workspaces/{ws}/edc-transfers",
        201,
        key=key,
        json={"contract_id": "contract-9", "target_key": "in.csv"},
    )
    event = {
        "id": "e1",
        "at": 1,
        "type": "TransferProcessStarted",
        "payload": {
            "transferProcessId": "tp-9",
            "type": "CONSUMER",
            "contractId": "contract-9",
            "dataAddress": {
                "properties": {"endpoint": str(server.make_url("/public/")), "authorization": "raw-code"}
            },
        },
    }
    assert (
        await events_api.json("POST", "/edc/events", 200, json=event, headers={"X-Api-Key": EVENTS_SECRET})
    )["imports_started"] == 1
    await imported(events_api, key, ws, "in.csv")
    assert seen == ["raw-code"]


async def test_a_registration_may_ask_for_a_scheme_before_the_token(events_api: Api, data_plane) -> None:  # type: ignore[no-untyped-def]
    """For a data plane that wants `Bearer <token>`: opt-in per registration, never twice."""
    server, seen = data_plane
    key, ws = await consumer_workspace(events_api)
    for n, token in enumerate(("code-1", "Bearer code-2")):
        registration = await events_api.json(
            "POST",
            f"/api/v1/workspaces/{ws}/edc-transfers",
            201,
            key=key,
            json={
                "transfer_process_id": f"tp-s{n}",
                "target_key": f"in{n}.csv",
                "authorization_scheme": "Bearer",
            },
        )
        assert registration["authorization_scheme"] == "Bearer"
        event = example("transfer-started-event")
        event["payload"]["transferProcessId"] = f"tp-s{n}"
        properties = event["payload"]["dataAddress"]["properties"]
        properties["https://w3id.org/edc/v0.0.1/ns/endpoint"] = str(server.make_url("/public/"))
        properties["https://w3id.org/edc/v0.0.1/ns/authorization"] = token
        await events_api.json("POST", "/edc/events", 200, json=event, headers={"X-Api-Key": EVENTS_SECRET})
        await imported(events_api, key, ws, f"in{n}.csv")
    assert seen == ["Bearer code-1", "Bearer code-2"]
    refused = await events_api.request(
        "POST",
        f"/api/v1/workspaces/{ws}/edc-transfers",
        key=key,
        json={"transfer_process_id": "tp-x", "target_key": "x", "authorization_scheme": "Bearer x"},
    )
    assert refused.status == 422


async def registered_by_owner_and_intruder(
    api: Api, server: TestServer
) -> tuple[str, str, str, str, dict[str, Any]]:
    """did:web:c's workspace and an intruder's both registered for the example event's transfer:
    (owner key, owner workspace, intruder key, intruder workspace, the event pointing at `server`)."""
    key, ws = await consumer_workspace(api)
    tenant = await api.json(
        "POST", "/api/v1/tenants", 201, key=ADMIN_KEY, json={"participant_id": "did:web:intruder"}
    )
    intruder = (
        await api.json("POST", f"/api/v1/tenants/{tenant['id']}/api-keys", 201, key=ADMIN_KEY, json={})
    )["key"]
    trap = (await api.json("POST", "/api/v1/workspaces", 201, key=intruder, json={}))["id"]
    event = example("transfer-started-event")
    for who, workspace in ((key, ws), (intruder, trap)):
        await api.json(
            "POST",
            f"/api/v1/workspaces/{workspace}/edc-transfers",
            201,
            key=who,
            json={"transfer_process_id": event["payload"]["transferProcessId"], "target_key": "in.csv"},
        )
    properties = event["payload"]["dataAddress"]["properties"]
    properties["https://w3id.org/edc/v0.0.1/ns/endpoint"] = str(server.make_url("/public/"))
    return key, ws, intruder, trap, event


async def test_another_tenant_registering_the_same_transfer_gets_no_copy(
    edc_settings: Settings, data_plane, contract
) -> None:  # type: ignore[no-untyped-def]
    """The consumer connector acts for did:web:c; an intruder who learned the transfer's id and
    registered it for its own workspace must not receive the data (edc.events.participants)."""
    server, seen = data_plane
    events = edc_settings.edc.events.model_validate(
        {"auth_code": EVENTS_SECRET, "participants": ["did:web:c"]}
    )
    settings = edc_settings.model_copy(
        update={
            "edc": edc_settings.edc.model_copy(update={"events": events}),
            "imports": edc_settings.imports.model_copy(update={"allowed_networks": ["127.0.0.1/32"]}),
        }
    )
    api, close = await live_api(settings, contract)
    try:
        key, ws, intruder, trap, event = await registered_by_owner_and_intruder(api, server)
        answer = await api.json("POST", "/edc/events", 200, json=event, headers={"X-Api-Key": EVENTS_SECRET})
        assert answer == {"imports_started": 1}
        await imported(api, key, ws, "in.csv")
        assert len(seen) == 1  # fetched once, for did:web:c
        listed = await api.json("GET", f"/api/v1/workspaces/{trap}/imports", 200, key=intruder)
        assert listed["items"] == []
        registrations = await api.json("GET", f"/api/v1/workspaces/{trap}/edc-transfers", 200, key=intruder)
        assert registrations["items"][0]["import_id"] is None
    finally:
        await close()


async def test_a_transfer_several_tenants_registered_fills_nobody_s_workspace(
    events_api: Api, data_plane
) -> None:  # type: ignore[no-untyped-def]
    """Without edc.events.participants the owner cannot be told from an impostor: no copy at all."""
    server, seen = data_plane
    *_, event = await registered_by_owner_and_intruder(events_api, server)
    answer = await events_api.json(
        "POST", "/edc/events", 200, json=event, headers={"X-Api-Key": EVENTS_SECRET}
    )
    assert answer == {"imports_started": 0} and seen == []


async def test_events_need_their_header_and_unknown_transfers_are_acknowledged(events_api: Api) -> None:
    event = example("transfer-started-event")
    await events_api.json("POST", "/edc/events", 404, json=event)
    await events_api.json("POST", "/edc/events", 404, json=event, headers={"X-Api-Key": "wrong"})
    answer = await events_api.json(
        "POST", "/edc/events", 200, json=event, headers={"X-Api-Key": EVENTS_SECRET}
    )
    assert answer == {"imports_started": 0}
    other = {**event, "type": "TransferProcessCompleted"}
    assert (
        await events_api.json("POST", "/edc/events", 200, json=other, headers={"X-Api-Key": EVENTS_SECRET})
    )["imports_started"] == 0


async def test_an_event_time_that_is_a_boolean_is_400(events_api: Api) -> None:
    """`at` is a number or a string (contract: EdcEvent); true and false are neither, though a
    lax integer would read them as 1 and 0."""
    event = example("transfer-started-event")
    for at in (False, True):
        problem = await events_api.json(
            "POST", "/edc/events", 400, json={**event, "at": at}, headers={"X-Api-Key": EVENTS_SECRET}
        )
        # one problem for each type `at` may have (body.at.int, body.at.float, body.at.str)
        assert {e["field"].rsplit(".", 1)[0] for e in problem["errors"]} == {"body.at"}, problem


async def test_registration_needs_a_transfer_and_a_valid_key(events_api: Api) -> None:
    key, ws = await consumer_workspace(events_api)
    problem = await events_api.json(
        "POST", f"/api/v1/workspaces/{ws}/edc-transfers", 422, key=key, json={"target_key": "x"}
    )
    assert problem["errors"][0]["field"] == "body.transfer_process_id"
    await events_api.json(
        "POST",
        f"/api/v1/workspaces/{ws}/edc-transfers",
        400,
        key=key,
        json={"transfer_process_id": "t", "target_key": "../x"},
    )


@pytest.fixture
async def data_plane_connector() -> AsyncIterator[dict[str, list[Any]]]:
    """The connector's data-plane provisioner callbacks, with a first 409 on each."""
    received: dict[str, list[Any]] = {"provision": [], "deprovision": []}
    seen: set[str] = set()

    async def callback(request: web.Request) -> web.Response:
        kind = request.match_info["kind"]
        if request.headers.get("x-api-key") != API_KEY:
            return web.Response(status=401)
        body = await request.json()
        if kind == "provision" and list(schema("dataplane-provision-callback").iter_errors(body)):
            return web.Response(status=400)
        if kind == "deprovision" and body != {}:
            return web.Response(status=400)
        marker = f"{kind}:{request.match_info['flow']}"
        if marker not in seen:
            seen.add(marker)
            return web.Response(status=409)
        received[kind].append((request.match_info["flow"], request.match_info["resource"], body))
        return web.Response(status=200)

    app = web.Application()
    app.router.add_post("/api/control/provision/{flow}/{resource}/{kind}", callback)
    server = TestServer(app)
    await server.start_server()
    received["url"] = [str(server.make_url("/api/control/provision"))]
    yield received
    await server.close()


async def test_data_plane_provisioner_round_trip(
    live: Api, data_plane_connector: dict[str, list[Any]]
) -> None:
    body = {**example("dataplane-provision-request"), "callbackAddress": data_plane_connector["url"][0]}
    assert list(schema("dataplane-provision-request").iter_errors(body)) == []
    webhook = f"/edc/main/{SECRET}/dataplane/provision"
    workspace = (await live.json("POST", webhook, 200, json=body))["workspace_id"]
    await poll_until(lambda: data_plane_connector["provision"], "the provision callback")
    flow, resource, callback = data_plane_connector["provision"][0]
    assert (flow, resource) == (body["flowId"], body["provisionResourceId"])
    address = callback["dataAddress"]["properties"]
    document = await live.json(
        "GET", urlsplit(address["baseUrl"]).path, 200, headers={address["authKey"]: address["authCode"]}
    )
    assert document["workspace_id"] == workspace
    me = await live.json("GET", "/api/v1/me", 200, key=document["token"])
    assert me["tenant"]["participant_id"] == "connector:main"
    answer = await live.request("POST", webhook, json={**body, "type": "deprovision"})
    assert answer.status == 200
    await poll_until(lambda: data_plane_connector["deprovision"], "the deprovision callback")
    assert data_plane_connector["deprovision"] == [(body["flowId"], body["provisionResourceId"], {})]
    await live.json("GET", f"/api/v1/workspaces/{workspace}", 404, key=ADMIN_KEY)
    await live.json("POST", webhook, 400, json={**body, "flowId": ""})


def on_s3(edc_settings: Settings, radosgw: str, **edc: Any) -> Settings:
    """These EDC settings (with `edc` changed) over S3 storage on the radosgw."""
    from tests.conftest import s3_settings

    return edc_settings.model_copy(
        update={
            "storage": edc_settings.storage.model_validate(s3_settings(radosgw)),
            "edc": edc_settings.edc.model_copy(update=edc),
        }
    )


async def bucket_of(api: Api, workspace: str) -> str:
    answer = await api.json("GET", f"/api/v1/workspaces/{workspace}", 200, key=ADMIN_KEY)
    return str(answer["storage"]["location"])


@pytest.mark.s3
async def test_amazon_s3_content_address_points_at_the_bucket(
    edc_settings: Settings,
    contract,
    connector: Connector,
    radosgw: str,  # type: ignore[no-untyped-def]
) -> None:
    api, close = await live_api(on_s3(edc_settings, radosgw, content_address="amazon_s3"), contract)
    try:
        body = request_for(connector)
        workspace = (await api.json("POST", WEBHOOK, 200, json=body))["workspace_id"]
        callback = await accepted(connector, body["transferProcessId"])
        address = callback["contentDataAddress"]["properties"]
        assert address == {
            "type": "AmazonS3",
            "bucketName": await bucket_of(api, workspace),
            "region": "us-east-1",
            "objectPrefix": "",
            "endpointOverride": radosgw,
        }
        assert (
            "accessKeyId" not in address and "secretAccessKey" not in address
        )  # no credentials in addresses
        await api.request("POST", WEBHOOK, json={**body, "type": "deprovision"})
    finally:
        await close()


@pytest.mark.s3
async def test_on_s3_the_access_document_carries_credentials_for_its_bucket_alone(
    edc_settings: Settings,
    contract,
    connector: Connector,
    radosgw: str,  # type: ignore[no-untyped-def]
) -> None:
    from tests.test_s3_isolation import denied, s3_client

    api, close = await live_api(on_s3(edc_settings, radosgw), contract)
    try:
        workspace, document = await provisioned(api, connector)
        other, _ = await provisioned(api, connector, request_for(connector, transferProcessId="tp-2"))
        storage, theirs = document["storage"], await bucket_of(api, other)
        assert storage["backend"] == "s3" and storage["bucket"] == await bucket_of(api, workspace) != theirs
        assert storage["endpoint_url"] == radosgw and storage["session_token"]
        async with s3_client(storage) as s3:
            await s3.put_object(Bucket=storage["bucket"], Key="in.csv", Body=b"a,b")
            got = await s3.get_object(Bucket=storage["bucket"], Key="in.csv")
            assert await got["Body"].read() == b"a,b"
            assert await denied(s3.list_objects_v2(Bucket=theirs)) == 403
            assert await denied(s3.put_object(Bucket=theirs, Key="x", Body=b"x")) == 403
    finally:
        await close()


@pytest.fixture
async def edc_store_api(store: SqlStore, aiohttp_client: Any, edc_settings: Settings, contract: Any) -> Api:
    """The webhooks over the parametrized store (SQLite and PostgreSQL), events enabled."""
    settings = edc_settings.model_copy(
        update={
            "edc": edc_settings.edc.model_copy(
                update={"events": edc_settings.edc.events.model_validate({"auth_code": EVENTS_SECRET})}
            )
        }
    )
    app = create_app(settings, store=store)
    return Api(await aiohttp_client(app), contract, app)


def _with_nul(body: dict[str, Any], field: str) -> bytes:
    return json.dumps({**body, field: body[field] + "\u0000"}).encode()


async def test_webhooks_answer_400_never_500_for_json_beyond_the_limits_or_with_nul(
    edc_store_api: Api, connector: Connector
) -> None:
    """EDC retries a 500 (and any 5xx) for ever; a request that can never succeed must be a 400."""
    from tests.test_api_errors import JSON_LIMIT_CASES

    webhooks = [
        (f"/edc/main/{SECRET}/provision", {}, request_for(connector), "transferProcessId"),
        (
            f"/edc/main/{SECRET}/dataplane/provision",
            {},
            {**example("dataplane-provision-request"), "callbackAddress": connector.url},
            "flowId",
        ),
        ("/edc/events", {"X-Api-Key": EVENTS_SECRET}, example("transfer-started-event"), "type"),
    ]
    for path, headers, body, text_field in webhooks:
        cases = [*JSON_LIMIT_CASES, ("NUL", _with_nul(body, text_field))]
        for label, data in cases:
            response = await edc_store_api.request(
                "POST", path, data=data, headers={**headers, "Content-Type": "application/json"}
            )
            assert response.status == 400, f"{path} {label}: {response.status} {await response.text()}"
            assert response.content_type == "application/problem+json"
    assert (await edc_store_api.json("GET", "/api/v1/workspaces", 200, key=ADMIN_KEY))["items"] == []
