"""Executions: start, follow (poll, long-poll), list, cancel, logs and outputs."""

from __future__ import annotations

import json
from collections import OrderedDict
from typing import Annotated, Any

from aiohttp import web
from pydantic import Field, field_validator

from provider.api.context import ctx
from provider.api.parsing import PageQuery, QueryModel, parse_json, parse_query
from provider.api.problems import ProblemError
from provider.api.routing import Access, Route, principal
from provider.api.schemas import LABEL_KEY, Body, DateTime, Labels, page_out
from provider.domain.errors import FieldProblem
from provider.domain.executions import Execution, State
from provider.domain.notifications import type_problem
from provider.domain.representations import execution_out
from provider.domain.workspaces import Scope
from provider.services.executions import CallbackRequest, ExecutionRequest
from provider.services.ports import ExecutionFilter


class CallbackCreate(Body):
    """An inline subscription to this execution's events, made with it."""

    url: Annotated[str, Field(min_length=1, max_length=2048)]
    events: Annotated[list[str], Field(min_length=1, max_length=32)] = Field(
        default_factory=lambda: ["execution.*"]
    )
    secret: Annotated[str, Field(max_length=200)] | None = None

    @field_validator("events")
    @classmethod
    def _execution_types(cls, value: list[str]) -> list[str]:
        problems = [
            p or f"{v!r} is not an execution event"
            for v in value
            if (p := type_problem(v)) or not v.startswith("execution.")
        ]
        if problems:
            raise ValueError("; ".join(problems))
        return value


class ExecutionCreate(Body):
    asset_id: Annotated[str, Field(min_length=1, max_length=63)]
    asset_version: Annotated[str, Field(max_length=64)] | None = None
    workspace_id: Annotated[str, Field(min_length=1, max_length=40)]
    inputs: dict[str, Annotated[str, Field(max_length=1024)]] = Field(default_factory=dict, max_length=64)
    env: dict[str, Annotated[str, Field(max_length=4096)]] = Field(default_factory=dict, max_length=64)
    labels: Labels = Field(default_factory=dict)
    callback: CallbackCreate | None = None


class GetQuery(QueryModel):
    wait: Annotated[float, Field(ge=0, le=300)] = 0
    version: Annotated[int, Field(ge=0)] | None = None


class ListQuery(PageQuery):
    state: list[State] | State | None = None
    asset_id: str | None = None
    workspace_id: str | None = None
    label: list[str] | str | None = Field(default=None, description="KEY=VALUE, repeatable")
    created_after: DateTime | None = None
    created_before: DateTime | None = None


class LogsQuery(QueryModel):
    tail: Annotated[int, Field(ge=0, le=100_000)] | None = None
    follow: bool = False
    attempt: Annotated[int, Field(ge=1, le=100)] | None = None


def _etag(execution: Execution) -> str:
    return f'"v{execution.version}"'


class _Rendered:
    """Executions as JSON bytes, by id and version: a version never changes, and what it shows
    does not depend on who asks, so polling the same one encodes it once."""

    def __init__(self, size: int = 4096) -> None:
        self.size = size
        self._bodies: OrderedDict[str, tuple[int, bytes]] = OrderedDict()

    def body(self, execution: Execution) -> bytes:
        found = self._bodies.get(execution.id)
        if found is not None and found[0] == execution.version:
            return found[1]
        body = json.dumps(execution_out(execution)).encode()
        self._bodies[execution.id] = (execution.version, body)
        self._bodies.move_to_end(execution.id)
        if len(self._bodies) > self.size:
            self._bodies.popitem(last=False)
        return body


_rendered = _Rendered()


async def create_execution(request: web.Request) -> web.Response:
    body = await parse_json(request, ExecutionCreate)
    key = request.headers.get("Idempotency-Key")
    if key is not None and not (0 < len(key) <= 200):
        raise ProblemError(
            400,
            "invalid-header",
            "Idempotency-Key must be 1-200 characters",
            [FieldProblem("header.Idempotency-Key", "1-200 characters")],
        )
    callback = (
        CallbackRequest(body.callback.url, tuple(body.callback.events), body.callback.secret)
        if body.callback is not None
        else None
    )
    started = await ctx(request).executions.start(
        principal(request),
        ExecutionRequest(
            body.asset_id, body.asset_version, body.workspace_id, body.inputs, body.env, body.labels
        ),
        key,
        callback,
    )
    execution = started.execution
    out = execution_out(execution)
    if started.subscription is not None:
        out["callback"] = {"subscription_id": started.subscription.id, "secret": started.secret}
    return web.json_response(
        out,
        status=201 if started.created else 200,
        headers={"Location": f"/api/v1/executions/{execution.id}", "ETag": _etag(execution)},
    )


