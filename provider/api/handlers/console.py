"""The web console: one static page and its modules (provider/console), served as they are,
with no build step. Everything it shows comes through the public API with the credential a
person signs in with; these handlers only hand out the files."""

from __future__ import annotations

import functools
from pathlib import Path

from aiohttp import web

from provider.api.routing import Access, Route

CONSOLE_DIR = Path(__file__).resolve().parents[2] / "console"
# Only this origin's own files and API: no inline script, no framing by other sites, no referrer
# with ids in it leaving the page.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self' data:; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}


def static_dir() -> Path:
    return CONSOLE_DIR / "static"


async def root(request: web.Request) -> web.Response:
    return web.Response(status=302, headers={"Location": "/console/"})


@functools.cache
def _page() -> bytes:
    return (CONSOLE_DIR / "index.html").read_bytes()  # read once, on first use


async def console_page(request: web.Request) -> web.Response:
    response = web.Response(body=_page(), content_type="text/html", charset="utf-8")
    response.headers["Cache-Control"] = "no-cache"
    return response


async def secure_console(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: the page and its files (static ones too) carry the security headers."""
    if request.path == "/console" or request.path.startswith("/console/"):
        response.headers.update(SECURITY_HEADERS)


ROUTES = [
    Route("GET", "/", root, Access.PUBLIC),
    Route("GET", "/console", root, Access.PUBLIC),
    Route("GET", "/console/", console_page, Access.PUBLIC),
]
