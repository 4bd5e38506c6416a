"""Remote HTTP sources for imports (aiohttp), behind the SSRF guard.

The guard runs twice: when an import is requested (on the URL's resolved addresses) and when
connecting (a resolver that drops forbidden addresses, so a DNS answer that changed in the
meantime cannot smuggle a request to an internal host). Redirects are followed by hand so that
each hop is checked, and credentials are not forwarded to another origin.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urljoin, urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

from provider.domain.addresses import IPNetwork, address_problem
from provider.domain.errors import FieldProblem, ForbiddenAddress
from provider.services.ports import SourceResponse

KEPT_HEADERS = ("Content-Length", "Content-Range", "Accept-Ranges", "ETag", "Last-Modified", "Content-Type")
MAX_REDIRECTS = 5
CHUNK = 256 * 1024


class AllAddressesForbidden(aiohttp.ClientConnectionError):
    """Every address the host resolves to at connect time is one the guard forbids."""


class GuardedResolver(AbstractResolver):
    def __init__(self, allowed: list[IPNetwork]) -> None:
        self.allowed = allowed
        self.inner = DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self.inner.resolve(host, port, family)
        kept = [r for r in results if address_problem(r["host"], self.allowed) is None]
        if not kept:
            reason = address_problem(results[0]["host"], self.allowed) if results else "no address"
            raise AllAddressesForbidden(f"{host} resolves to {reason}")
        return kept

    async def close(self) -> None:
        await self.inner.close()


async def check_outbound_url(
    url: str, field: str, schemes: list[str], allowed: list[IPNetwork], purpose: str, setting: str
) -> None:
    """Raise ForbiddenAddress naming the rule when `url` may not be requested (scheme, address)."""
    parts = urlsplit(url)
    if parts.scheme not in schemes:
        raise ForbiddenAddress(
            f"the URL scheme must be one of {', '.join(schemes)}",
            [FieldProblem(field, f"scheme {parts.scheme or '(none)'!r} is not allowed")],
        )
    host = parts.hostname
    if not host:
        raise ForbiddenAddress("the URL has no host", [FieldProblem(field, "no host")])
    try:
        addresses = [str(ipaddress.ip_address(host))]
    except ValueError:
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(
                host, parts.port or 443, type=socket.SOCK_STREAM
            )
        except OSError as exc:
            raise ForbiddenAddress(
                f"the host {host} does not resolve",
                [FieldProblem(field, f"{host} does not resolve: {exc}")],
            ) from exc
        addresses = sorted({str(info[4][0]) for info in infos})
    for address in addresses:
        problem = address_problem(address, allowed)
        if problem is not None:
            raise ForbiddenAddress(
                f"refused: {host} is {problem} ({address}), which {purpose} may not reach "
                f"unless the operator allows its network ({setting})",
                [FieldProblem(field, f"{host} resolves to {problem}")],
            )


class HttpSource:
    def __init__(
        self,
        allowed_networks: list[IPNetwork],
        allowed_schemes: list[str],
        connect_timeout: float,
        read_timeout: float,
    ) -> None:
        self.allowed = allowed_networks
        self.schemes = allowed_schemes
        self.timeout = aiohttp.ClientTimeout(total=None, sock_connect=connect_timeout, sock_read=read_timeout)
        self._session: aiohttp.ClientSession | None = None

    def _session_for_loop(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(resolver=GuardedResolver(self.allowed), limit=100)
            self._session = aiohttp.ClientSession(
                connector=connector, timeout=self.timeout, auto_decompress=False
            )
        return self._session

    async def check(self, url: str, field: str = "body.source_url") -> None:
        await check_outbound_url(
            url, field, self.schemes, self.allowed, "imports", "imports.allowed_networks"
        )

    @asynccontextmanager
    async def fetch(self, url: str, headers: dict[str, str]) -> AsyncIterator[SourceResponse]:
        session = self._session_for_loop()
        origin = urlsplit(url)[:2]
        for _ in range(MAX_REDIRECTS + 1):
            try:
                response = await session.get(url, headers=headers, allow_redirects=False)
            except AllAddressesForbidden as exc:  # the DNS answer changed since the check: final
                raise ForbiddenAddress(
                    f"refused at connect time: {exc}", [FieldProblem("source_url", str(exc))]
                ) from exc
            if response.status in (301, 302, 303, 307, 308) and "Location" in response.headers:
                target = urljoin(url, response.headers["Location"])
                response.release()
                await self.check(target, "redirect")
                if urlsplit(target)[:2] != origin:
                    headers = {
                        k: v for k, v in headers.items() if k.lower() not in ("authorization", "cookie")
                    }
                url = target
                continue
            try:
                kept = {name: response.headers[name] for name in KEPT_HEADERS if name in response.headers}
                yield SourceResponse(response.status, kept, response.content.iter_chunked(CHUNK))
            finally:
                response.release()
            return
        raise aiohttp.TooManyRedirects(response.request_info, response.history)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


def describe(exc: BaseException) -> str:
    """A short, secret-free description of a transport error."""
    text: Any = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"[:300]
