"""Health, readiness, metrics, the OpenAPI document and its offline Swagger UI."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import html
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from provider import __version__
from provider.api.context import ctx
from provider.api.problems import problem_response
from provider.api.routing import Access, Route

log = logging.getLogger(__name__)


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok", "version": __version__})


READY_TIMEOUT_SECONDS = 3.0


async def _check(name: str, check: Callable[[], Awaitable[None]]) -> dict[str, Any]:
    try:
        await asyncio.wait_for(check(), READY_TIMEOUT_SECONDS)
    except Exception as exc:  # any failure means "not ready"; the reason goes to the log only
        reason = "timed out" if isinstance(exc, TimeoutError) else type(exc).__name__
        log.warning("readiness check failed: %s: %s", name, reason)
        return {"ready": False, "error": reason}
    return {"ready": True}


async def readyz(request: web.Request) -> web.Response:
    """Each dependency checked at once; 503 naming those that are down."""
    dependencies = ctx(request).dependencies
    results = await asyncio.gather(*(_check(name, check) for name, check in dependencies.items()))
    checks = dict(zip(dependencies, results, strict=True))
    down = sorted(name for name, result in checks.items() if not result["ready"])
    if down:
        return problem_response(503, f"not ready: {', '.join(down)} unavailable", "not-ready", checks=checks)
    return web.json_response({"status": "ready", "checks": checks})


async def metrics(request: web.Request) -> web.Response:
    context = ctx(request)
    await context.operations.refresh(context.store, datetime.now(UTC))  # the gauges of stored state
    body = generate_latest(context.metrics.registry)
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
  <script>{_DOCS_SCRIPT}</script>
</body>
</html>
"""


_DOCS_SCRIPT = (
    'window.ui = SwaggerUIBundle({url: "/openapi.json", dom_id: "#swagger-ui", deepLinking: true});'
)
_DOCS_PAGE = _docs_page("/docs/static")
# The page's one inline script is allowed by its hash, nothing else from anywhere but here: the
# page shares its origin (and a tab's session storage) with the console.
_DOCS_POLICY = (
    "default-src 'none'; script-src 'self' 'sha256-"
    + base64.b64encode(hashlib.sha256(_DOCS_SCRIPT.encode()).digest()).decode()
    + "'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; "
    "font-src 'self' data:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


async def docs(request: web.Request) -> web.Response:
    return web.Response(
        text=_DOCS_PAGE,
        content_type="text/html",
        headers={"Content-Security-Policy": _DOCS_POLICY, "X-Content-Type-Options": "nosniff"},
    )


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
