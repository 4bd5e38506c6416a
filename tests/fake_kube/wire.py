"""How the fake answers on the wire: JSON bodies with the API server's headers, and the query
parameters it parses as Go's strconv does."""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from tests.fake_kube import errors
from tests.fake_kube.errors import KubeError


def json_line(obj: Any) -> bytes:
    return (json.dumps(obj, separators=(",", ":"), ensure_ascii=False) + "\n").encode()


def json_response(obj: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    response = web.Response(body=json_line(obj), status=status, content_type="application/json")
    response.headers["Audit-Id"] = str(uuid.uuid4())
    response.headers["Cache-Control"] = "no-cache, private"
    for key, value in (headers or {}).items():
        response.headers[key] = value
    return response


def parse_bool(params: Mapping[str, str], key: str) -> bool | None:
    value = params.get(key)
    if value is None:
        return None
    if value in ("1", "t", "T", "true", "TRUE", "True"):
        return True
    if value in ("", "0", "f", "F", "false", "FALSE", "False"):
        return False
    raise errors.bad_request(f'strconv.ParseBool: parsing "{value}": invalid syntax')


def parse_int(params: Mapping[str, str], key: str) -> int | None:
    value = params.get(key)
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise errors.bad_request(f'strconv.ParseInt: parsing "{value}": invalid syntax') from None


def parse_rv(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise errors.bad_request(f'invalid resource version "{value}"') from None
    if number < 0:
        raise errors.bad_request(f'invalid resource version "{value}"')
    return number


def too_large(requested: int, current: int) -> KubeError:
    return KubeError(
        504,
        "Timeout",
        f"Timeout: Too large resource version: {requested}, current: {current}",
        {
            "causes": [{"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}],
            "retryAfterSeconds": 1,
        },
    )
