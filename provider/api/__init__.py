"""The HTTP API (aiohttp): thin handlers over the services."""

from __future__ import annotations

from aiohttp import web

from provider.api.context import CONTEXT, ApiContext
from provider.api.handlers import (
    assets,
    console,
    edc,
    executions,
    imports,
    objects,
    operations,
    signaling,
    subscriptions,
    system,
    tenants,
    tes,
    workspaces,
)
from provider.api.middleware import request_context
from provider.api.protocol import CLIENT_ERRORS, client_errors
from provider.api.routing import add_routes


def build_api(context: ApiContext, max_body_bytes: int, header_timeout_seconds: float) -> web.Application:
    # aiohttp closes a connection that has waited for a complete request head longer than its
    # keep-alive timeout, counted from the connection's start or its previous response, however
    # slowly header bytes trickle in meanwhile: that timeout is the header timeout. It is set here,
    # on the application, so that every runner (the service's and the tests') applies it.
    app = web.Application(
        middlewares=[request_context],
        client_max_size=max_body_bytes,
        handler_args={"keepalive_timeout": header_timeout_seconds},
    )
    app[CONTEXT] = context
    app[CLIENT_ERRORS] = client_errors()
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
        + edc.ROUTES
        + signaling.ROUTES
        + operations.ROUTES
        + console.ROUTES
        + tes.ROUTES,
    )
    app.router.add_static("/docs/static", system.swagger_static_dir(), name="swagger-ui")
    app.router.add_static("/console/static", console.static_dir(), name="console")
    app.on_response_prepare.append(console.secure_console)
    return app
