"""Request parsing with pydantic: every problem becomes a 4xx problem naming the field."""

from __future__ import annotations

import json
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from provider.api.bodies import read_body
from provider.api.problems import ProblemError
from provider.domain.errors import FieldProblem, InvalidInput
from provider.domain.pagination import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, PageRequest, decode_token

M = TypeVar("M", bound=BaseModel)


class QueryModel(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PageQuery(QueryModel):
    page_size: int = Field(default=DEFAULT_PAGE_SIZE, ge=1, le=MAX_PAGE_SIZE)
    page_token: str | None = Field(default=None, max_length=2048)

    def page(self, arity: int = 1) -> PageRequest:
        try:
            after = decode_token(self.page_token, arity) if self.page_token else None
        except InvalidInput as exc:
            raise ProblemError(400, "invalid-query", exc.detail, exc.problems) from exc
        return PageRequest(self.page_size, after)


def _problems(exc: ValidationError, prefix: str) -> list[FieldProblem]:
    result = []
    for err in exc.errors():
        path = ".".join(str(p) for p in (prefix, *err["loc"]))
        result.append(FieldProblem(path, err["msg"]))
    return result


async def parse_json(request: web.Request, model: type[M]) -> M:
    """Read a JSON body into `model`: 415 for another content type, 400 when malformed, 422 when invalid."""
    if request.content_type != "application/json":
        raise ProblemError(
            415,
            "unsupported-media-type",
            f"expected Content-Type application/json, got {request.content_type or 'none'}",
        )
    raw = await read_body(request)  # 413 beyond client_max_size, 408 when the client stalls
    try:
        data: Any = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        message = f"not valid JSON: {exc}"
        raise ProblemError(
            400, "malformed-json", f"the body is {message}", [FieldProblem("body", message)]
        ) from exc
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ProblemError(
            422, "validation-error", "the body has invalid fields", _problems(exc, "body")
        ) from exc


def parse_query(request: web.Request, model: type[M]) -> M:
    """Query parameters into `model` (repeated parameters become lists); 400 when invalid."""
    data: dict[str, Any] = {}
    for key in request.query:
        values = request.query.getall(key)
        data[key] = values if len(values) > 1 else values[0]
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ProblemError(400, "invalid-query", "invalid query parameters", _problems(exc, "query")) from exc
