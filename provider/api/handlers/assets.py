"""The asset catalog: everyone authenticated reads it, admins change it."""

from __future__ import annotations

from aiohttp import web
from pydantic import Field

from provider.api.context import ctx
from provider.api.parsing import PageQuery, QueryModel, parse_json, parse_query
from provider.api.routing import ANY_SCOPE, Access, Route
from provider.api.schemas import AssetPut, page_out
from provider.domain.assets import AssetSpec
from provider.domain.errors import FieldProblem, InvalidInput
from provider.domain.representations import asset_out


class AssetListQuery(PageQuery):
    id: str | None = Field(default=None, max_length=63)
    q: str | None = Field(default=None, max_length=200, description="substring of title or description")


class VersionQuery(QueryModel):
    version: str | None = Field(default=None, max_length=64)


class PutQuery(QueryModel):
    dry_run: bool = Field(default=False, description="validate; answer what would be stored, store nothing")


async def list_assets(request: web.Request) -> web.Response:
    query = parse_query(request, AssetListQuery)
    page = await ctx(request).assets.list(query.page(arity=2), query.id, query.q)
    return web.json_response(page_out([asset_out(a) for a in page.items], page.next_token))


async def get_asset(request: web.Request) -> web.Response:
    query = parse_query(request, VersionQuery)
    asset = await ctx(request).assets.get(request.match_info["asset_id"], query.version)
    return web.json_response(asset_out(asset))


async def get_asset_version(request: web.Request) -> web.Response:
    asset = await ctx(request).assets.get(request.match_info["asset_id"], request.match_info["version"])
    return web.json_response(asset_out(asset))


async def put_asset_version(request: web.Request) -> web.Response:
    asset_id, version = request.match_info["asset_id"], request.match_info["version"]
    query = parse_query(request, PutQuery)
    body = await parse_json(request, AssetPut)
    problems = [
        FieldProblem(f"body.{name}", f"must equal the path's {name} {expected!r}")
        for name, given, expected in (("id", body.id, asset_id), ("version", body.version, version))
        if given is not None and given != expected
    ]
    if problems:
        raise InvalidInput("the body names another asset than the path", problems)
    spec = AssetSpec.model_validate(body.model_dump(exclude={"id", "version"}))
    if query.dry_run:
        return web.json_response(asset_out(await ctx(request).assets.check(asset_id, version, spec)))
    asset, created = await ctx(request).assets.put(asset_id, version, spec)
    return web.json_response(asset_out(asset), status=201 if created else 200)


async def delete_asset_version(request: web.Request) -> web.Response:
    await ctx(request).assets.delete(request.match_info["asset_id"], request.match_info["version"])
    return web.Response(status=204)


async def delete_asset(request: web.Request) -> web.Response:
    await ctx(request).assets.delete(request.match_info["asset_id"])
    return web.Response(status=204)


ROUTES = [
    Route("GET", "/api/v1/assets", list_assets, Access.AUTHENTICATED, ANY_SCOPE),
    Route("GET", "/api/v1/assets/{asset_id}", get_asset, Access.AUTHENTICATED, ANY_SCOPE),
    Route("DELETE", "/api/v1/assets/{asset_id}", delete_asset, Access.ADMIN),
    Route(
        "GET",
        "/api/v1/assets/{asset_id}/versions/{version}",
        get_asset_version,
        Access.AUTHENTICATED,
        ANY_SCOPE,
    ),
    Route("PUT", "/api/v1/assets/{asset_id}/versions/{version}", put_asset_version, Access.ADMIN),
    Route("DELETE", "/api/v1/assets/{asset_id}/versions/{version}", delete_asset_version, Access.ADMIN),
]
