"""Health, readiness, metrics, the OpenAPI document and its offline Swagger UI."""

from __future__ import annotations

import html
import logging
from pathlib import Path

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from provider import __version__
from provider.api.context import ctx
from provider.api.problems import problem_response
from provider.api.routing import Access, Route

log = logging.getLogger(__name__)


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok", "version": __version__})


async def readyz(request: web.Request) -> web.Response:
    try:
        await ctx(request).store.ping()
    except Exception as exc:
        log.warning("readiness check failed: store unreachable: %s", type(exc).__name__)
        return problem_response(503, "the store is not reachable", "not-ready")
    return web.json_response({"status": "ready"})


async def metrics(request: web.Request) -> web.Response:
    body = generate_latest(ctx(request).metrics.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def openapi(request: web.Request) -> web.Response:
    return web.json_response(ctx(request).openapi)


def _docs_page(static_prefix: str) -> str:
    prefix = html.escape(static_prefix)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>provider API</title>
  <link rel="stylesheet" href="{prefix}/swagger-ui.css">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="{prefix}/swagger-ui-bundle.js"></script>
  <script>
    window.ui = SwaggerUIBundle({{url: "/openapi.json", dom_id: "#swagger-ui", deepLinking: true}});
  </script>
</body>
</html>
"""


async def docs(request: web.Request) -> web.Response:
    return web.Response(text=_docs_page("/docs/static"), content_type="text/html")


def swagger_static_dir() -> Path:
    """Swagger UI's files as shipped by the swagger-ui-py package (no CDN)."""
    import swagger_ui

    return Path(swagger_ui.__file__).parent / "static"


ROUTES = [
    Route("GET", "/healthz", healthz, Access.PUBLIC),
    Route("GET", "/readyz", readyz, Access.PUBLIC),
    Route("GET", "/metrics", metrics, Access.PUBLIC),
    Route("GET", "/openapi.json", openapi, Access.PUBLIC),
    Route("GET", "/docs", docs, Access.PUBLIC),
]
