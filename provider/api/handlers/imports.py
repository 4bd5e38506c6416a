"""Imports into a workspace from remote HTTP endpoints."""

from __future__ import annotations

from typing import Annotated, Any

from aiohttp import web
from pydantic import Field

from provider.api.context import ctx
from provider.api.parsing import PageQuery, parse_json, parse_query
from provider.api.routing import Access, Route, principal
from provider.api.schemas import Body, page_out, timestamp
from provider.domain.imports import Import
from provider.domain.workspaces import Scope


class ImportCreate(Body):
    source_url: Annotated[str, Field(min_length=1, max_length=4096)]
    headers: dict[str, Annotated[str, Field(max_length=8192)]] = Field(
        default_factory=dict,
        max_length=32,
        description="sent to the source as given (e.g. an EDR's Authorization)",
    )
    target_key: str
    expected_size: Annotated[int, Field(ge=0)] | None = None
    sha256: Annotated[str, Field(pattern=r"^[0-9a-fA-F]{64}$")] | None = None


def import_out(item: Import) -> dict[str, Any]:
    return {
        "id": item.id,
        "workspace_id": item.workspace_id,
        "source_url": item.source_url,
        "header_names": sorted(item.headers),  # values may be credentials: never shown
        "target_key": item.target_key,
        "state": item.state.value,
        "bytes_done": item.bytes_done,
        "bytes_total": item.bytes_total,
        "expected_sha256": item.expected_sha256,
        "sha256": item.sha256,
        "attempts": item.attempts,
        "upstream_status": item.upstream_status,
        "error": item.error,
        "created_at": timestamp(item.created_at),
        "updated_at": timestamp(item.updated_at),
        "finished_at": timestamp(item.finished_at),
    }


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
