"""Data Plane Signaling (v1.0-RC3): the tests play a control plane to the letter of the
specification's schemas (contracts/dps/schemas), against the service over HTTP.

Provider flows: start -> access works -> suspend -> access refused at once -> resume -> works ->
terminate -> everything gone. Consumer flows: prepare -> started -> the bytes imported ->
completed told to the control plane, which may be down for a while."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from jsonschema import Draft7Validator
from referencing import Registry, Resource

from provider.aio import wait_event
from provider.api.context import CONTEXT
from provider.app import create_app
from provider.config import ConfigError, Settings
from provider.domain.dataflows import FlowState
from provider.domain.errors import Unavailable
from provider.domain.executions import State
from tests.conftest import ADMIN_KEY, REPO, WAIT_SECONDS, Api, MovableClock, poll_until
from tests.fakes import DrivenCompute

DPS = REPO / "contracts" / "dps"
CP_SECRET = "cp-secret-" + "7f3a9c2e5b8d1f4a6c0e9b2d7a5f3c1e"
OTHER_SECRET = "cp-secret-" + "0a1b2c3d4e5f60718293a4b5c6d7e8f9"
CALLBACK_TOKEN = "callback-token-for-the-control-plane"
PUBLIC = "https://provider.test"


def _registry() -> Registry[Any]:
    resources = []
    for path in (DPS / "schemas").glob("*.json"):
        document = json.loads(path.read_text())
        uri = document.get("$id", "")
        if not uri.startswith("https://"):
            uri = "https://w3id.org/dspace-sig/v1.0/" + path.name
        resources.append((uri, Resource.from_contents(document, default_specification=_draft7())))
    return Registry().with_resources(resources)


def _draft7() -> Any:
    from referencing.jsonschema import DRAFT7

    return DRAFT7


REGISTRY = _registry()


def valid(name: str, message: Any) -> list[str]:
    """Problems of `message` against the specification's schema `name` (empty: valid)."""
    schema = json.loads((DPS / "schemas" / f"{name}.schema.json").read_text())
    validator = Draft7Validator(schema, registry=REGISTRY)
    return [f"{'/'.join(map(str, e.path))}: {e.message}" for e in validator.iter_errors(message)]


def example(name: str, **changes: Any) -> dict[str, Any]:
    message: dict[str, Any] = json.loads((DPS / "examples" / f"{name}.json").read_text())
    message.update(changes)
    return message


def test_the_examples_are_what_the_specification_allows() -> None:
    pairs = {
        "start": "DataFlowStartMessage",
        "prepare": "DataFlowPrepareMessage",
        "started": "DataFlowStartedNotificationMessage",
        "suspend": "DataFlowSuspendMessage",
        "terminate": "DataFlowTerminateMessage",
        "resume": "DataFlowResumeMessage",
        "register-control-plane": "ControlPlaneRegistrationMessage",
    }
    for file, schema in pairs.items():
        assert valid(schema, example(file)) == [], file
    assert valid("DataFlowStartMessage", example("start", processId=5)) != []  # the check can fail


class ControlPlane:
    """The control plane's side of notices: POST /transfers/{processId}/dataflow/{notice}."""

    def __init__(self) -> None:
        self.received: list[tuple[str, str, str | None, dict[str, Any]]] = []
        self.refusals: list[int] = []  # statuses to answer first, one per notice
        self.registrations: list[tuple[str | None, dict[str, Any]]] = []
        self.registration_answers: list[int] = []  # statuses to answer first, one per registration
        self.registered = asyncio.Event()
        self.server: TestServer | None = None

    async def register(self, request: web.Request) -> web.Response:
        """PUT /dataplanes of the specification's control plane side."""
        body = await request.json()
        self.registrations.append((request.headers.get("Authorization"), body))
        if self.registration_answers:
            return web.Response(status=self.registration_answers.pop(0))
        if valid("DataPlaneRegistrationMessage", body):
            return web.Response(status=400)
        self.registered.set()
        return web.Response(status=200)

    async def notice(self, request: web.Request) -> web.Response:
        body = await request.json()
        if self.refusals:
            return web.Response(status=self.refusals.pop(0))
        if valid("DataFlowStatusMessage", body):
            return web.Response(status=400)
        self.received.append(
            (
                request.match_info["process"],
                request.match_info["notice"],
                request.headers.get("Authorization"),
                body,
            )
        )
        return web.Response(status=200)

    @property
    def url(self) -> str:
        assert self.server is not None
        return str(self.server.make_url("/cp")).rstrip("/")


@pytest.fixture
async def control_plane() -> AsyncIterator[ControlPlane]:
    plane = ControlPlane()
    app = web.Application()
    app.router.add_post("/cp/transfers/{process}/dataflow/{notice}", plane.notice)
    app.router.add_put("/cp/dataplanes", plane.register)
    plane.server = TestServer(app, host="127.0.0.1")
    await plane.server.start_server()
    yield plane
    await plane.server.close()


