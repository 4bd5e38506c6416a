"""GA4GH TES 1.1 (`/ga4gh/tes/v1`): tasks as executions, as contracts/tes/ specifies.

Errors keep this service's one shape (RFC 9457 problem details) and add GA4GH's own members,
`msg` and `status_code`, which TES clients print (the middleware adds them under /ga4gh/).
"""

from __future__ import annotations

from typing import Annotated, Any

from aiohttp import web
from pydantic import Field

from provider.api.context import ctx
from provider.api.parsing import QueryModel, parse_json, parse_query
from provider.api.problems import ProblemError
from provider.api.routing import Access, Route, principal
from provider.domain.errors import FieldProblem, InvalidInput
from provider.domain.pagination import PageRequest, decode_token
from provider.domain.tes import TesState, TesTaskDocument, View, state_filter
from provider.domain.workspaces import Scope
from provider.services.ports import TaskFilter

BASE = "/ga4gh/tes/v1"
DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE = 256, 2047  # TES: "less than 2048, defaults to 256"


class TaskQuery(QueryModel):
    view: Annotated[str, Field(pattern="^(MINIMAL|BASIC|FULL)$")] = View.MINIMAL


class ListQuery(TaskQuery):
    name_prefix: Annotated[str, Field(max_length=1024)] | None = None
    state: Annotated[str, Field(pattern="^(" + "|".join(TesState.ALL) + ")$")] | None = None
    tag_key: list[Annotated[str, Field(max_length=255)]] | Annotated[str, Field(max_length=255)] | None = None
    tag_value: (
        list[Annotated[str, Field(max_length=1024)]] | Annotated[str, Field(max_length=1024)] | None
    ) = None
    page_size: Annotated[int, Field(ge=1, le=MAX_PAGE_SIZE)] = DEFAULT_PAGE_SIZE
    page_token: Annotated[str, Field(max_length=2048)] | None = None


def _as_list(value: Any) -> list[str]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


async def service_info(request: web.Request) -> web.Response:
    context = ctx(request)
    return web.json_response(context.tes.service_info(context.public_url))


async def create_task(request: web.Request) -> web.Response:
    document = await parse_json(request, TesTaskDocument)
    task_id = await ctx(request).tes.create(principal(request), document)
    return web.json_response({"id": task_id})


async def get_task(request: web.Request) -> web.Response:
    query = parse_query(request, TaskQuery)
    task = await ctx(request).tes.get(principal(request), request.match_info["id"], query.view)
    return web.json_response(task)


async def list_tasks(request: web.Request) -> web.Response:
    query = parse_query(request, ListQuery)
    keys, values = _as_list(query.tag_key), _as_list(query.tag_value)
    if len(values) > len(keys):
        raise ProblemError(
            400,
            "invalid-query",
            "each tag_value goes with the tag_key at its place",
            [FieldProblem("query.tag_value", f"{len(values)} values for {len(keys)} keys")],
        )
    # Zipped into a map, as TES 1.1 says: a key given twice keeps its last value.
    tags = tuple({key: values[i] if i < len(values) else "" for i, key in enumerate(keys)}.items())
    try:
        after = decode_token(query.page_token, 1) if query.page_token else None
    except InvalidInput as exc:
        raise ProblemError(400, "invalid-query", exc.detail, exc.problems) from exc
    where = TaskFilter(
        name_prefix=query.name_prefix,
        state=state_filter(query.state) if query.state else None,
        tags=tags,
    )
    tasks, page = await ctx(request).tes.list(
        principal(request), where, PageRequest(query.page_size, after), query.view
    )
    body: dict[str, Any] = {"tasks": tasks}
    if page.next_token is not None:
        body["next_page_token"] = page.next_token
    return web.json_response(body)


async def cancel_task(request: web.Request) -> web.Response:
    await ctx(request).tes.cancel(principal(request), request.match_info["id"])
    return web.json_response({})


ROUTES = [
    Route("GET", BASE + "/service-info", service_info, Access.PUBLIC),
    Route("POST", BASE + "/tasks", create_task, Access.AUTHENTICATED, Scope.EXECUTIONS_RUN),
    Route("GET", BASE + "/tasks", list_tasks, Access.AUTHENTICATED, Scope.EXECUTIONS_READ),
    Route("GET", BASE + "/tasks/{id}", get_task, Access.AUTHENTICATED, Scope.EXECUTIONS_READ),
    Route(
        "POST",
        BASE + "/tasks/{id}:cancel",
        cancel_task,
        Access.AUTHENTICATED,
        Scope.EXECUTIONS_RUN,
    ),
]
