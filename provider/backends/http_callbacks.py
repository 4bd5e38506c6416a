"""Outbound JSON callbacks (EDC provisioning callbacks) over aiohttp, behind the SSRF guard.

They carry the connector's management API key and the access code of a workspace, so each
connector's callbacks go only to the host names and networks configured for it (nothing
configured: nowhere), never to a cloud metadata address; checked when a provision request names
the address, and again on the address actually connected to.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import aiohttp

from provider.backends.http_source import (
    AllAddressesForbidden,
    GuardedResolver,
    check_literal_host,
    check_outbound_url,
)
from provider.domain.addresses import IPNetwork
from provider.domain.errors import FieldProblem, ForbiddenAddress


@dataclass(frozen=True)
class CallbackDestinations:
    """Where one connector's callbacks may go: edc.connectors.<name>.callback_hosts/_networks."""

    hosts: frozenset[str] = frozenset()
    networks: list[IPNetwork] = field(default_factory=list)


class HttpPoster:
    def __init__(self, timeout_seconds: float, destinations: dict[str, CallbackDestinations]) -> None:
        self.timeout = aiohttp.ClientTimeout(total=timeout_seconds)
        self.destinations = destinations
        self._sessions: dict[str, aiohttp.ClientSession] = {}  # by connector: each its own resolver

    def _rules(self, connector: str) -> CallbackDestinations:
        return self.destinations.get(connector, CallbackDestinations())

    async def check(self, connector: str, url: str, field: str) -> None:
        rules = self._rules(connector)
        setting = f"edc.connectors.{connector}"
        if not rules.hosts and not rules.networks:
            raise ForbiddenAddress(
                f"refused: connector {connector} has no callback destinations; the operator sets "
                f"{setting}.callback_hosts or {setting}.callback_networks",
                [FieldProblem(field, f"no callback destinations are configured for connector {connector}")],
            )
        await check_outbound_url(
            url,
            field,
            ["http", "https"],
            rules.networks,
            f"callbacks to connector {connector}",
            f"{setting}.callback_networks, or the host name in {setting}.callback_hosts",
            rules.hosts,
        )

    def _session(self, connector: str, rules: CallbackDestinations) -> aiohttp.ClientSession:
        session = self._sessions.get(connector)
        if session is None or session.closed:
            resolver = GuardedResolver(rules.networks, rules.hosts)
            session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(resolver=resolver), timeout=self.timeout
            )
            self._sessions[connector] = session
        return session

    async def post_json(
        self, connector: str, url: str, headers: dict[str, str], body: dict[str, Any], method: str = "POST"
    ) -> int:
        rules = self._rules(connector)
        try:
            check_literal_host(url, rules.networks, rules.hosts)
            async with self._session(connector, rules).request(
                method, url, json=body, headers=headers, allow_redirects=False
            ) as response:
                await response.read()
                return response.status
        except AllAddressesForbidden as exc:
            raise ForbiddenAddress(f"refused at connect time: {exc}") from exc

    async def close(self) -> None:
        for session in self._sessions.values():
            await session.close()
