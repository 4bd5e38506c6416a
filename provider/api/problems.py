"""RFC 9457 problem details: the one error shape every response of this service uses."""

from __future__ import annotations

import json
from http import HTTPStatus
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from provider.domain.errors import (
    BadRequest,
    ChecksumMismatch,
    Conflict,
    DomainError,
    FieldProblem,
    Forbidden,
    InvalidInput,
    NotFound,
    NotSupported,
    PayloadTooLarge,
    RangeNotSatisfiable,
    Unauthenticated,
    Unavailable,
)
from provider.logs import request_id_var

PROBLEM_CONTENT_TYPE = "application/problem+json"
TYPE_BASE = "urn:provider:problem:"


class ProblemError(Exception):
    """Raised by API code for input problems found before a service is called."""

    def __init__(
        self, status: int, slug: str, detail: str, problems: list[FieldProblem] | None = None
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.slug = slug
        self.detail = detail
        self.problems = problems or []


_DOMAIN_STATUS: list[tuple[type[DomainError], int, str]] = [
    (NotFound, 404, "not-found"),
    (BadRequest, 400, "bad-request"),
    (Conflict, 409, "conflict"),
    (InvalidInput, 422, "validation-error"),
    (Unauthenticated, 401, "unauthenticated"),
    (Forbidden, 403, "forbidden"),
    (PayloadTooLarge, 413, "quota-exceeded"),
    (ChecksumMismatch, 400, "checksum-mismatch"),
    (RangeNotSatisfiable, 416, "range-not-satisfiable"),
    (NotSupported, 501, "not-supported"),
    (Unavailable, 503, "backend-unavailable"),
]


def problem_response(
    status: int,
    detail: str,
    slug: str | None = None,
    problems: list[FieldProblem] | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> web.Response:
    title = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "Error"
    body: dict[str, Any] = {
        "type": TYPE_BASE + slug if slug else "about:blank",
        "title": title,
        "status": status,
        "detail": detail,
    }
    if problems:
        body["errors"] = [{"field": p.field, "message": p.message} for p in problems]
    if request_id_var.get():
        body["request_id"] = request_id_var.get()
    body.update(extra)
    return web.Response(
        status=status, text=json.dumps(body), content_type=PROBLEM_CONTENT_TYPE, headers=headers
    )


GA4GH_PREFIX = "/ga4gh/"


def ga4gh_problem(response: web.Response) -> web.Response:
    """A problem answered under /ga4gh/ also carries GA4GH's error members (`msg`,
    `status_code`, as WES and the TES implementations answer), which TES clients print."""
    if response.content_type != PROBLEM_CONTENT_TYPE or response.text is None:
        return response
    body = json.loads(response.text)
    body["msg"] = body.get("detail", body.get("title", ""))
    body["status_code"] = response.status
    response.text = json.dumps(body)
    return response


def from_exception(exc: BaseException) -> web.Response | None:
    """The problem response for a known exception, or None for an unexpected one."""
    if isinstance(exc, ProblemError):
        return problem_response(exc.status, exc.detail, exc.slug, exc.problems)
    if isinstance(exc, DomainError):
        for kind, status, slug in _DOMAIN_STATUS:
            if isinstance(exc, kind):
                headers = {"WWW-Authenticate": 'Bearer realm="provider"'} if status == 401 else None
                if isinstance(exc, RangeNotSatisfiable):
                    headers = {"Content-Range": f"bytes */{exc.size}"}
                slug = getattr(exc, "slug", slug)  # a subclass may name its rule
                return problem_response(status, exc.detail, slug, exc.problems, headers=headers)
        return None
    if isinstance(exc, HttpProcessingError):  # from the body: bad chunked encoding, a short body
        reason = (exc.message or "").strip().split("\n")[0][:120]
        return problem_response(400, f"the request body is not valid HTTP: {reason}", "malformed-request")
    if isinstance(exc, web.HTTPException) and exc.status >= 400:
        headers = {k: v for k, v in exc.headers.items() if k.lower() in ("allow", "retry-after")}
        detail = _HTTP_DETAILS.get(exc.status, exc.reason)
        return problem_response(exc.status, detail, headers=headers or None)
    return None


_HTTP_DETAILS = {
    404: "no resource at this path",
    405: "this method is not allowed on this path",
    413: "the request body is larger than this endpoint accepts",
}
