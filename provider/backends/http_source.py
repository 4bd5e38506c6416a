"""Remote HTTP sources for imports (aiohttp), behind the SSRF guard.

The guard runs twice: when an import is requested (on the URL's resolved addresses) and when
connecting (a resolver that drops forbidden addresses, so a DNS answer that changed in the
meantime cannot smuggle a request to an internal host; aiohttp connects to an IP-literal host
without asking the resolver, so `check_literal_host` judges those before each request).
Redirects are followed by hand so that each hop is checked, and credentials are not forwarded
to another origin. Webhooks and EDC callbacks use the same machinery.

A fetch from an offset is an HTTP range request (`If-Range` names the version, so a changed
resource comes whole); aiohttp's errors become the port's SourceError and SourceInterrupted.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import AsyncIterator, Collection
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urljoin, urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

from provider.domain.addresses import (
    METADATA_PROBLEM,
    IPNetwork,
    destination_problem,
    noncanonical_ipv4,
)
from provider.domain.errors import FieldProblem, ForbiddenAddress
from provider.services.ports import SourceError, SourceInterrupted, SourceResponse

MAX_REDIRECTS = 5
CHUNK = 256 * 1024
# Failures after which the bytes already received are good: a range request may continue them.
INTERRUPTIONS = (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError, TimeoutError, ConnectionError)


class AllAddressesForbidden(aiohttp.ClientConnectionError):
    """Every address the host resolves to at connect time is one the guard forbids."""


class GuardedResolver(AbstractResolver):
    """Keeps only the addresses the guard allows; `hosts`, when given, are the only names that
    may resolve outside `allowed` (see destination_problem)."""

    def __init__(self, allowed: list[IPNetwork], hosts: Collection[str] | None = None) -> None:
        self.allowed = allowed
        self.hosts = hosts
        self.inner = DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self.inner.resolve(host, port, family)
        problems = [destination_problem(host, r["host"], self.allowed, self.hosts) for r in results]
        kept = [r for r, problem in zip(results, problems, strict=True) if problem is None]
        if not kept:
            raise AllAddressesForbidden(f"{host} resolves to {problems[0] if results else 'no address'}")
        return kept

    async def close(self) -> None:
        await self.inner.close()


def check_literal_host(url: str, allowed: list[IPNetwork], hosts: Collection[str] | None = None) -> None:
    """Raise AllAddressesForbidden when `url`'s host is an IP address the guard refuses: aiohttp
    connects to those without asking the resolver."""
    host = urlsplit(url).hostname or ""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return
    problem = destination_problem(host, address, allowed, hosts)
    if problem is not None:
        raise AllAddressesForbidden(f"{host} is {problem}")


async def check_outbound_url(
    url: str,
    field: str,
    schemes: list[str],
    allowed: list[IPNetwork],
    purpose: str,
    setting: str,
    hosts: Collection[str] | None = None,
) -> None:
    """Raise ForbiddenAddress naming the rule when `url` may not be requested (scheme, address);
    `hosts` as in destination_problem."""
    parts = urlsplit(url)
    if parts.scheme not in schemes:
        raise ForbiddenAddress(
            f"the URL scheme must be one of {', '.join(schemes)}",
            [FieldProblem(field, f"scheme {parts.scheme or '(none)'!r} is not allowed")],
        )
    host = parts.hostname
    if not host:
        raise ForbiddenAddress("the URL has no host", [FieldProblem(field, "no host")])
    if noncanonical_ipv4(host):
        raise ForbiddenAddress(
            f"refused: the host {host} spells an IPv4 address in a form other than four decimal "
            "numbers (a.b.c.d); write the address that way",
            [FieldProblem(field, f"{host} is not a canonical IPv4 address")],
        )
    literal = True
    try:
        addresses = [str(ipaddress.ip_address(host))]
    except ValueError:
        literal = False
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
        problem = destination_problem(host, address, allowed, hosts)
        if problem is None:
            continue
        named = f"{host} is {problem}" if literal else f"{host} resolves to {address}, {problem}"
        rule = (
            "which nothing may reach"
            if problem.startswith(METADATA_PROBLEM)
            else f"which {purpose} may not reach unless the operator allows it ({setting})"
        )
        raise ForbiddenAddress(f"refused: {named}, {rule}", [FieldProblem(field, named)])


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
    async def fetch(
        self, url: str, headers: dict[str, str], offset: int = 0, version: str | None = None
    ) -> AsyncIterator[SourceResponse]:
        if offset:
            headers = {**headers, "Range": f"bytes={offset}-"}
            if version:
                headers["If-Range"] = version
        session = self._session_for_loop()
        origin = urlsplit(url)[:2]
        for _ in range(MAX_REDIRECTS + 1):
            try:
                check_literal_host(url, self.allowed)
                response = await session.get(url, headers=headers, allow_redirects=False)
            except AllAddressesForbidden as exc:  # the DNS answer changed since the check: final
                raise ForbiddenAddress(
                    f"refused at connect time: {exc}", [FieldProblem("source_url", str(exc))]
                ) from exc
            except (aiohttp.ClientError, TimeoutError, ConnectionError) as exc:
                raise source_error(exc) from exc
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
            length = response.headers.get("Content-Length", "")
            try:
                yield SourceResponse(
                    status=response.status,
                    offset=offset if offset and response.status == 206 else 0,
                    length=int(length) if length.isdigit() else None,
                    resumable=response.headers.get("Accept-Ranges", "").lower() == "bytes",
                    version=response.headers.get("ETag") or response.headers.get("Last-Modified"),
                    chunks=_chunks(response),
                )
            finally:
                response.release()
            return
        raise source_error(aiohttp.TooManyRedirects(response.request_info, response.history))

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


async def _chunks(response: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
    try:
        async for chunk in response.content.iter_chunked(CHUNK):
            yield chunk
    except (aiohttp.ClientError, TimeoutError, ConnectionError) as exc:
        raise source_error(exc) from exc


def source_error(exc: BaseException) -> SourceError:
    """The port's error for an aiohttp or socket error, with its words and HTTP status."""
    message = str(exc) or type(exc).__name__
    if isinstance(exc, INTERRUPTIONS):
        return SourceInterrupted(message)
    return SourceError(message, getattr(exc, "status", None))


def describe(exc: BaseException) -> str:
    """A short, secret-free description of a transport error."""
    text: Any = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"[:300]
