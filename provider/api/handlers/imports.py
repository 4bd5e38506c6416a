"""Imports into a workspace from remote HTTP endpoints."""

from __future__ import annotations

from typing import Annotated

from aiohttp import web
from pydantic import Field

from provider.api.context import ctx
from provider.api.parsing import PageQuery, parse_json, parse_query
from provider.api.routing import Access, Route, principal
from provider.api.schemas import Body, page_out
from provider.domain.json_values import JsonInt
from provider.domain.representations import import_out
from provider.domain.workspaces import Scope


class ImportCreate(Body):
    source_url: Annotated[str, Field(min_length=1, max_length=4096)]
    headers: dict[str, Annotated[str, Field(max_length=8192)]] = Field(
        default_factory=dict,
        max_length=32,
        description="sent to the source as given (e.g. an EDR's Authorization)",
    )
    target_key: str
    expected_size: Annotated[JsonInt, Field(ge=0)] | None = None
    sha256: Annotated[str, Field(pattern=r"^[0-9a-fA-F]{64}$")] | None = None


async def create_import(request: web.Request) -> web.Response:
    body = await parse_json(request, ImportCreate)
    workspace_id = request.match_info["workspace_id"]
    item = await ctx(request).imports.create(
        principal(request),
        workspace_id,
        body.source_url,
        body.headers,
        body.target_key,
        body.expected_size,
        body.sha256,
    )
    location = f"/api/v1/workspaces/{workspace_id}/imports/{item.id}"
    return web.json_response(import_out(item), status=202, headers={"Location": location})


async def list_imports(request: web.Request) -> web.Response:
    query = parse_query(request, PageQuery)
    page = await ctx(request).imports.list(
        principal(request), request.match_info["workspace_id"], query.page()
    )
    return web.json_response(page_out([import_out(i) for i in page.items], page.next_token))


async def get_import(request: web.Request) -> web.Response:
    item = await ctx(request).imports.get(
        principal(request), request.match_info["workspace_id"], request.match_info["import_id"]
    )
    return web.json_response(import_out(item))


async def cancel_import(request: web.Request) -> web.Response:
    item = await ctx(request).imports.cancel(
        principal(request), request.match_info["workspace_id"], request.match_info["import_id"]
    )
    return web.json_response(import_out(item))


BASE = "/api/v1/workspaces/{workspace_id}/imports"
ROUTES = [
    Route("POST", BASE, create_import, Access.AUTHENTICATED, Scope.OBJECTS_WRITE),
    Route("GET", BASE, list_imports, Access.AUTHENTICATED, Scope.OBJECTS_READ),
    Route("GET", BASE + "/{import_id}", get_import, Access.AUTHENTICATED, Scope.OBJECTS_READ),
    Route("POST", BASE + "/{import_id}/cancel", cancel_import, Access.AUTHENTICATED, Scope.OBJECTS_WRITE),
]