async def get_execution(request: web.Request) -> web.Response:
    query = parse_query(request, GetQuery)
    service, caller, execution_id = (
        ctx(request).executions,
        principal(request),
        request.match_info["execution_id"],
    )
    if query.version is not None and query.wait > 0:
        found = await service.wait(caller, execution_id, query.version, query.wait)
        if found is None:
            return web.Response(status=304, headers={"ETag": f'"v{query.version}"'})
        execution = found
    else:
        execution = await service.get(caller, execution_id)
    etag = _etag(execution)
    if request.headers.get("If-None-Match") == etag:
        return web.Response(status=304, headers={"ETag": etag})
    return web.Response(
        body=_rendered.body(execution), content_type="application/json", headers={"ETag": etag}
    )


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


async def list_executions(request: web.Request) -> web.Response:
    query = parse_query(request, ListQuery)
    labels = []
    for item in _as_list(query.label):
        name, sep, value = item.partition("=")
        if not sep or not LABEL_KEY.fullmatch(name):
            raise ProblemError(
                400,
                "invalid-query",
                "label filters are KEY=VALUE",
                [FieldProblem("query.label", f"{item!r} is not KEY=VALUE")],
            )
        labels.append((name, value))
    where = ExecutionFilter(
        workspace_id=query.workspace_id,
        asset_id=query.asset_id,
        states=frozenset(_as_list(query.state)),
        labels=tuple(labels),
        created_after=query.created_after,
        created_before=query.created_before,
    )
    page = await ctx(request).executions.list(principal(request), where, query.page())
    return web.json_response(page_out([execution_out(e) for e in page.items], page.next_token))


async def cancel_execution(request: web.Request) -> web.Response:
    execution = await ctx(request).executions.cancel(principal(request), request.match_info["execution_id"])
    return web.json_response(execution_out(execution), status=202)


async def execution_logs(request: web.Request) -> web.StreamResponse:
    query = parse_query(request, LogsQuery)
    chunks = ctx(request).executions.logs(
        principal(request), request.match_info["execution_id"], query.tail, query.follow, query.attempt
    )
    first = await anext(chunks, None)  # errors (404) surface before the response starts
    response = web.StreamResponse(
        headers={"Content-Type": "text/plain; charset=utf-8", "Cache-Control": "no-store"}
    )
    await response.prepare(request)
    if first is not None:
        await response.write(first)
        async for chunk in chunks:
            await response.write(chunk)
    await response.write_eof()
    return response


async def execution_outputs(request: web.Request) -> web.Response:
    context, caller = ctx(request), principal(request)
    execution_id = request.match_info["execution_id"]
    execution = await context.executions.get(caller, execution_id)
    items = []
    for item, url in await context.executions.outputs(caller, execution_id):
        api_url = f"{context.public_url}/api/v1/workspaces/{execution.workspace_id}/objects/{item.key}"
        items.append(
            {
                "name": item.name,
                "key": item.key,
                "size": item.size,
                "sha256": item.sha256,
                "download_url": url or api_url,
                "presigned": url is not None,
            }
        )
    return web.json_response({"execution_id": execution_id, "state": execution.state.value, "outputs": items})


BASE = "/api/v1/executions"
ROUTES = [
    Route("POST", BASE, create_execution, Access.AUTHENTICATED, Scope.EXECUTIONS_RUN),
    Route("GET", BASE, list_executions, Access.AUTHENTICATED, Scope.EXECUTIONS_READ),
    Route("GET", BASE + "/{execution_id}", get_execution, Access.AUTHENTICATED, Scope.EXECUTIONS_READ),
    Route(
        "POST", BASE + "/{execution_id}/cancel", cancel_execution, Access.AUTHENTICATED, Scope.EXECUTIONS_RUN
    ),
    Route("GET", BASE + "/{execution_id}/logs", execution_logs, Access.AUTHENTICATED, Scope.EXECUTIONS_READ),
    Route(
        "GET",
        BASE + "/{execution_id}/outputs",
        execution_outputs,
        Access.AUTHENTICATED,
        Scope.EXECUTIONS_READ,
    ),
]
