"""A small HTTP client for the service's API, used by the CLI (and the demo)."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp

CHUNK = 1024 * 1024
Progress = Callable[[int], None]


class ApiError(Exception):
    """A request the service refused or could not answer; the message is the problem's detail."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class ApiClient:
    def __init__(self, url: str, key: str | None, timeout: float | None = None) -> None:
        if not key:
            raise ApiError("no API key or token: pass --key or set PROVIDER_API_KEY")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ApiError(f"the service URL {url!r} needs http:// or https:// and a host")
        self.url = url.rstrip("/")
        self.headers = {"Authorization": f"Bearer {key}"}
        # No limit on a whole transfer (a large upload takes as long as it takes); a connection
        # that stops moving for five minutes ends.
        self.timeout = aiohttp.ClientTimeout(total=timeout, sock_connect=10, sock_read=300)
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> ApiClient:
        self._session = aiohttp.ClientSession(timeout=self.timeout, headers=self.headers)
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._session is not None
        await self._session.close()

    @property
    def session(self) -> aiohttp.ClientSession:
        assert self._session is not None, "use ApiClient as an async context manager"
        return self._session

    async def _raise_for(self, response: aiohttp.ClientResponse, what: str) -> None:
        if response.status < 400:
            return
        detail = response.reason or ""
        try:
            body = await response.json(content_type=None)
            if isinstance(body, dict):
                detail = str(body.get("detail") or detail)
        except (ValueError, aiohttp.ContentTypeError):
            pass
        raise ApiError(f"{what} failed with {response.status}: {detail}", response.status)

    async def json(self, method: str, path: str, **kwargs: Any) -> Any:
        what = f"{method} {path}"
        try:
            async with self.session.request(method, self.url + path, **kwargs) as response:
                await self._raise_for(response, what)
                if response.status == 204 or response.content_length == 0:
                    return None
                try:
                    return await response.json(content_type=None)
                except ValueError as exc:
                    raise ApiError(
                        f"{what}: the answer is not JSON: is {self.url} the provider service?"
                    ) from exc
        except aiohttp.ClientConnectionError as exc:
            raise ApiError(f"cannot reach the service at {self.url}: {exc}") from exc

    async def pages(self, path: str, **params: str) -> AsyncIterator[dict[str, Any]]:
        """Every item of a paginated list."""
        token: str | None = None
        while True:
            query = {"page_size": "500", **params, **({"page_token": token} if token else {})}
            page = await self.json("GET", path, params=query)
            for item in page["items"]:
                yield item
            token = page["next_page_token"]
            if not token:
                return

    async def stream(self, path: str, params: dict[str, str] | None = None) -> AsyncIterator[bytes]:
        """A response body as it arrives (logs, followed)."""
        try:
            async with self.session.get(
                self.url + path, params=params, timeout=aiohttp.ClientTimeout(sock_connect=10)
            ) as response:
                await self._raise_for(response, f"GET {path}")
                async for block in response.content.iter_any():
                    yield block
        except aiohttp.ClientConnectionError as exc:
            raise ApiError(f"cannot reach the service at {self.url}: {exc}") from exc

    @staticmethod
    def object_path(workspace: str, key: str) -> str:
        return f"/api/v1/workspaces/{quote(workspace, safe='')}/objects/{quote(key, safe='/')}"

    async def upload(self, workspace: str, key: str, source: Path, progress: Progress) -> Any:
        """Stream a local file to an object, reporting bytes sent."""
        size = os.stat(source).st_size

        async def body() -> AsyncIterator[bytes]:
            with source.open("rb") as handle:
                while block := handle.read(CHUNK):
                    progress(len(block))
                    yield block

        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(size)}
        return await self.json("PUT", self.object_path(workspace, key), data=body(), headers=headers)

    async def upload_stream(self, workspace: str, key: str, chunks: AsyncIterator[bytes]) -> Any:
        """Stream bytes of unknown length (standard input) to an object, chunked."""
        headers = {"Content-Type": "application/octet-stream"}
        return await self.json("PUT", self.object_path(workspace, key), data=chunks, headers=headers)

    async def download(
        self,
        workspace: str,
        key: str,
        target: Path,
        started: Callable[[int | None], None],
        progress: Progress,
    ) -> int:
        """Stream an object to a local file (written beside it, renamed when complete)."""
        path = self.object_path(workspace, key)
        partial = target.with_name(target.name + ".part")
        size = 0
        try:
            async with self.session.get(self.url + path) as response:
                await self._raise_for(response, f"GET {path}")
                started(response.content_length)
                with partial.open("wb") as handle:
                    async for block in response.content.iter_chunked(CHUNK):
                        handle.write(block)
                        size += len(block)
                        progress(len(block))
        except aiohttp.ClientConnectionError as exc:
            partial.unlink(missing_ok=True)
            raise ApiError(f"cannot reach the service at {self.url}: {exc}") from exc
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        os.replace(partial, target)
        return size

    async def event_stream(
        self, params: dict[str, str], last_event_id: str | None = None
    ) -> AsyncIterator[tuple[str | None, dict[str, Any]]]:
        """One connection to the event stream (SSE): (event id, data) pairs until it ends or
        drops, or goes silent past two heartbeats. Raises ApiError when the service cannot be
        reached or refuses."""
        path = "/api/v1/events"
        headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
        try:
            async with self.session.get(
                self.url + path,
                params=params,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=60),
            ) as response:
                await self._raise_for(response, f"GET {path}")
                fields: dict[str, str] = {}
                async for raw in response.content:
                    line = raw.decode().rstrip("\r\n")
                    if line.startswith(":"):
                        continue
                    if line:
                        name, _, value = line.partition(":")
                        fields[name] = value.removeprefix(" ")
                        continue
                    if "data" in fields:
                        yield fields.get("id"), json.loads(fields["data"])
                    fields = {}
        except (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError, TimeoutError):
            return  # dropped: the caller decides how to go on
        except aiohttp.ClientConnectionError as exc:
            raise ApiError(f"cannot reach the service at {self.url}: {exc}") from exc

    async def events(
        self, params: dict[str, str], last_event_id: str | None = None
    ) -> AsyncIterator[dict[str, Any]]:
        """Follow the event stream; after a dropped connection, resume after the last event seen."""
        while True:
            async for event_id, data in self.event_stream(params, last_event_id):
                last_event_id = event_id or last_event_id
                yield data
            await asyncio.sleep(1)
