"""Subscriptions (signed webhooks), their deliveries, and the live event stream (SSE)."""

from __future__ import annotations

from typing import Annotated

from aiohttp import web
from pydantic import Field, field_validator

from provider.api.context import ctx
from provider.api.parsing import PageQuery, QueryModel, parse_json, parse_query
from provider.api.problems import ProblemError
from provider.api.routing import Access, Route, principal
from provider.api.schemas import Body, Labels, page_out
from provider.domain.errors import FieldProblem
from provider.domain.notifications import FAMILIES, Event, type_problem
from provider.domain.representations import delivery_out, subscription_out
from provider.domain.workspaces import Scope

ALL_FAMILIES = tuple(f"{family}.*" for family in FAMILIES)


def _known_types(value: list[str]) -> list[str]:
    problems = [p for p in (type_problem(v) for v in value) if p]
    if problems:
        raise ValueError("; ".join(problems))
    return value


class SubscriptionFilter(Body):
    execution_id: Annotated[str, Field(min_length=1, max_length=40)] | None = None
    workspace_id: Annotated[str, Field(min_length=1, max_length=40)] | None = None
    labels: Labels = Field(default_factory=dict)


class SubscriptionCreate(Body):
    url: Annotated[str, Field(min_length=1, max_length=2048)]
    events: Annotated[list[str], Field(min_length=1, max_length=32)]
    filter: SubscriptionFilter = Field(default_factory=SubscriptionFilter)
    secret: Annotated[str, Field(max_length=200)] | None = None

    _types = field_validator("events")(_known_types)


class StreamQuery(QueryModel):
    types: list[str] | str | None = None
    execution_id: Annotated[str, Field(max_length=40)] | None = None
    workspace_id: Annotated[str, Field(max_length=40)] | None = None


async def create_subscription(request: web.Request) -> web.Response:
    body = await parse_json(request, SubscriptionCreate)
    item, generated = await ctx(request).subscriptions.create(
        principal(request),
        body.url,
        body.events,
        body.secret,
        body.filter.execution_id,
        body.filter.workspace_id,
        body.filter.labels,
    )
    return web.json_response(
        subscription_out(item, generated),
        status=201,
        headers={"Location": f"/api/v1/subscriptions/{item.id}"},
    )


async def list_subscriptions(request: web.Request) -> web.Response:
    query = parse_query(request, PageQuery)
    page = await ctx(request).subscriptions.list(principal(request), query.page())
    return web.json_response(page_out([subscription_out(s) for s in page.items], page.next_token))


async def get_subscription(request: web.Request) -> web.Response:
    item = await ctx(request).subscriptions.get(principal(request), request.match_info["subscription_id"])
    return web.json_response(subscription_out(item))


async def delete_subscription(request: web.Request) -> web.Response:
    await ctx(request).subscriptions.delete(principal(request), request.match_info["subscription_id"])
    return web.Response(status=204)


async def list_deliveries(request: web.Request) -> web.Response:
    query = parse_query(request, PageQuery)
    page = await ctx(request).subscriptions.deliveries(
        principal(request), request.match_info["subscription_id"], query.page()
    )
    return web.json_response(page_out([delivery_out(d) for d in page.items], page.next_token))


async def retry_delivery(request: web.Request) -> web.Response:
    item = await ctx(request).subscriptions.retry(
        principal(request), request.match_info["subscription_id"], request.match_info["delivery_id"]
    )
    return web.json_response(delivery_out(item), status=202)


def _sse(event: Event) -> bytes:
    return f"id: {event.id}\nevent: {event.type}\ndata: {event.body}\n\n".encode()


async def stream_events(request: web.Request) -> web.StreamResponse:
    query = parse_query(request, StreamQuery)
    context = ctx(request)
    raw = query.types if isinstance(query.types, list) else [query.types] if query.types else []
    patterns = [part for item in raw for part in item.split(",") if part] or list(ALL_FAMILIES)
    problems = [FieldProblem("query.types", p) for p in (type_problem(x) for x in patterns) if p]
    if problems:
        raise ProblemError(400, "invalid-query", "unknown event types", problems)
    events = await context.subscriptions.streams.open(
        principal(request),
        patterns,
        query.execution_id,
        query.workspace_id,
        request.headers.get("Last-Event-ID") or None,
        context.stream_poll_seconds,
        context.stream_heartbeat_seconds,
    )
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-store",
            "X-Accel-Buffering": "no",  # proxies must not hold events back
        }
    )
    await response.prepare(request)
    gauge = context.notification_metrics.streams
    gauge.inc()
    try:
        await response.write(b": connected\nretry: 2000\n\n")
        async for event in events:
            await response.write(b": heartbeat\n\n" if event is None else _sse(event))
    except (ConnectionResetError, ConnectionError):
        pass  # the client went away
    finally:
        gauge.dec()
        await events.aclose()
    return response


BASE = "/api/v1/subscriptions"
WRITE = Scope.SUBSCRIPTIONS_WRITE
ROUTES = [
    Route("POST", BASE, create_subscription, Access.AUTHENTICATED, WRITE),
    Route("GET", BASE, list_subscriptions, Access.AUTHENTICATED, WRITE),
    Route("GET", BASE + "/{subscription_id}", get_subscription, Access.AUTHENTICATED, WRITE),
    Route("DELETE", BASE + "/{subscription_id}", delete_subscription, Access.AUTHENTICATED, WRITE),
    Route("GET", BASE + "/{subscription_id}/deliveries", list_deliveries, Access.AUTHENTICATED, WRITE),
    Route(
        "POST",
        BASE + "/{subscription_id}/deliveries/{delivery_id}/retry",
        retry_delivery,
        Access.AUTHENTICATED,
        WRITE,
    ),
    Route("GET", "/api/v1/events", stream_events, Access.AUTHENTICATED, Scope.EXECUTIONS_READ),
]
