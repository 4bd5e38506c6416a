"""Serving the application over TCP, at most `server.max_connections` connections at a time.

`provider serve` runs the service through `serve`; tests start it through `start`, so both use
the same limit, and the same problem answers to requests aiohttp cannot parse
(provider.api.protocol). The header and body timeouts are part of the application itself
(provider.api).
"""

from __future__ import annotations

import asyncio
import gc
import signal
import ssl

from aiohttp import web

from provider.api.protocol import CLIENT_ERRORS, ProblemRequestHandler
from provider.config import ServerSettings
from provider.logs import ThrottledWarnings, access_log


class ConnectionLimit:
    """Admits connections to aiohttp's server while fewer than `limit` are open; closes the rest
    as soon as they are accepted, so that they hold nothing and the service stays responsive."""

    def __init__(self, server: web.Server, limit: int, warnings: ThrottledWarnings) -> None:
        self._server = server
        self.limit = limit
        self.open = 0
        self._warnings = warnings

    def protocol(self) -> asyncio.Protocol:
        return _Slot(self)

    def admit(self) -> asyncio.Protocol | None:
        """aiohttp's protocol for one more connection, or None when the limit is reached."""
        if self.open >= self.limit:
            # Throttled: under attack, a line per connection would flood the logs.
            self._warnings.warn(
                "connection-limit",
                "%d connections are open, the limit (server.max_connections): a new connection "
                "was closed unserved",
                self.open,
            )
            return None
        self.open += 1
        # What web.Server() makes, with aiohttp's parser errors answered as problems.
        return ProblemRequestHandler(
            self._server, self._warnings, loop=self._server._loop, **self._server._kwargs
        )

    def release(self) -> None:
        self.open -= 1


class _Slot(asyncio.Protocol):
    """One accepted connection: passed on to aiohttp's protocol if admitted, else closed at once.

    Admission happens in connection_made, which asyncio calls for one connection after another,
    so a burst of connections accepted together cannot overshoot the limit.
    """

    __slots__ = ("_inner", "_limit")

    def __init__(self, limit: ConnectionLimit) -> None:
        self._limit = limit
        self._inner: asyncio.Protocol | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._inner = self._limit.admit()
        if self._inner is None:
            transport.close()
        else:
            self._inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self._inner is not None:
            self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received() if self._inner is not None else None

    def pause_writing(self) -> None:
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._inner is not None:
            self._inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._inner is not None:
            self._limit.release()
            self._inner.connection_lost(exc)


class LimitedSite(web.BaseSite):
    """A TCP site whose connections pass through a ConnectionLimit."""

    __slots__ = ("_host", "_max_connections", "_port", "limit")

    def __init__(
        self,
        runner: web.BaseRunner,
        host: str,
        port: int,
        max_connections: int,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        super().__init__(runner, ssl_context=ssl_context)
        self._host = host
        self._port = port
        self._max_connections = max_connections
        self.limit: ConnectionLimit | None = None

    @property
    def port(self) -> int:
        """The port: the bound one once started (the requested one may be 0)."""
        return self._port

    @property
    def name(self) -> str:
        scheme = "https" if self._ssl_context else "http"
        return f"{scheme}://{self._host}:{self.port}"

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None and isinstance(self._runner, web.AppRunner)
        self.limit = ConnectionLimit(server, self._max_connections, self._runner.app[CLIENT_ERRORS])
        listening = await asyncio.get_running_loop().create_server(
            self.limit.protocol, self._host, self._port, backlog=self._backlog, ssl=self._ssl_context
        )
        self._server = listening
        self._port = int(listening.sockets[0].getsockname()[1])


def tls_context(settings: ServerSettings) -> ssl.SSLContext | None:
    """TLS when a certificate is configured (docs/operations.md): TLS 1.2 at least, the
    standard library's secure defaults otherwise."""
    if settings.tls_cert_file is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(settings.tls_cert_file, settings.tls_key_file)
    return context


async def start(app: web.Application, settings: ServerSettings) -> tuple[web.AppRunner, LimitedSite]:
    """Run the application's start-up and listen on settings.host and settings.port."""
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=settings.shutdown_timeout_seconds)
    await runner.setup()
    try:
        site = LimitedSite(
            runner, settings.host, settings.port, settings.max_connections, tls_context(settings)
        )
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner, site


def settle_garbage_collector() -> None:
    """Once started: what start-up made (modules, the application, its models) lives as long as
    the process, so it is moved out of the collector's sight. A full collection then walks only
    what requests made since: tens of milliseconds less per pause, every few seconds under load,
    which is what requests waited for at the far end of their latency."""
    gc.collect()
    gc.freeze()
    gc.enable()


def serve(app: web.Application, settings: ServerSettings) -> None:
    """Serve until SIGINT or SIGTERM, then let running requests finish (up to the shutdown timeout)."""

    async def main() -> None:
        runner, _ = await start(app, settings)
        settle_garbage_collector()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        try:
            await stop.wait()
        finally:
            await runner.cleanup()
            access_log.flush()  # the last requests' lines

    asyncio.run(main())
