"""Outbound JSON callbacks (EDC provisioning callbacks) over aiohttp."""

from __future__ import annotations

from typing import Any

import aiohttp


class HttpPoster:
    def __init__(self, timeout_seconds: float) -> None:
        self.timeout = aiohttp.ClientTimeout(total=timeout_seconds)
        self._session: aiohttp.ClientSession | None = None

    async def post_json(self, url: str, headers: dict[str, str], body: dict[str, Any]) -> int:
        """POST and return the status; raises aiohttp.ClientError or TimeoutError when unreachable."""
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self.timeout)
        async with self._session.post(url, json=body, headers=headers, allow_redirects=False) as response:
            await response.read()
            return response.status

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
