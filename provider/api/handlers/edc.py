"""EDC webhooks: the control-plane HTTP provisioner, and the access document it points to.

EDC sends no credentials, so each connector has its own secret path segment (compared in
constant time) and optionally an allowlist of source networks. A wrong connector, secret or
source answers 404, as if nothing were there.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
from typing import Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from provider.api.context import ctx
from provider.api.parsing import parse_json
from provider.api.problems import ProblemError
from provider.api.routing import Access, Route
from provider.domain.errors import NotFound
from provider.services.provisioning import ACCESS_HEADER, ProvisionRequest

log = logging.getLogger(__name__)


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
    settings = ctx(request).edc_connectors.get(name)
    expected = settings.secret.get_secret_value().encode() if settings else b"\0" * 32
    if not hmac.compare_digest(expected, secret.encode()) or settings is None:
        raise NotFound("webhook", request.path.rsplit("/", 1)[-1])
    if settings.allowed_networks:
        remote = ipaddress.ip_address(request.remote or "0.0.0.0")  # noqa: S104 - unknown source: refused below
        if not any(remote in ipaddress.ip_network(n, strict=False) for n in settings.allowed_networks):
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


async def access_document(request: web.Request) -> web.Response:
    document = await ctx(request).provisioning.access_document(
        request.match_info["workspace_id"], request.headers.get(ACCESS_HEADER)
    )
    return web.json_response(document, headers={"Cache-Control": "no-store"})


ROUTES = [
    Route("POST", "/edc/{connector}/{secret}/provision", provision_webhook, Access.PUBLIC),
    Route("GET", "/api/v1/workspaces/{workspace_id}/access", access_document, Access.PUBLIC),
]