@pytest.fixture
async def source() -> AsyncIterator[tuple[TestServer, bytes, list[str | None]]]:
    """Another provider's data plane: the data, for the bearer token its address carries."""
    data = bytes(range(256)) * 400
    seen: list[str | None] = []

    async def public(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization"))
        if request.headers.get("Authorization") != "Bearer TOKEN-ABCDEFG":
            return web.Response(status=403)
        return web.Response(body=data)

    app = web.Application()
    app.router.add_get("/public/weather", public)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    yield server, data, seen
    await server.close()


def signaling_settings(
    settings: Settings, control_plane: ControlPlane, cp: dict[str, Any] | None = None, **signaling: Any
) -> Settings:
    return Settings.model_validate(
        {
            **settings.model_dump(mode="json", exclude={"auth"}),
            "auth": {"bootstrap_admin_key": ADMIN_KEY, "key_cache_seconds": 0},
            "server": {**settings.server.model_dump(mode="json"), "public_url": PUBLIC},
            "imports": {"allowed_networks": ["127.0.0.0/8"], "backoff_seconds": 0.01},
            "signaling": {
                "control_planes": {
                    "cp": {
                        "secret": CP_SECRET,
                        "endpoint": control_plane.url,
                        "callback_token": CALLBACK_TOKEN,
                        "callback_networks": ["127.0.0.0/8"],
                        "participants": ["did:web:consumer.example"],
                        **(cp or {}),
                    },
                    "other": {"secret": OTHER_SECRET},
                },
                "http_networks": ["127.0.0.0/8"],
                "notice_backoff_seconds": 0.01,
                "notice_max_backoff_seconds": 0.05,
                **signaling,
            },
        }
    )


@pytest.fixture
async def dps(
    aiohttp_client: Any, settings: Settings, control_plane: ControlPlane, contract: Any
) -> AsyncIterator[Api]:
    app = create_app(signaling_settings(settings, control_plane))
    yield Api(await aiohttp_client(app), contract, app)


async def signal(api: Api, path: str, status: int, body: Any = None, key: str = CP_SECRET) -> Any:
    kwargs: dict[str, Any] = {} if body is None else {"json": body}
    return await api.json("POST", f"/signaling/v1/dataflows/{path}", status, key=key, **kwargs)


async def flow_state(api: Api, process: str, key: str = CP_SECRET) -> str:
    status = await api.json("GET", f"/signaling/v1/dataflows/{process}/status", 200, key=key)
    assert valid("DataFlowStatusResponseMessage", status) == []
    return str(status["state"])


def address_of(answer: dict[str, Any]) -> tuple[str, str]:
    """The workspace URL path and the token of a pull address, checked against the HTTP profile."""
    address = answer["dataAddress"]
    assert valid("http-profile-data-address", address) == [], address
    properties = {p["name"]: p["value"] for p in address["endpointProperties"]}
    assert properties["authType"] == "bearer" and address["endpoint"].startswith(
        f"{PUBLIC}/api/v1/workspaces/"
    )
    return address["endpoint"].removeprefix(PUBLIC), properties["authorization"]


# --- provider flows -------------------------------------------------------------------------


async def dummy_run(dps: Api, workspace: str, token: str) -> dict[str, Any]:
    """Put an input into a flow's workspace (its URL path); the body that runs `dummy` on it."""
    await dps.json("PUT", f"{workspace}/objects/in.bin", 201, key=token, data=b"x")
    return {"asset_id": "dummy", "workspace_id": workspace.rsplit("/", 1)[-1], "inputs": {"source": "in.bin"}}


async def test_a_started_flow_opens_its_workspace_until_suspended_and_terminate_removes_it(dps: Api) -> None:
    answer = await signal(dps, "start", 200, example("start"))
    assert valid("DataFlowStatusMessage", answer) == []
    assert answer["state"] == "STARTED" and answer["dataFlowId"] == "process-start-1"
    workspace, token = address_of(answer)
    await dps.json("PUT", f"{workspace}/objects/in.bin", 201, key=token, data=b"consumer data")
    listed = await dps.json("GET", f"{workspace}/objects", 200, key=token)
    assert [o["key"] for o in listed["items"]] == ["in.bin"]
    shown = await dps.json("GET", workspace, 200, key=ADMIN_KEY)
    assert shown["allowed_assets"] == ["dummy"]  # what the dataset's offering grants

    suspended = await signal(dps, "process-start-1/suspend", 200, example("suspend"))
    assert valid("DataFlowStatusMessage", suspended) == [] and suspended["state"] == "SUSPENDED"
    await dps.json("GET", f"{workspace}/objects", 401, key=token)  # at once
    await signal(dps, "process-start-1/suspend", 200, example("suspend"))  # again: no change
    assert await flow_state(dps, "process-start-1") == "SUSPENDED"

    resumed = await signal(dps, "process-start-1/resume", 200, example("resume"))
    assert valid("DataFlowStatusMessage", resumed) == [] and resumed["state"] == "STARTED"
    same_workspace, fresh = address_of(resumed)
    assert same_workspace == workspace and fresh != token
    response = await dps.request("GET", f"{workspace}/objects/in.bin", key=fresh)
    assert response.status == 200 and await response.read() == b"consumer data"
    await dps.json("GET", f"{workspace}/objects", 401, key=token)  # the old token stays revoked

    ended = await signal(dps, "process-start-1/terminate", 200, example("terminate"))
    assert ended["state"] == "TERMINATED"
    await dps.json("GET", f"{workspace}/objects", 401, key=fresh)
    await dps.json("GET", workspace, 404, key=ADMIN_KEY)  # deleted
    assert await flow_state(dps, "process-start-1") == "TERMINATED"
    await signal(dps, "process-start-1/resume", 409, example("resume"))  # final states stay final


async def test_operators_list_flows_page_by_page_with_their_state(dps: Api) -> None:
    for process in ("process-list-a", "process-list-b", "process-list-c"):
        await signal(dps, "start", 200, {**example("start"), "processId": process})
    await signal(dps, "process-list-b/suspend", 200, example("suspend"))
    seen, token = [], None
    while True:
        query = "page_size=2" + (f"&page_token={token}" if token else "")
        page = await dps.json("GET", f"/api/v1/dataflows?{query}", 200, key=ADMIN_KEY)
        seen += [(f["id"], f["state"], f["role"]) for f in page["items"]]
        token = page["next_page_token"]
        if not token:
            break
    assert seen == [
        ("process-list-a", "STARTED", "provider"),
        ("process-list-b", "SUSPENDED", "provider"),
        ("process-list-c", "STARTED", "provider"),
    ]
    suspended = await dps.json("GET", "/api/v1/dataflows?state=SUSPENDED", 200, key=ADMIN_KEY)
    assert [f["id"] for f in suspended["items"]] == ["process-list-b"]
    assert suspended["items"][0]["control_plane"] and suspended["items"][0]["notice"] is None
    await dps.json("GET", "/api/v1/dataflows", 401)


async def test_a_suspended_flow_s_workspace_is_closed_to_the_consumer_s_api_keys_too(dps: Api) -> None:
    """The consumer may hold an API key of its tenant (the one its flows' workspaces belong to):
    revoking tokens alone would leave that way in."""
    tenant = await dps.json(
        "POST", "/api/v1/tenants", 201, key=ADMIN_KEY, json={"participant_id": "did:web:consumer.example"}
    )
    key = (await dps.json("POST", f"/api/v1/tenants/{tenant['id']}/api-keys", 201, key=ADMIN_KEY, json={}))[
        "key"
    ]
    answer = await signal(dps, "start", 200, example("start", processId="p-keys"))
    workspace, _ = address_of(answer)
    await dps.json("PUT", f"{workspace}/objects/in.bin", 201, key=key, data=b"x")
    await signal(dps, "p-keys/suspend", 200, example("suspend"))
    assert (await dps.json("GET", workspace, 200, key=key))["state"] == "suspended"
    for method, path in (("GET", "/objects"), ("GET", "/objects/in.bin"), ("PUT", "/objects/more.bin")):
        response = await dps.request(method, f"{workspace}{path}", key=key, data=b"y")
        assert response.status == 409, (method, path, response.status)
    refused = await dps.request("POST", f"{workspace}/tokens", key=key, json={"name": "sneaky"})
    assert refused.status == 409  # no new token either
    execution = {
        "asset_id": "dummy",
        "workspace_id": workspace.rsplit("/", 1)[-1],
        "inputs": {"source": "in.bin"},
    }
    response = await dps.request("POST", "/api/v1/executions", key=key, json=execution)
    assert response.status == 409  # nothing new runs
    await signal(dps, "p-keys/resume", 200, example("resume"))
    response = await dps.request("GET", f"{workspace}/objects/in.bin", key=key)
    assert response.status == 200 and await response.read() == b"x"
    assert (await dps.json("GET", workspace, 200, key=key))["state"] == "active"


async def test_suspend_holds_queued_executions_and_resume_submits_them_again(
    aiohttp_client: Any, settings: Settings, control_plane: ControlPlane, contract: Any
) -> None:
    """A running execution runs on; a queued one is withdrawn from compute before it begins, its
    late reports change nothing, and on resume it runs as its next attempt (costing no retry)."""
    compute = DrivenCompute()
    app = create_app(signaling_settings(settings, control_plane), compute=compute)
    dps = Api(await aiohttp_client(app), contract, app)
    workspace, token = address_of(await signal(dps, "start", 200, example("start", processId="p-hold")))
    request = await dummy_run(dps, workspace, token)
    running = await dps.json("POST", "/api/v1/executions", 201, key=token, json=request)
    queued = await dps.json("POST", "/api/v1/executions", 201, key=token, json=request)
    await compute.emit(running["id"], State.RUNNING, attempt=1)

    await signal(dps, "p-hold/suspend", 200, example("suspend"))
    held = await dps.json("GET", f"/api/v1/executions/{queued['id']}", 200, key=ADMIN_KEY)
    assert (held["state"], held["reason"], held["attempt"]) == ("QUEUED", "Suspended", 2)
    assert held["attempts"][0]["reason"] == "Suspended"
    assert compute.withdrawn == [queued["id"]] and queued["id"] not in compute.running
    await compute.emit(queued["id"], State.RUNNING, attempt=1)  # its withdrawn job, late ...
    await poll_until(lambda: compute.withdrawn == [queued["id"]] * 2, "the late job withdrawn again")
    assert (await dps.json("GET", f"/api/v1/executions/{queued['id']}", 200, key=ADMIN_KEY))[
        "state"
    ] == "QUEUED"
    still = await dps.json("GET", f"/api/v1/executions/{running['id']}", 200, key=ADMIN_KEY)
    assert still["state"] == "RUNNING"
    await compute.emit(running["id"], State.COMPLETE, attempt=1)  # began before: it finishes
    submissions = len(compute.submitted)

    await signal(dps, "p-hold/suspend", 200, example("suspend"))  # again: nothing more is held
    assert compute.withdrawn == [queued["id"]] * 2
    resumed = await signal(dps, "p-hold/resume", 200, example("resume"))
    _, fresh = address_of(resumed)
    assert [(j.execution_id, j.attempt) for j in compute.submitted[submissions:]] == [(queued["id"], 2)]
    shown = await dps.json("GET", f"/api/v1/executions/{queued['id']}", 200, key=fresh)
    assert (shown["state"], shown["reason"]) == ("QUEUED", None)
    await compute.emit(queued["id"], State.COMPLETE, attempt=2)
    done = await dps.json("GET", f"/api/v1/executions/{queued['id']}", 200, key=fresh)
    assert done["state"] == "COMPLETE"


async def test_completed_ends_a_provider_flow_like_terminate(dps: Api) -> None:
    answer = await signal(dps, "start", 200, example("start", processId="p-done"))
    workspace, token = address_of(answer)
    await signal(dps, "p-done/completed", 400, {"messageId": "x"})  # completed carries no message
    assert (await signal(dps, "p-done/completed", 200))["state"] == "COMPLETED"
    await dps.json("GET", f"{workspace}/objects", 401, key=token)
    await dps.json("GET", workspace, 404, key=ADMIN_KEY)


async def test_an_ended_flow_s_workspace_is_closed_at_once_and_deleted_after_the_retention(
    aiohttp_client: Any, settings: Settings, control_plane: ControlPlane, contract: Any, clock: MovableClock
) -> None:
    app = create_app(signaling_settings(settings, control_plane, retention_seconds=3600), clock=clock)
    dps = Api(await aiohttp_client(app), contract, app)
    workspace, token = address_of(await signal(dps, "start", 200, example("start", processId="p-keep")))
    await dps.json("PUT", f"{workspace}/objects/in.bin", 201, key=token, data=b"x")
    await signal(dps, "p-keep/terminate", 200, example("terminate"))
    await dps.json("GET", f"{workspace}/objects", 401, key=token)  # closed at once
    assert (await dps.json("GET", workspace, 200, key=ADMIN_KEY))["state"] == "suspended"  # data kept
    await app[CONTEXT].signaling.sweep()
    await dps.json("GET", workspace, 200, key=ADMIN_KEY)  # not yet
    clock.advance(3601)
    await app[CONTEXT].signaling.sweep()
    await dps.json("GET", workspace, 404, key=ADMIN_KEY)
    assert await flow_state(dps, "p-keep") == "TERMINATED"


async def idle_completing(
    aiohttp_client: Any,
    settings: Settings,
    control_plane: ControlPlane,
    contract: Any,
    clock: MovableClock,
    **signaling: Any,
) -> tuple[Api, DrivenCompute]:
    """The service with signaling.complete_after_idle_seconds 60, on a compute the test drives."""
    compute = DrivenCompute()
    app = create_app(
        signaling_settings(settings, control_plane, complete_after_idle_seconds=60, **signaling),
        compute=compute,
        clock=clock,
    )
    return Api(await aiohttp_client(app), contract, app), compute


async def test_a_flow_completes_by_itself_once_its_executions_are_done_and_idle(
    aiohttp_client: Any, settings: Settings, control_plane: ControlPlane, contract: Any, clock: MovableClock
) -> None:
    """signaling.complete_after_idle_seconds: the control plane hears `completed`, the workspace goes."""
    dps, compute = await idle_completing(aiohttp_client, settings, control_plane, contract, clock)
    sweep = dps.app[CONTEXT].signaling.sweep
    workspace, token = address_of(await signal(dps, "start", 200, example("start", processId="p-idle")))
    unused, _ = address_of(await signal(dps, "start", 200, example("start", processId="p-unused")))
    busy, busy_token = address_of(await signal(dps, "start", 200, example("start", processId="p-busy")))
    runs = []
    for path, key in ((workspace, token), (busy, busy_token)):
        request = await dummy_run(dps, path, key)
        runs.append(await dps.json("POST", "/api/v1/executions", 201, key=key, json=request))
    await compute.emit(runs[0]["id"], State.COMPLETE, attempt=1)
    await compute.emit(runs[1]["id"], State.RUNNING, attempt=1)
    await sweep()
    assert await flow_state(dps, "p-idle") == "STARTED"  # not idle long enough yet
    clock.advance(61)
    await sweep()
    assert await flow_state(dps, "p-idle") == "COMPLETED"
    assert await flow_state(dps, "p-unused") == "STARTED"  # ran nothing: the consumer may still
    assert await flow_state(dps, "p-busy") == "STARTED"  # still running
    await poll_until(lambda: [r for r in control_plane.received if r[0] == "p-idle"], "the completed notice")
    [(_, notice, authorization, body)] = [r for r in control_plane.received if r[0] == "p-idle"]
    assert (notice, authorization, body["state"]) == ("completed", f"Bearer {CALLBACK_TOKEN}", "COMPLETED")
    await dps.json("GET", f"{workspace}/objects", 401, key=token)
    await dps.json("GET", workspace, 404, key=ADMIN_KEY)  # no retention configured: deleted
    await dps.json("GET", unused, 200, key=ADMIN_KEY)


async def test_the_sweep_closes_what_a_stop_left_open_and_one_failing_deletion_stops_no_other(
    aiohttp_client: Any,
    settings: Settings,
    control_plane: ControlPlane,
    contract: Any,
    clock: MovableClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    app = create_app(signaling_settings(settings, control_plane, retention_seconds=60), clock=clock)
    dps = Api(await aiohttp_client(app), contract, app)
    signaling = app[CONTEXT].signaling
    await signaling._tasks.stop("notices")  # the sweeps are this test's alone
    stuck, stuck_token = address_of(await signal(dps, "start", 200, example("start", processId="p-stuck")))
    other, _ = address_of(await signal(dps, "start", 200, example("start", processId="p-other")))
    # The end of p-stuck is stored, and the process stops before it closes the workspace.
    await signaling._move("cp", "p-stuck", FlowState.TERMINATED, retain=True)
    await dps.json("GET", f"{stuck}/objects", 200, key=stuck_token)  # still open
    await signaling.sweep()
    await dps.json("GET", f"{stuck}/objects", 401, key=stuck_token)  # closed by the sweep
    assert (await dps.json("GET", stuck, 200, key=ADMIN_KEY))["state"] == "suspended"
    await signal(dps, "p-other/terminate", 200, example("terminate"))
    workspaces = app[CONTEXT].workspaces
    delete, refused = workspaces.delete_system, stuck.rsplit("/", 1)[-1]

    async def failing(workspace_id: str) -> None:
        if workspace_id == refused:
            raise Unavailable("the storage refuses (injected)")
        await delete(workspace_id)

    monkeypatch.setattr(workspaces, "delete_system", failing)
    clock.advance(61)
    assert await signaling.sweep() == (0, 1)  # p-stuck's deletion failed, p-other's went on
    await dps.json("GET", other, 404, key=ADMIN_KEY)
    await dps.json("GET", stuck, 200, key=ADMIN_KEY)
    monkeypatch.setattr(workspaces, "delete_system", delete)
    clock.advance(121)  # its claim runs out: the next sweep tries again
    assert await signaling.sweep() == (0, 1)
    await dps.json("GET", stuck, 404, key=ADMIN_KEY)


async def test_a_flow_that_completes_by_itself_closes_its_workspace_in_the_same_commit(
    aiohttp_client: Any,
    settings: Settings,
    control_plane: ControlPlane,
    contract: Any,
    clock: MovableClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No execution can slip in between the completion and the closing of the workspace: the
    completion closes it in its own transaction (and a start locks the same row)."""
    dps, compute = await idle_completing(
        aiohttp_client, settings, control_plane, contract, clock, retention_seconds=600
    )
    signaling = dps.app[CONTEXT].signaling
    await signaling._tasks.stop("notices")  # the sweeps are this test's alone
    workspace, token = address_of(await signal(dps, "start", 200, example("start", processId="p-atomic")))
    request = await dummy_run(dps, workspace, token)
    run = await dps.json("POST", "/api/v1/executions", 201, key=token, json=request)
    await compute.emit(run["id"], State.COMPLETE, attempt=1)
    clock.advance(61)

    async def stopped_here(flow: Any, why: str) -> None:
        return None  # the process stops right after the completion's commit

    monkeypatch.setattr(signaling, "_close", stopped_here)
    assert await signaling.sweep() == (1, 0)
    refused = await dps.request("POST", "/api/v1/executions", key=token, json=request)
    assert refused.status in (401, 409)  # the token may still be valid; the workspace is closed
    assert (await dps.json("GET", workspace, 200, key=ADMIN_KEY))["state"] == "suspended"
    tenant_key = await dps.json(
        "POST",
        f"/api/v1/tenants/{(await dps.json('GET', workspace, 200, key=ADMIN_KEY))['tenant_id']}/api-keys",
        201,
        key=ADMIN_KEY,
        json={},
    )
    refused = await dps.request("POST", "/api/v1/executions", key=tenant_key["key"], json=request)
    assert refused.status == 409


async def test_idle_flows_complete_however_many_are_busy(
    aiohttp_client: Any, settings: Settings, control_plane: ControlPlane, contract: Any, clock: MovableClock
) -> None:
    """Flows that never finish (never ran anything) do not keep later flows from completing."""
    dps, compute = await idle_completing(aiohttp_client, settings, control_plane, contract, clock)
    app = dps.app
    await app[CONTEXT].signaling._tasks.stop("notices")  # the sweeps are this test's alone
    for n in range(3):
        await signal(dps, "start", 200, example("start", processId=f"p-unused-{n}"))
    workspace, token = address_of(await signal(dps, "start", 200, example("start", processId="p-last")))
    request = await dummy_run(dps, workspace, token)
    run = await dps.json("POST", "/api/v1/executions", 201, key=token, json=request)
    await compute.emit(run["id"], State.COMPLETE, attempt=1)
    clock.advance(61)
    assert await app[CONTEXT].signaling.sweep(limit=2) == (1, 0)  # pages of two: the fourth flow too
    assert await flow_state(dps, "p-last") == "COMPLETED"


async def test_a_second_start_of_a_process_is_refused_and_makes_nothing(dps: Api) -> None:
    await signal(dps, "start", 200, example("start", processId="p-dup"))
    before = await dps.json("GET", "/api/v1/workspaces", 200, key=ADMIN_KEY)
    await signal(dps, "start", 409, example("start", processId="p-dup", messageId="another"))
    after = await dps.json("GET", "/api/v1/workspaces", 200, key=ADMIN_KEY)
    assert len(after["items"]) == len(before["items"])
    # Each control plane has its own flows: the other one neither sees this flow nor clashes with it.
    await dps.json("GET", "/signaling/v1/dataflows/p-dup/status", 404, key=OTHER_SECRET)
    await signal(dps, "p-dup/terminate", 404, example("terminate"), key=OTHER_SECRET)
    assert await flow_state(dps, "p-dup") == "STARTED"


@pytest.mark.parametrize(
    ("changes", "why"),
    [
        ({"profile": "https://w3id.org/dspace-sig/profile/http-push"}, "provider-push"),
        ({"profile": "https://w3id.org/dspace-sig/profile/http"}, "names no direction"),
        (
            {"dataAddress": json.loads((DPS / "examples" / "started.json").read_text())["dataAddress"]},
            "no data address",
        ),
        ({"datasetId": "an-offering-nobody-sells"}, "grants no compute asset"),
        ({"processId": ""}, "processId"),
        ({"claims": "none"}, "claims"),
    ],
)
async def test_starts_the_specification_refuses_are_400(dps: Api, changes: dict[str, Any], why: str) -> None:
    before = await dps.json("GET", "/api/v1/workspaces", 200, key=ADMIN_KEY)
    problem = await signal(dps, "start", 400, example("start", **{"processId": "p-bad", **changes}))
    assert why in json.dumps(problem)
    after = await dps.json("GET", "/api/v1/workspaces", 200, key=ADMIN_KEY)
    assert len(after["items"]) == len(before["items"])  # nothing made
    await dps.json("GET", "/signaling/v1/dataflows/p-bad/status", 404, key=CP_SECRET)


@pytest.mark.parametrize(
    ("body", "content_type", "status"),
    [
        (b"{", "application/json", 400),
        (b"[1]", "application/json", 400),
        (b'{"messageId": 5}', "application/json", 400),
        (b"[" * 1000 + b"]" * 1000, "application/json", 400),
        (b'{"messageId": "m", "reason": ' + b"9" * 5000 + b"}", "application/json", 400),
        (b"{}", "text/plain", 415),
        (b'{"x": "' + b"y" * (1024 * 1024 + 10) + b'"}', "application/json", 413),
    ],
)
async def test_every_signal_refuses_bad_bodies_with_a_4xx_and_changes_nothing(
    dps: Api, body: bytes, content_type: str, status: int
) -> None:
    await signal(dps, "start", 200, example("start", processId="p-body"))
    paths = [
        ("POST", "/signaling/v1/dataflows/start"),
        ("POST", "/signaling/v1/dataflows/prepare"),
        ("PUT", "/signaling/v1/controlplanes"),
        *(
            ("POST", f"/signaling/v1/dataflows/p-body/{a}")
            for a in ("started", "suspend", "resume", "terminate")
        ),
    ]
    for method, path in paths:
        response = await dps.request(
            method, path, key=CP_SECRET, data=body, headers={"Content-Type": content_type}
        )
        assert response.status == status, f"{method} {path}: {response.status}"
        assert response.content_type == "application/problem+json"
    assert await flow_state(dps, "p-body") == "STARTED"


async def test_signals_need_a_control_plane_s_secret_and_a_known_flow(dps: Api) -> None:
    await signal(dps, "start", 401, example("start"), key="not-the-secret-" + "x" * 30)
    response = await dps.request("POST", "/signaling/v1/dataflows/start", json=example("start"))
    assert response.status == 401
    response = await dps.request(
        "POST", "/signaling/v1/dataflows/start", json=example("start"), headers={"Authorization": CP_SECRET}
    )
    assert response.status == 401  # the secret is a bearer token
    for action in ("suspend", "resume", "terminate"):
        await signal(dps, f"unknown/{action}", 404, example(action))
    await signal(dps, "unknown/completed", 404)
    await dps.json("GET", "/signaling/v1/dataflows/unknown/status", 404, key=CP_SECRET)


async def test_without_control_planes_the_api_is_not_there(api: Api) -> None:
    await api.json("POST", "/signaling/v1/dataflows/start", 404, key=CP_SECRET, json=example("start"))


def test_data_addresses_must_point_at_https(settings: Settings) -> None:
    with pytest.raises(ConfigError, match=r"server\.public_url"):
        create_app(
            Settings.model_validate(
                {
                    **settings.model_dump(mode="json", exclude={"auth"}),
                    "signaling": {"control_planes": {"cp": {"secret": CP_SECRET}}},
                }
            )
        )


async def test_deleting_a_flow_s_workspace_ends_the_flow_and_tells_the_control_plane(
    dps: Api, control_plane: ControlPlane
) -> None:
    answer = await signal(dps, "start", 200, example("start", processId="p-gone"))
    workspace, _ = address_of(answer)
    await dps.json("DELETE", workspace, 204, key=ADMIN_KEY)
    await poll_until(lambda: control_plane.received, "the errored notice")
    process, notice, authorization, body = control_plane.received[0]
    assert (process, notice, authorization) == ("p-gone", "errored", f"Bearer {CALLBACK_TOKEN}")
    assert body["dataFlowId"] == "p-gone" and "deleted" in body["error"]
    assert await flow_state(dps, "p-gone") == "TERMINATED"


# --- consumer flows -------------------------------------------------------------------------


async def consumer_registration(
    api: Api, agreement: str, participant: str = "did:web:consumer.example"
) -> tuple[str, str]:
    tenant = await api.json(
        "POST", "/api/v1/tenants", 201, key=ADMIN_KEY, json={"participant_id": participant}
    )
    key = (await api.json("POST", f"/api/v1/tenants/{tenant['id']}/api-keys", 201, key=ADMIN_KEY, json={}))[
        "key"
    ]
    ws = (await api.json("POST", "/api/v1/workspaces", 201, key=key, json={}))["id"]
    await api.json(
        "POST",
        f"/api/v1/workspaces/{ws}/edc-transfers",
        201,
        key=key,
        json={"contract_id": agreement, "target_key": "inputs/weather.bin"},
    )
    return key, ws


def started_from(server: TestServer) -> dict[str, Any]:
    message = example("started")
    message["dataAddress"]["endpoint"] = str(server.make_url("/public/weather"))
    return message


async def test_a_prepared_flow_imports_the_provider_s_data_and_reports_completion(
    dps: Api, control_plane: ControlPlane, source: tuple[TestServer, bytes, list[str | None]]
) -> None:
    server, data, seen = source
    key, ws = await consumer_registration(dps, "agreement-data-1")
    prepared = await signal(dps, "prepare", 200, example("prepare"))
    assert valid("DataFlowStatusMessage", prepared) == [] and prepared["state"] == "PREPARED"
    assert "dataAddress" not in prepared  # consumer-pull: the provider makes the address
    # Busy (EDC's lease), then down for a while, when the import ends.
    control_plane.refusals = [409, 503]
    started = await signal(dps, "process-prepare-1/started", 200, started_from(server))
    assert started["state"] == "STARTED"
    await signal(dps, "process-prepare-1/started", 200, started_from(server))  # told twice: one import

    async def imported() -> bytes | None:
        response = await dps.request("GET", f"/api/v1/workspaces/{ws}/objects/inputs/weather.bin", key=key)
        return await response.read() if response.status == 200 else None

    assert await poll_until(imported, "the imported object") == data
    await poll_until(lambda: control_plane.received, "the completed notice")
    process, notice, authorization, body = control_plane.received[0]
    assert (process, notice, authorization, body["state"]) == (
        "process-prepare-1",
        "completed",
        f"Bearer {CALLBACK_TOKEN}",
        "COMPLETED",
    )
    assert control_plane.refusals == [] and len(control_plane.received) == 1  # retried until taken, once
    assert seen == ["Bearer TOKEN-ABCDEFG"]  # RFC 6750, as the HTTP profile says for authType bearer
    assert await flow_state(dps, "process-prepare-1") == "COMPLETED"
    imports = await dps.json("GET", f"/api/v1/workspaces/{ws}/imports", 200, key=key)
    assert len(imports["items"]) == 1


async def test_a_failing_source_is_reported_as_errored(
    dps: Api, control_plane: ControlPlane, source: tuple[TestServer, bytes, list[str | None]]
) -> None:
    server, _, _ = source
    await consumer_registration(dps, "agreement-data-1")
    await signal(dps, "prepare", 200, example("prepare"))
    message = started_from(server)
    message["dataAddress"]["endpointProperties"][0]["value"] = "WRONG-TOKEN"
    await signal(dps, "process-prepare-1/started", 200, message)
    await poll_until(lambda: control_plane.received, "the errored notice")
    _, notice, _, body = control_plane.received[0]
    assert notice == "errored" and "403" in body["error"]


async def test_consumer_flows_bind_only_registered_workspaces_and_safe_addresses(
    dps: Api, source: tuple[TestServer, bytes, list[str | None]]
) -> None:
    server, _, _ = source
    problem = await signal(dps, "prepare", 400, example("prepare"))
    assert "register" in problem["detail"]  # nothing registered for this agreement
    # A control plane prepares only for the participants it acts for (the other one: none).
    await signal(dps, "prepare", 403, example("prepare"), key=OTHER_SECRET)
    await signal(dps, "prepare", 403, example("prepare", participantId="did:web:somebody-else"))
    await consumer_registration(dps, "agreement-data-1", participant="did:web:somebody-else")
    await signal(dps, "prepare", 400, example("prepare"))  # registered, but by another participant
    await consumer_registration(dps, "agreement-data-1")
    await signal(
        dps, "prepare", 400, example("prepare", profile="https://w3id.org/dspace-sig/profile/http-push")
    )
    await signal(dps, "prepare", 200, example("prepare"))
    await signal(dps, "prepare", 409, example("prepare"))
    flow = "process-prepare-1"
    await signal(dps, f"{flow}/started", 400, {"messageId": "m"})  # pull: the address is needed
    plain = started_from(server)
    plain["dataAddress"]["endpoint"] = "http://data-provider.example/public/weather"
    problem = await signal(dps, f"{flow}/started", 400, plain)
    assert "HTTPS" in problem["detail"]
    no_type = started_from(server)
    no_type["dataAddress"]["endpointProperties"] = [{"name": "authorization", "value": "TOKEN-ABCDEFG"}]
    await signal(dps, f"{flow}/started", 400, no_type)  # authorization needs authType
    assert await flow_state(dps, flow) == "PREPARED"  # nothing refused moved it


async def test_a_control_plane_registers_where_its_notices_go(dps: Api, control_plane: ControlPlane) -> None:
    message = example("register-control-plane", endpoint="http://10.1.2.3/signaling")
    await dps.json("PUT", "/signaling/v1/controlplanes", 400, key=CP_SECRET, json=message)  # not allowed
    message = example("register-control-plane", endpoint=control_plane.url)
    assert valid("ControlPlaneRegistrationMessage", message) == []
    await dps.json("PUT", "/signaling/v1/controlplanes", 200, key=CP_SECRET, json=message)
    path = f"/signaling/v1/controlplanes/{message['controlplaneId']}"
    await dps.json("DELETE", path, 204, key=CP_SECRET)
    await dps.json("DELETE", path, 404, key=CP_SECRET)
    await dps.json("DELETE", path, 401)


async def test_a_suspended_consumer_flow_resumes_from_a_new_address(
    dps: Api, source: tuple[TestServer, bytes, list[str | None]]
) -> None:
    server, data, _ = source
    key, ws = await consumer_registration(dps, "agreement-data-1")
    await signal(dps, "prepare", 200, example("prepare"))
    await signal(dps, "process-prepare-1/started", 200, started_from(server))
    await signal(dps, "process-prepare-1/suspend", 200, example("suspend"))
    await signal(dps, "process-prepare-1/resume", 400, example("resume"))  # from where?
    resumed = example("resume")
    resumed["dataAddress"] = started_from(server)["dataAddress"]
    assert valid("DataFlowResumeMessage", resumed) == []
    await signal(dps, "process-prepare-1/resume", 200, resumed)

    async def imported() -> bytes | None:
        response = await dps.request("GET", f"/api/v1/workspaces/{ws}/objects/inputs/weather.bin", key=key)
        return await response.read() if response.status == 200 else None

    assert await poll_until(imported, "the imported object") == data


async def test_a_consumer_flow_whose_import_ended_unheard_completes_at_the_next_start(
    dps: Api, control_plane: ControlPlane, source: tuple[TestServer, bytes, list[str | None]]
) -> None:
    """A crash between the import's end and the flow's: the next start-up finishes the flow."""
    server, _, _ = source
    context = dps.app[CONTEXT]
    key, ws = await consumer_registration(dps, "agreement-data-1")
    await signal(dps, "prepare", 200, example("prepare"))
    context.imports.listeners.remove(context.signaling.on_import)  # nobody hears the import end
    await signal(dps, "process-prepare-1/started", 200, started_from(server))

    async def imported() -> bool:
        listed = await dps.json("GET", f"/api/v1/workspaces/{ws}/imports", 200, key=key)
        return bool(listed["items"]) and listed["items"][0]["state"] == "succeeded"

    await poll_until(imported, "the import")
    assert await flow_state(dps, "process-prepare-1") == "STARTED"
    assert await context.signaling.recover() == 1
    assert await flow_state(dps, "process-prepare-1") == "COMPLETED"
    await poll_until(lambda: control_plane.received, "the completed notice")
    assert control_plane.received[0][1] == "completed"


async def test_odd_inputs_are_4xx_never_500(
    dps: Api, source: tuple[TestServer, bytes, list[str | None]]
) -> None:
    server, _, _ = source
    response = await dps.request(
        "POST",
        "/signaling/v1/dataflows/start",
        json=example("start"),
        headers={"Authorization": "Bearer \xff\xfe not UTF-8"},
    )
    assert response.status == 401
    long_party = "did:web:" + "c" * 400  # beyond the tenant's display name
    answer = await signal(dps, "start", 200, example("start", processId="p-long", counterPartyId=long_party))
    assert answer["state"] == "STARTED"
    for endpoint in ("https://[::1", "https://cp.example:99999/signaling"):
        registration = example("register-control-plane", endpoint=endpoint)
        await dps.json("PUT", "/signaling/v1/controlplanes", 400, key=CP_SECRET, json=registration)
    await consumer_registration(dps, "agreement-data-1")
    await signal(dps, "prepare", 200, example("prepare"))
    broken = started_from(server)
    broken["dataAddress"]["endpoint"] = "https://[::1"
    await signal(dps, "process-prepare-1/started", 400, broken)
    assert await flow_state(dps, "process-prepare-1") == "PREPARED"


OAUTH2 = {
    "type": "oauth2_client_credentials",
    "tokenEndpoint": "https://auth.provider.test/token",
    "clientId": "provider",
    "clientSecret": "client-secret-of-the-data-plane",
}


async def test_the_data_plane_registers_itself_until_the_control_plane_takes_it(
    aiohttp_client: Any, settings: Settings, control_plane: ControlPlane, contract: Any
) -> None:
    control_plane.registration_answers = [503, 409]  # down, then busy: tried again
    registration = {"url": control_plane.url, "authorization": OAUTH2, "labels": ["compute"]}
    app = create_app(signaling_settings(settings, control_plane, cp={"registration": registration}))
    await aiohttp_client(app)
    assert await wait_event(control_plane.registered, WAIT_SECONDS)
    assert len(control_plane.registrations) == 3
    authorization, message = control_plane.registrations[-1]
    assert valid("DataPlaneRegistrationMessage", message) == []
    assert authorization == f"Bearer {CALLBACK_TOKEN}"
    assert message == {
        "dataplaneId": "provider-provider.test",
        "endpoint": f"{PUBLIC}/signaling/v1",
        "profiles": ["https://w3id.org/dspace-sig/profile/http-pull"],
        "authorization": OAUTH2,
        "labels": ["compute"],
    }


async def test_a_refused_registration_is_not_repeated(
    aiohttp_client: Any, settings: Settings, control_plane: ControlPlane, contract: Any
) -> None:
    control_plane.registration_answers = [403]
    registration = {"url": control_plane.url, "authorization": OAUTH2}
    app = create_app(signaling_settings(settings, control_plane, cp={"registration": registration}))
    await aiohttp_client(app)
    tasks = app[CONTEXT].signaling._tasks
    # The start-up attempt gives up on the 403: it is the operator's to fix, not to hammer.
    await poll_until(lambda: not tasks.running(("registration", "cp")), "the registration given up")
    assert len(control_plane.registrations) == 1 and not control_plane.registered.is_set()


def test_a_registration_names_its_authorization_profile(settings: Settings) -> None:
    for authorization in ({}, {"type": ""}, {"type": 7}):
        with pytest.raises(ValueError, match="authorization profile"):
            Settings.model_validate(
                {
                    **settings.model_dump(mode="json", exclude={"auth"}),
                    "signaling": {
                        "control_planes": {
                            "cp": {
                                "secret": CP_SECRET,
                                "registration": {"url": "https://cp.test", "authorization": authorization},
                            }
                        }
                    },
                }
            )


def test_control_plane_names_are_short_plain_words(settings: Settings) -> None:
    with pytest.raises(ValueError, match="control plane's name"):
        Settings.model_validate(
            {
                **settings.model_dump(mode="json", exclude={"auth"}),
                "signaling": {"control_planes": {"x" * 65: {"secret": CP_SECRET}}},
            }
        )


async def test_a_notice_seen_due_by_several_senders_at_once_is_sent_once(
    dps: Api, control_plane: ControlPlane
) -> None:
    """Replicas (here: rounds of one, at once) that find the same notice due: one claims it."""
    context = dps.app[CONTEXT]
    answer = await signal(dps, "start", 200, example("start", processId="p-once"))
    workspace, _ = address_of(answer)
    control_plane.refusals = [503]  # the first attempt fails: the notice is due again at once
    await dps.json("DELETE", workspace, 204, key=ADMIN_KEY)
    await poll_until(lambda: not control_plane.refusals, "the first attempt")
    await asyncio.gather(*(context.signaling.send_due() for _ in range(4)))

    async def settled() -> bool:
        async with context.store.read() as uow:
            flow = await uow.dataflows.get("cp", "p-once")
        return flow is not None and flow.notice is None

    await poll_until(settled, "the notice taken")
    assert [r[:2] for r in control_plane.received] == [("p-once", "errored")]
