"""Request parsing with pydantic: every problem becomes a 4xx problem naming the field."""

from __future__ import annotations

import json
import math
import re
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from provider.api.bodies import read_body
from provider.api.problems import ProblemError
from provider.domain.errors import FieldProblem, InvalidInput
from provider.domain.pagination import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, PageRequest, decode_token

M = TypeVar("M", bound=BaseModel)


class QueryModel(BaseModel):
    # Frozen: a request without a query shares its model's defaults (parse_query).
    model_config = ConfigDict(extra="forbid", frozen=True)


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


MAX_JSON_DEPTH = 64
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
NUL_MESSAGE = "must not contain NUL (\\u0000)"
_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"')
_BRACKET = re.compile(r"[\[\]{}]")


class JsonLimitError(ValueError):
    """A JSON document beyond what this service reads (nesting, numbers)."""


def _depth_beyond_limit(text: str) -> bool:
    """Whether arrays and objects nest deeper than MAX_JSON_DEPTH, found without parsing: the
    parser recurses once per level, so deep documents must be refused before it runs."""
    if text.count("[") + text.count("{") <= MAX_JSON_DEPTH:
        return False
    depth = 0
    for bracket in _BRACKET.findall(_JSON_STRING.sub("", text)):
        depth += 1 if bracket in "[{" else -1
        if depth > MAX_JSON_DEPTH:
            return True
    return False


def _int64(literal: str) -> int:
    # Checked by length first: converting thousands of digits is slow, and refused past 4300.
    if len(literal) > 20 or not INT64_MIN <= (value := int(literal)) <= INT64_MAX:
        raise JsonLimitError("an integer is outside the signed 64-bit range")
    return value


def _finite(literal: str) -> float:
    value = float(literal)
    if not math.isfinite(value):
        raise JsonLimitError(f"the number {literal[:40]} is out of range")
    return value


def _no_constant(name: str) -> Any:
    raise JsonLimitError(f"{name} is not a JSON number")


def load_json(raw: bytes) -> Any:
    """The JSON document in `raw` (UTF-8), within this service's limits: at most MAX_JSON_DEPTH
    levels of nesting, integers within 64 bits, finite numbers. ProblemError 400 otherwise."""
    try:
        text = raw.decode("utf-8")
        if _depth_beyond_limit(text):
            raise JsonLimitError(f"it nests arrays and objects deeper than {MAX_JSON_DEPTH} levels")
        return json.loads(text, parse_int=_int64, parse_float=_finite, parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        message = f"not valid JSON: {exc}" if not isinstance(exc, JsonLimitError) else f"refused: {exc}"
        raise ProblemError(
            400, "malformed-json", f"the body is {message}", [FieldProblem("body", message)]
        ) from exc


def nul_problems(value: Any, path: str) -> list[FieldProblem]:
    """A problem for each string in `value` (a parsed JSON document) that contains NUL, named by
    its path: PostgreSQL cannot store NUL in text, and SQLite would keep it, so no store takes it."""
    problems = []
    pending = [(path, value)]
    while pending:  # a loop, not recursion: documents are at most MAX_JSON_DEPTH deep anyway
        where, item = pending.pop()
        if isinstance(item, str):
            if "\0" in item:
                problems.append(FieldProblem(where, NUL_MESSAGE))
        elif isinstance(item, dict):
            if any("\0" in key for key in item):
                problems.append(FieldProblem(where, f"keys {NUL_MESSAGE}"))
            pending.extend((f"{where}.{key}", v) for key, v in item.items() if "\0" not in key)
        elif isinstance(item, list):
            pending.extend((f"{where}.{i}", v) for i, v in enumerate(item))
    return sorted(problems, key=lambda p: p.field)


async def parse_json(request: web.Request, model: type[M]) -> M:
    """Read a JSON body into `model`: 415 for another content type, 400 when malformed or beyond
    the JSON limits, 422 when invalid (a string with NUL included)."""
    if request.content_type != "application/json":
        raise ProblemError(
            415,
            "unsupported-media-type",
            f"expected Content-Type application/json, got {request.content_type or 'none'}",
        )
    raw = await read_body(request)  # 413 beyond client_max_size, 408 when the client stalls
    data = load_json(raw)
    nul = nul_problems(data, "body")
    if nul:
        raise ProblemError(422, "validation-error", "the body has invalid fields", nul)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ProblemError(
            422, "validation-error", "the body has invalid fields", _problems(exc, "body")
        ) from exc


_NO_QUERY: dict[type[BaseModel], BaseModel] = {}  # each model's defaults, validated once


def parse_query(request: web.Request, model: type[M]) -> M:
    """Query parameters into `model` (repeated parameters become lists); 400 when invalid."""
    if not request.query_string and model in _NO_QUERY:  # polling: the defaults, validated once
        return _NO_QUERY[model]  # type: ignore[return-value]
    data: dict[str, Any] = {}
    for key in request.query:
        values = request.query.getall(key)
        data[key] = values if len(values) > 1 else values[0]
    nul = nul_problems(data, "query")
    if nul:
        raise ProblemError(400, "invalid-query", "invalid query parameters", nul)
    try:
        parsed = model.model_validate(data)
    except ValidationError as exc:
        raise ProblemError(400, "invalid-query", "invalid query parameters", _problems(exc, "query")) from exc
    if not data and parsed.model_config.get("frozen"):
        _NO_QUERY[model] = parsed
    return parsed
