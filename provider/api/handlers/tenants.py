"""Tenants and API keys (admin), and `me` (any caller)."""

from __future__ import annotations

from aiohttp import web

from provider.api.context import ctx
from provider.api.parsing import PageQuery, parse_json, parse_query
from provider.api.routing import ANY_SCOPE, Access, Route, principal
from provider.api.schemas import ApiKeyCreate, TenantCreate, TenantUpdate, id_set, page_out
from provider.domain.representations import api_key_out, principal_out, tenant_out


async def create_tenant(request: web.Request) -> web.Response:
    body = await parse_json(request, TenantCreate)
    tenant = await ctx(request).tenants.create(
        body.participant_id, body.display_name or body.participant_id, id_set(body.allowed_assets)
    )
    return web.json_response(
        tenant_out(tenant), status=201, headers={"Location": f"/api/v1/tenants/{tenant.id}"}
    )


async def list_tenants(request: web.Request) -> web.Response:
    query = parse_query(request, PageQuery)
    page = await ctx(request).tenants.list(query.page())
    return web.json_response(page_out([tenant_out(t) for t in page.items], page.next_token))


async def get_tenant(request: web.Request) -> web.Response:
    tenant = await ctx(request).tenants.get(request.match_info["tenant_id"])
    return web.json_response(tenant_out(tenant))


async def update_tenant(request: web.Request) -> web.Response:
    body = await parse_json(request, TenantUpdate)
    tenant = await ctx(request).tenants.set_allowed_assets(
        request.match_info["tenant_id"], id_set(body.allowed_assets)
    )
    return web.json_response(tenant_out(tenant))


async def create_api_key(request: web.Request) -> web.Response:
    body = await parse_json(request, ApiKeyCreate)
    issued = await ctx(request).tenants.issue_key(
        request.match_info["tenant_id"], body.role, body.name, body.expires_at
    )
    return web.json_response(api_key_out(issued.key, issued.secret), status=201)


async def list_api_keys(request: web.Request) -> web.Response:
    query = parse_query(request, PageQuery)
    page = await ctx(request).tenants.list_keys(request.match_info["tenant_id"], query.page())
    return web.json_response(page_out([api_key_out(k) for k in page.items], page.next_token))


async def revoke_api_key(request: web.Request) -> web.Response:
    await ctx(request).tenants.revoke_key(request.match_info["tenant_id"], request.match_info["key_id"])
    return web.Response(status=204)


async def me(request: web.Request) -> web.Response:
    caller = principal(request)
    tenant = await ctx(request).tenants.get(caller.tenant_id)
    return web.json_response(principal_out(caller, tenant))


ROUTES = [
    Route("GET", "/api/v1/me", me, Access.AUTHENTICATED, ANY_SCOPE),
    Route("POST", "/api/v1/tenants", create_tenant, Access.ADMIN),
    Route("GET", "/api/v1/tenants", list_tenants, Access.ADMIN),
    Route("GET", "/api/v1/tenants/{tenant_id}", get_tenant, Access.ADMIN),
    Route("PATCH", "/api/v1/tenants/{tenant_id}", update_tenant, Access.ADMIN),
    Route("POST", "/api/v1/tenants/{tenant_id}/api-keys", create_api_key, Access.ADMIN),
    Route("GET", "/api/v1/tenants/{tenant_id}/api-keys", list_api_keys, Access.ADMIN),
    Route("DELETE", "/api/v1/tenants/{tenant_id}/api-keys/{key_id}", revoke_api_key, Access.ADMIN),
]
