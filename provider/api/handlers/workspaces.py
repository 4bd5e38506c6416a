"""Workspaces, their tokens and temporary storage credentials."""

from __future__ import annotations

from typing import Annotated

from aiohttp import web
from pydantic import Field

from provider.api.context import ctx
from provider.api.parsing import PageQuery, QueryModel, parse_json, parse_query
from provider.api.routing import ANY_SCOPE, Access, Route, principal
from provider.api.schemas import Body, Labels, credentials_out, page_out
from provider.domain.errors import FieldProblem, InvalidInput
from provider.domain.json_values import JsonInt
from provider.domain.representations import token_out, workspace_out
from provider.domain.workspaces import Scope


class WorkspaceCreate(Body):
    name: Annotated[str, Field(max_length=200)] = ""
    labels: Labels = Field(default_factory=dict)
    tenant_id: str | None = Field(default=None, description="admins: the tenant that owns the workspace")


class WorkspaceQuery(QueryModel):
    refresh_usage: bool = False


class TokenCreate(Body):
    scopes: list[Scope] = Field(default_factory=lambda: list(Scope), min_length=1)
    ttl_seconds: Annotated[JsonInt, Field(ge=60)] | None = None
    name: Annotated[str, Field(max_length=200)] = ""


async def create_workspace(request: web.Request) -> web.Response:
    body = await parse_json(request, WorkspaceCreate)
    caller = principal(request)
    tenant_id = body.tenant_id or caller.tenant_id
    if body.tenant_id is not None and not caller.is_admin and body.tenant_id != caller.tenant_id:
        raise InvalidInput(
            "consumers create workspaces for their own tenant",
            [FieldProblem("body.tenant_id", "must be omitted or your own tenant id")],
        )
    context = ctx(request)
    workspace = await context.workspaces.create(tenant_id, body.name, body.labels)
    return web.json_response(
        workspace_out(workspace, context.storage_backend),
        status=201,
        headers={"Location": f"/api/v1/workspaces/{workspace.id}"},
    )


async def list_workspaces(request: web.Request) -> web.Response:
    query = parse_query(request, PageQuery)
    context = ctx(request)
    page = await context.workspaces.list(principal(request), query.page())
    return web.json_response(
        page_out([workspace_out(w, context.storage_backend) for w in page.items], page.next_token)
    )


async def get_workspace(request: web.Request) -> web.Response:
    query = parse_query(request, WorkspaceQuery)
    context, workspace_id = ctx(request), request.match_info["workspace_id"]
    if query.refresh_usage:
        workspace = await context.workspaces.refresh_usage(principal(request), workspace_id)
    else:
        workspace = await context.workspaces.get(principal(request), workspace_id)
    return web.json_response(workspace_out(workspace, context.storage_backend))


async def delete_workspace(request: web.Request) -> web.Response:
    await ctx(request).workspaces.delete(principal(request), request.match_info["workspace_id"])
    return web.Response(status=204)


async def create_token(request: web.Request) -> web.Response:
    body = await parse_json(request, TokenCreate)
    issued = await ctx(request).workspaces.issue_token(
        principal(request), request.match_info["workspace_id"], set(body.scopes), body.ttl_seconds, body.name
    )
    return web.json_response(token_out(issued.record, issued.token), status=201)


async def list_tokens(request: web.Request) -> web.Response:
    query = parse_query(request, PageQuery)
    page = await ctx(request).workspaces.list_tokens(
        principal(request), request.match_info["workspace_id"], query.page()
    )
    return web.json_response(page_out([token_out(t) for t in page.items], page.next_token))


async def revoke_token(request: web.Request) -> web.Response:
    await ctx(request).workspaces.revoke_token(
        principal(request), request.match_info["workspace_id"], request.match_info["token_id"]
    )
    return web.Response(status=204)


async def create_credentials(request: web.Request) -> web.Response:
    creds = await ctx(request).workspaces.credentials(principal(request), request.match_info["workspace_id"])
    return web.json_response(credentials_out(creds), status=201, headers={"Cache-Control": "no-store"})


BASE = "/api/v1/workspaces"
ROUTES = [
    Route("POST", BASE, create_workspace, Access.AUTHENTICATED),
    Route("GET", BASE, list_workspaces, Access.AUTHENTICATED, ANY_SCOPE),
    Route("GET", BASE + "/{workspace_id}", get_workspace, Access.AUTHENTICATED, ANY_SCOPE),
    Route("DELETE", BASE + "/{workspace_id}", delete_workspace, Access.AUTHENTICATED),
    Route("POST", BASE + "/{workspace_id}/tokens", create_token, Access.AUTHENTICATED),
    Route("GET", BASE + "/{workspace_id}/tokens", list_tokens, Access.AUTHENTICATED),
    Route("DELETE", BASE + "/{workspace_id}/tokens/{token_id}", revoke_token, Access.AUTHENTICATED),
    Route(
        "POST",
        BASE + "/{workspace_id}/credentials",
        create_credentials,
        Access.AUTHENTICATED,
        Scope.OBJECTS_WRITE,
    ),
]
