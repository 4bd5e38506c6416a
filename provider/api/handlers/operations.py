"""What operators follow (admin only): EDC provisionings with their callback state, and Data
Plane Signaling flows with the notices still owed to their control planes."""

from __future__ import annotations

from aiohttp import web

from provider.api.context import ctx
from provider.api.parsing import PageQuery, parse_query
from provider.api.routing import Access, Route
from provider.api.schemas import page_out
from provider.domain.dataflows import FlowState
from provider.domain.provisioning import ProvisioningState
from provider.domain.representations import dataflow_out, provisioning_out


class ProvisioningQuery(PageQuery):
    state: ProvisioningState | None = None


class DataFlowQuery(PageQuery):
    state: FlowState | None = None


async def list_provisionings(request: web.Request) -> web.Response:
    query = parse_query(request, ProvisioningQuery)
    page = await ctx(request).provisioning.list(query.page(), query.state)
    return web.json_response(page_out([provisioning_out(p) for p in page.items], page.next_token))


async def list_dataflows(request: web.Request) -> web.Response:
    query = parse_query(request, DataFlowQuery)
    page = await ctx(request).signaling.list(query.page(arity=2), query.state)
    return web.json_response(page_out([dataflow_out(f) for f in page.items], page.next_token))


ROUTES = [
    Route("GET", "/api/v1/provisionings", list_provisionings, Access.ADMIN),
    Route("GET", "/api/v1/dataflows", list_dataflows, Access.ADMIN),
]
