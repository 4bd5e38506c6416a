"""The Eclipse Data Plane Signaling API (v1.0-RC3) at /signaling/v1: the data plane endpoints and
the control plane registration endpoints (all of them, as the specification asks of either).

Messages are read as the specification's schemas have them (contracts/dps/schemas); every
signal needs `Authorization: Bearer <the control plane's secret>` (signaling.control_planes);
errors are problem JSON, and a malformed message is the specification's 400."""

from __future__ import annotations

from typing import Annotated, Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, StrictStr

from provider.api.bodies import read_body
from provider.api.context import ctx
from provider.api.parsing import parse_json
from provider.api.problems import ProblemError
from provider.api.routing import Access, Route
from provider.domain.errors import NotFound
from provider.services.signaling import DataAddress, FlowMessage, SignalingService, status_message

BASE = "/signaling/v1"
Id = Annotated[StrictStr, Field(min_length=1, max_length=255)]
Text = Annotated[StrictStr, Field(max_length=512)]


class _Message(BaseModel):
    model_config = ConfigDict(extra="allow")  # the specification's schemas allow more


class EndpointProperty(_Message):
    name: Annotated[StrictStr, Field(min_length=1, max_length=255)]
    value: Annotated[StrictStr, Field(max_length=16384)]


class DspDataAddress(_Message):
    endpointType: Annotated[StrictStr, Field(min_length=1, max_length=512)]
    endpoint: Annotated[StrictStr, Field(max_length=4096)] | None = None
    endpointProperties: list[EndpointProperty] = Field(default_factory=list, max_length=64)

    def address(self) -> DataAddress:
        return DataAddress(
            self.endpointType, self.endpoint, {p.name: p.value for p in self.endpointProperties}
        )


class DataFlowMessage(_Message):
    """DataFlowPrepareMessage and DataFlowStartMessage (DataFlowBaseMessage and a data address)."""

    messageId: Text
    participantId: Text
    counterPartyId: Text
    dataspaceContext: Text
    processId: Id
    agreementId: Text
    datasetId: Text
    profile: Text
    claims: dict[str, Any]
    metadata: dict[str, Any] | None = None
    labels: list[StrictStr] | None = None
    dataAddress: DspDataAddress | None = None

    def flow(self) -> FlowMessage:
        return FlowMessage(
            self.processId,
            self.participantId,
            self.counterPartyId,
            self.agreementId,
            self.datasetId,
            self.profile,
            self.dataAddress is not None,
        )


class SignalMessage(_Message):
    """DataFlowSuspendMessage, DataFlowTerminateMessage (`reason`), DataFlowResumeMessage and
    DataFlowStartedNotificationMessage (`dataAddress`)."""

    messageId: Text
    reason: Annotated[StrictStr, Field(max_length=4096)] | None = None
    dataAddress: DspDataAddress | None = None


class ControlPlaneRegistration(_Message):
    controlplaneId: Id
    endpoint: Annotated[StrictStr, Field(min_length=1, max_length=2048)]
    authorization: dict[str, Any] | None = None


def _service(request: web.Request) -> tuple[SignalingService, str]:
    """The service and the calling control plane; 404 while no control plane is configured."""
    service = ctx(request).signaling
    if not service.enabled:
        raise NotFound("api", "signaling")
    return service, service.authenticate(request.headers.get("Authorization"))


M = TypeVar("M", bound=BaseModel)


async def _read(request: web.Request, model: type[M]) -> M:
    try:
        return await parse_json(request, model)
    except ProblemError as exc:  # the specification answers bad input 400
        raise ProblemError(
            400 if exc.status == 422 else exc.status, exc.slug, exc.detail, exc.problems
        ) from exc


async def prepare(request: web.Request) -> web.Response:
    service, control_plane = _service(request)
    message = await _read(request, DataFlowMessage)
    flow = await service.prepare(control_plane, message.flow())
    return web.json_response(status_message(flow))


async def start(request: web.Request) -> web.Response:
    service, control_plane = _service(request)
    message = await _read(request, DataFlowMessage)
    flow, address = await service.start(control_plane, message.flow())
    return web.json_response(status_message(flow, address), headers={"Cache-Control": "no-store"})


async def started(request: web.Request) -> web.Response:
    service, control_plane = _service(request)
    message = await _read(request, SignalMessage)
    address = message.dataAddress.address() if message.dataAddress else None
    flow = await service.started(control_plane, request.match_info["id"], address)
    return web.json_response(status_message(flow))


async def suspend(request: web.Request) -> web.Response:
    service, control_plane = _service(request)
    await _read(request, SignalMessage)
    return web.json_response(status_message(await service.suspend(control_plane, request.match_info["id"])))


async def resume(request: web.Request) -> web.Response:
    service, control_plane = _service(request)
    message = await _read(request, SignalMessage)
    address = message.dataAddress.address() if message.dataAddress else None
    flow, fresh = await service.resume(control_plane, request.match_info["id"], address)
    return web.json_response(status_message(flow, fresh), headers={"Cache-Control": "no-store"})


async def terminate(request: web.Request) -> web.Response:
    service, control_plane = _service(request)
    await _read(request, SignalMessage)
    return web.json_response(status_message(await service.terminate(control_plane, request.match_info["id"])))


async def completed(request: web.Request) -> web.Response:
    """The specification's `completed` has no body; `{}` is taken as well."""
    service, control_plane = _service(request)
    if await read_body(request) not in (b"", b"{}"):
        raise ProblemError(400, "bad-request", "the completed signal carries no message")
    return web.json_response(status_message(await service.completed(control_plane, request.match_info["id"])))


async def status(request: web.Request) -> web.Response:
    service, control_plane = _service(request)
    flow = await service.status(control_plane, request.match_info["id"])
    return web.json_response({"dataFlowId": flow.id, "state": flow.state.value})


async def register_control_plane(request: web.Request) -> web.Response:
    service, control_plane = _service(request)
    message = await _read(request, ControlPlaneRegistration)
    await service.register(control_plane, message.controlplaneId, message.endpoint)
    return web.json_response({"controlplaneId": message.controlplaneId, "endpoint": message.endpoint})


async def unregister_control_plane(request: web.Request) -> web.Response:
    service, control_plane = _service(request)
    await service.unregister(control_plane, request.match_info["controlplane_id"])
    return web.Response(status=204)


ROUTES = [
    Route("POST", f"{BASE}/dataflows/prepare", prepare, Access.PUBLIC),
    Route("POST", f"{BASE}/dataflows/start", start, Access.PUBLIC),
    Route("POST", f"{BASE}/dataflows/{{id}}/started", started, Access.PUBLIC),
    Route("POST", f"{BASE}/dataflows/{{id}}/suspend", suspend, Access.PUBLIC),
    Route("POST", f"{BASE}/dataflows/{{id}}/resume", resume, Access.PUBLIC),
    Route("POST", f"{BASE}/dataflows/{{id}}/terminate", terminate, Access.PUBLIC),
    Route("POST", f"{BASE}/dataflows/{{id}}/completed", completed, Access.PUBLIC),
    Route("GET", f"{BASE}/dataflows/{{id}}/status", status, Access.PUBLIC),
    Route("PUT", f"{BASE}/controlplanes", register_control_plane, Access.PUBLIC),
    Route("DELETE", f"{BASE}/controlplanes/{{controlplane_id}}", unregister_control_plane, Access.PUBLIC),
]
