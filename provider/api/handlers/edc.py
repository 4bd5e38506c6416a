"""EDC webhooks: the control-plane HTTP provisioner, and the access document it points to.

EDC sends no credentials, so each connector has its own secret path segment (compared in
constant time) and optionally an allowlist of source networks. A wrong connector, secret or
source answers 404, as if nothing were there.

EDC's JSON (its own field names, namespaced properties) is read here into the services' typed
values (ProvisionRequest, TransferStarted); the services never see it.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
from typing import Annotated, Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt

from provider.api.context import ctx
from provider.api.parsing import parse_json
from provider.api.problems import ProblemError
from provider.api.routing import Access, Route, principal
from provider.api.schemas import Body, page_out
from provider.domain.errors import NotFound
from provider.domain.provisioning import ProvisionerKind
from provider.domain.representations import registration_out
from provider.domain.workspaces import Scope
from provider.services.provisioning import ACCESS_HEADER, ProvisionRequest
from provider.services.transfers import TransferStarted

log = logging.getLogger(__name__)
EDC_NAMESPACE = "https://w3id.org/edc/v0.0.1/ns/"
AUTH_SCHEME = r"^[A-Za-z][A-Za-z0-9!#$%&'*+.^_`|~-]{0,31}$"  # an HTTP auth-scheme token (RFC 9110)


class EdcPolicy(BaseModel):
    model_config = ConfigDict(extra="allow")  # a Jackson-serialized policy: we read the assignee only

    assignee: str = Field(min_length=1, max_length=512)


class EdcProvisionRequest(BaseModel):
    model_config = ConfigDict(extra="allow")  # EDC may add properties; they are ignored

    assetId: str = Field(min_length=1, max_length=255)  # EDC's own field names
    transferProcessId: str = Field(min_length=1, max_length=255)
    resourceDefinitionId: str = Field(min_length=1, max_length=255)
    callbackAddress: str = Field(min_length=1, max_length=2048, pattern=r"^https?://")
    type: Literal["provision", "deprovision"]
    policy: EdcPolicy


def _connector(request: web.Request) -> str:
    """The connector named in the path, if the secret and the source address fit; else 404."""
    name, secret = request.match_info["connector"], request.match_info["secret"]
    webhook = ctx(request).edc_connectors.get(name)
    expected = webhook.secret.encode() if webhook else b"\0" * 32
    if not hmac.compare_digest(expected, secret.encode()) or webhook is None:
        raise NotFound("webhook", request.path.rsplit("/", 1)[-1])
    if webhook.sources:
        remote = ipaddress.ip_address(request.remote or "0.0.0.0")  # noqa: S104 - unknown source: refused below
        if not any(remote in network for network in webhook.sources):
            log.warning("EDC webhook call from a source outside the allowlist", extra={"connector": name})
            raise NotFound("webhook", "provision")
    return name


async def provision_webhook(request: web.Request) -> web.Response:
    connector = _connector(request)
    try:
        body = await parse_json(request, EdcProvisionRequest)
    except ProblemError as exc:  # EDC reads any 4xx as final; 400 says the request itself is wrong
        raise ProblemError(400, exc.slug, exc.detail, exc.problems) from exc
    service = ctx(request).provisioning
    if body.type == "deprovision":
        await service.deprovision(connector, body.transferProcessId, body.resourceDefinitionId)
        return web.json_response({"status": "deprovisioning"}, status=200)  # EDC wants exactly 200
    item = await service.provision(
        connector,
        ProvisionRequest(
            body.assetId,
            body.transferProcessId,
            body.resourceDefinitionId,
            body.callbackAddress,
            body.policy.assignee,
        ),
    )
    return web.json_response({"status": "provisioning", "workspace_id": item.workspace_id}, status=200)


class DataPlaneProvisionRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: Literal["provision", "deprovision"]
    provisionResourceId: str = Field(min_length=1, max_length=255)  # EDC's own field names
    flowId: str = Field(min_length=1, max_length=255)
    callbackAddress: str = Field(min_length=1, max_length=2048, pattern=r"^https?://")


async def dataplane_webhook(request: web.Request) -> web.Response:
    """EDC's data-plane HTTP provisioner (data-plane-provision-http, asset type ProvisionHttp).

    Its requests name no participant, so the workspace belongs to the connector's own tenant
    (participant id `connector:<name>`)."""
    connector = _connector(request)
    try:
        body = await parse_json(request, DataPlaneProvisionRequest)
    except ProblemError as exc:
        raise ProblemError(400, exc.slug, exc.detail, exc.problems) from exc
    service = ctx(request).provisioning
    if body.type == "deprovision":
        await service.deprovision(connector, body.flowId, body.provisionResourceId)
        return web.json_response({"status": "deprovisioning"}, status=200)
    item = await service.provision(
        connector,
        ProvisionRequest(
            "", body.flowId, body.provisionResourceId, body.callbackAddress, f"connector:{connector}"
        ),
        ProvisionerKind.DATA_PLANE,
    )
    return web.json_response({"status": "provisioning", "workspace_id": item.workspace_id}, status=200)


async def events_webhook(request: web.Request) -> web.Response:
    """EDC event callbacks (e.g. TransferProcessStarted with an EDR): start registered imports."""
    webhook = ctx(request).edc_events
    expected = webhook.code
    given = request.headers.get(webhook.header, "")
    if expected is None or not hmac.compare_digest(expected.encode(), given.encode()):
        raise NotFound("webhook", "events")
    try:
        body = await parse_json(request, EdcEvent)
    except ProblemError as exc:
        raise ProblemError(400, exc.slug, exc.detail, exc.problems) from exc
    if body.type != "TransferProcessStarted":
        log.info("EDC event ignored", extra={"event_type": body.type[:100]})
        return web.json_response({"imports_started": 0}, status=200)
    started = await ctx(request).transfers.started(body.payload.transfer_started())
    return web.json_response({"imports_started": started}, status=200)


class EdcDataAddress(BaseModel):
    model_config = ConfigDict(extra="allow")

    properties: dict[str, object] | None = None


def _text(value: object) -> str | None:
    return str(value) if value else None


class EdcTransferPayload(BaseModel):
    """The payload of a transfer process event; fields other events lack are optional."""

    model_config = ConfigDict(extra="allow", coerce_numbers_to_str=True)

    transferProcessId: str | None = None  # EDC's own field names
    contractId: str | None = None
    dataAddress: EdcDataAddress | None = None

    def address_property(self, name: str) -> str | None:
        """A data address property, plain (`endpoint`) or namespaced (`EDC_NAMESPACE` + `endpoint`)."""
        properties = (self.dataAddress.properties if self.dataAddress else None) or {}
        return _text(properties.get(name, properties.get(EDC_NAMESPACE + name)))

    def transfer_started(self) -> TransferStarted:
        return TransferStarted(
            process_id=self.transferProcessId or "",
            contract_id=self.contractId or None,
            endpoint=self.address_property("endpoint"),
            authorization=self.address_property("authorization"),
            auth_type=self.address_property("authType"),
        )


class EdcEvent(BaseModel):
    model_config = ConfigDict(extra="allow")

    id: str | None = None
    at: StrictInt | StrictFloat | str | None = None  # lax int would take true and false as 1 and 0
    type: str = Field(min_length=1, max_length=200)
    payload: EdcTransferPayload = Field(default_factory=EdcTransferPayload)


class TransferRegistrationCreate(Body):
    transfer_process_id: Annotated[str, Field(min_length=1, max_length=255)] | None = None
    contract_id: Annotated[str, Field(min_length=1, max_length=255)] | None = None
    target_key: Annotated[str, Field(min_length=1, max_length=1024)]
    authorization_scheme: Annotated[str, Field(pattern=AUTH_SCHEME)] | None = None


async def register_transfer(request: web.Request) -> web.Response:
    body = await parse_json(request, TransferRegistrationCreate)
    item = await ctx(request).transfers.register(
        principal(request),
        request.match_info["workspace_id"],
        body.transfer_process_id,
        body.contract_id,
        body.target_key,
        body.authorization_scheme,
    )
    return web.json_response(registration_out(item), status=201)


async def list_transfers(request: web.Request) -> web.Response:
    items = await ctx(request).transfers.list(principal(request), request.match_info["workspace_id"])
    return web.json_response(page_out([registration_out(i) for i in items], None))


async def access_document(request: web.Request) -> web.Response:
    document = await ctx(request).provisioning.access_document(
        request.match_info["workspace_id"], request.headers.get(ACCESS_HEADER)
    )
    return web.json_response(document, headers={"Cache-Control": "no-store"})


ROUTES = [
    Route("POST", "/edc/{connector}/{secret}/provision", provision_webhook, Access.PUBLIC),
    Route("POST", "/edc/{connector}/{secret}/dataplane/provision", dataplane_webhook, Access.PUBLIC),
    Route("GET", "/api/v1/workspaces/{workspace_id}/access", access_document, Access.PUBLIC),
    Route("POST", "/edc/events", events_webhook, Access.PUBLIC),
    Route(
        "POST",
        "/api/v1/workspaces/{workspace_id}/edc-transfers",
        register_transfer,
        Access.AUTHENTICATED,
        Scope.OBJECTS_WRITE,
    ),
    Route(
        "GET",
        "/api/v1/workspaces/{workspace_id}/edc-transfers",
        list_transfers,
        Access.AUTHENTICATED,
        Scope.OBJECTS_READ,
    ),
]
