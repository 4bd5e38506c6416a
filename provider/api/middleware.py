"""The middleware: a request id, metrics and the access log around everything, and errors turned
into problem JSON."""

from __future__ import annotations

import itertools
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable

from aiohttp import web

from provider.api.context import ctx
from provider.api.problems import GA4GH_PREFIX, from_exception, ga4gh_problem, problem_response
from provider.api.protocol import CLIENT_ERRORS
from provider.logs import access_log, request_id_var

log = logging.getLogger("provider.http")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._\-]{1,64}$")


def route_template(request: web.Request) -> str:
    """The route's path template (bounded cardinality for metrics), or 'unmatched'."""
    info = request.match_info
    if isinstance(info, web.UrlMappingMatchInfo) and info.route.resource is not None:
        return info.route.resource.canonical
    return "unmatched"


# Request ids: a random prefix per process and a counter, unique across replicas without a
# call to the system's random source per request.
_ID_PREFIX = uuid.uuid4().hex[:16]
_next_id = itertools.count(1).__next__


@web.middleware
async def request_context(request: web.Request, handler: Handler) -> web.StreamResponse:
    incoming = request.headers.get("X-Request-ID")
    if incoming and _REQUEST_ID.fullmatch(incoming):
        request_id = incoming
    else:
        request_id = f"{_ID_PREFIX}{_next_id():016x}"
    token = request_id_var.set(request_id)
    started = time.perf_counter()
    status = 500
    failure: BaseException | None = None
    tracing = ctx(request).tracing
    span = (
        tracing.request(request.method, route_template(request), request.headers) if tracing.enabled else None
    )
    try:
        if span is not None:
            current = span.__enter__()
        try:
            response = await handler(request)
        except Exception as exc:
            failure = exc
            response = _problem(request, exc)
            if request.path.startswith(GA4GH_PREFIX) and isinstance(response, web.Response):
                response = ga4gh_problem(response)
        status = response.status
        response.headers["X-Request-ID"] = request_id
        if span is not None:
            current.set_attribute("provider.request_id", request_id)
            tracing.ended(current, status, failure)
        return response
    finally:
        elapsed = time.perf_counter() - started
        route = route_template(request)
        ctx(request).metrics.observe(request.method, route, status, elapsed)
        access_log.record(request.method, route, status, round(elapsed * 1000, 2), request.remote, request_id)
        if span is not None:  # after the access line, which carries the trace id
            span.__exit__(None, None, None)
        request_id_var.reset(token)


def _problem(request: web.Request, exc: Exception) -> web.StreamResponse:
    """The problem document an exception of a handler stands for (one middleware does both jobs:
    each layer of middleware costs every request a coroutine and a call)."""
    response = from_exception(exc)
    if response is not None:
        return response
    if isinstance(exc, web.HTTPException):
        raise exc  # redirects and other non-error statuses pass through
    if isinstance(exc, ConnectionError) and (request.transport is None or request.transport.is_closing()):
        # The client left mid-request (its body stopped, or our answer could not be sent):
        # not a fault of ours, and any client can do it at will, hence no traceback.
        request.app[CLIENT_ERRORS].warn(
            "client-disconnected",
            "a client closed its connection during %s %s",
            request.method,
            route_template(request),
        )
        return problem_response(499, "the client closed the connection", "client-closed-request")
    log.error("unhandled error in %s %s", request.method, route_template(request), exc_info=exc)
    return problem_response(500, "internal error; quote the request id when reporting it", "internal")
