"""The HTTP API (aiohttp): thin handlers over the services."""

from __future__ import annotations

from aiohttp import web

from provider.api.context import CONTEXT, ApiContext
from provider.api.handlers import (
    assets,
    edc,
    executions,
    imports,
    objects,
    subscriptions,
    system,
    tenants,
    workspaces,
)
from provider.api.middleware import problems, request_context
from provider.api.routing import add_routes


def build_api(context: ApiContext, max_body_bytes: int) -> web.Application:
    app = web.Application(middlewares=[request_context, problems], client_max_size=max_body_bytes)
    app[CONTEXT] = context
    add_routes(
        app,
        system.ROUTES
        + tenants.ROUTES
        + assets.ROUTES
        + workspaces.ROUTES
        + objects.ROUTES
        + imports.ROUTES
        + executions.ROUTES
        + subscriptions.ROUTES
        + edc.ROUTES,
    )
    app.router.add_static("/docs/static", system.swagger_static_dir(), name="swagger-ui")
    return app
