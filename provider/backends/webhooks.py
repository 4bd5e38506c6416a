"""Webhook requests (aiohttp) behind the SSRF guard: checked when a subscription is created and
again on the address actually connected to; redirects are never followed."""

from __future__ import annotations

import asyncio
import time

import aiohttp

from provider.backends.http_source import (
    AllAddressesForbidden,
    GuardedResolver,
    check_literal_host,
    check_outbound_url,
    describe,
)
from provider.domain.addresses import IPNetwork
from provider.services.ports import WebhookResponse


class HttpWebhookSender:
    def __init__(
        self, allowed_networks: list[IPNetwork], allow_http: bool, timeout_seconds: float, connections: int
    ) -> None:
        self.allowed = allowed_networks
        self.schemes = ["https", "http"] if allow_http else ["https"]
        self.timeout = aiohttp.ClientTimeout(total=timeout_seconds)
        self.connections = connections
        # Requests wait here, not in the connection pool: the timeout is the receiver's time to
        # answer, and a wait for one of our own connections must not count against it.
        self._slots: tuple[asyncio.AbstractEventLoop, asyncio.Semaphore] | None = None
        self._session: aiohttp.ClientSession | None = None

    def _slots_for_loop(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        if self._slots is None or self._slots[0] is not loop:
            self._slots = (loop, asyncio.Semaphore(self.connections))
        return self._slots[1]

    def _session_for_loop(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(
                resolver=GuardedResolver(self.allowed), limit=self.connections, limit_per_host=0
            )
            self._session = aiohttp.ClientSession(connector=connector, timeout=self.timeout)
        return self._session

    async def check(self, url: str, field: str) -> None:
        await check_outbound_url(
            url, field, self.schemes, self.allowed, "webhooks", "notifications.allowed_networks"
        )

    async def send(self, url: str, headers: dict[str, str], body: bytes) -> WebhookResponse:
        async with self._slots_for_loop():
            return await self._send(url, headers, body)

    async def _send(self, url: str, headers: dict[str, str], body: bytes) -> WebhookResponse:
        started = time.monotonic()
        try:
            check_literal_host(url, self.allowed)
            async with self._session_for_loop().post(
                url, data=body, headers=headers, allow_redirects=False
            ) as response:
                await response.read()
                status = response.status
        except AllAddressesForbidden as exc:  # the DNS answer changed since the subscription was made
            return WebhookResponse(None, f"refused at connect time: {exc}", time.monotonic() - started)
        except TimeoutError:
            return WebhookResponse(
                None, f"no answer within {self.timeout.total:g} s", time.monotonic() - started
            )
        except (aiohttp.ClientError, OSError) as exc:
            return WebhookResponse(None, describe(exc), time.monotonic() - started)
        seconds = time.monotonic() - started
        if 300 <= status < 400:
            return WebhookResponse(status, f"HTTP {status}: redirects are not followed", seconds)
        if status >= 300:
            return WebhookResponse(status, f"HTTP {status}", seconds)
        return WebhookResponse(status, None, seconds)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
