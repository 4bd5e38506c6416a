"""Route table entries that declare who may call them; the wrapper enforces it."""

from __future__ import annotations

import enum
import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web

from provider.api.context import ctx
from provider.api.parsing import NUL_MESSAGE
from provider.api.problems import ProblemError
from provider.domain.errors import FieldProblem
from provider.domain.tenants import Principal
from provider.services.auth import require_admin, require_token_scope

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
PRINCIPAL = web.RequestKey("principal", Principal)


class Access(enum.Enum):
    PUBLIC = "public"
    AUTHENTICATED = "authenticated"  # any valid credential; the handler checks ownership
    ADMIN = "admin"


ANY_SCOPE = "any"


@dataclass(frozen=True)
class Route:
    """One operation. `token_scope` says whether workspace tokens may call it: None (API keys
    only), ANY_SCOPE, or the scope the token must carry."""

    method: str
    path: str
    handler: Handler
    access: Access
    token_scope: str | None = None


ROUTES = web.AppKey("routes", list[Route])


def _guarded(route: Route) -> Handler:
    @functools.wraps(route.handler)
    async def guarded(request: web.Request) -> web.StreamResponse:
        if route.access is not Access.PUBLIC:
            principal = await ctx(request).auth.authenticate(request.headers.get("Authorization"))
            if route.access is Access.ADMIN:
                require_admin(principal)
            require_token_scope(principal, route.token_scope)
            request[PRINCIPAL] = principal
        _refuse_nul(request)
        return await route.handler(request)

    return guarded


def _refuse_nul(request: web.Request) -> None:
    """404 for a path parameter with NUL, which names nothing: it must not reach the store, as
    PostgreSQL cannot take NUL in text. (Object keys have their own rules, which refuse every
    control character with 400.)"""
    if "\0" not in request.path:  # the usual case, found at once
        return
    problems = [
        FieldProblem(f"path.{name}", NUL_MESSAGE)
        for name, value in request.match_info.items()
        if "\0" in value and name != "key"
    ]
    if problems:
        raise ProblemError(404, "not-found", "no resource has such a name", problems)


def add_routes(app: web.Application, routes: list[Route]) -> None:
    for route in routes:
        app.router.add_route(route.method, route.path, _guarded(route))
    app[ROUTES] = [*app.get(ROUTES, []), *routes]


def principal(request: web.Request) -> Principal:
    found: Principal = request[PRINCIPAL]
    return found
