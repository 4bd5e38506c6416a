"""The workspace as the sidecar sees it: list, download to a file, upload from a file."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import http.client
import json
import os
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, TypeVar
from urllib.parse import quote, urlencode, urlsplit

from provider.aio import Backoff
from provider.sidecar.contract import Env

CHUNK = 1024 * 1024
T = TypeVar("T")


class RemoteError(Exception):
    """The workspace refused or failed a request; `status` is the HTTP status when there was one."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


ATTEMPTS = 5
BACKOFF = Backoff(0.5, 4.0, "upper")


def _retried(call: Callable[[], T]) -> T:
    """Run a blocking request, again after about 0.5, 1, 2, 4 s when the service is briefly
    unavailable (5xx, 429) or the connection fails. 4xx answers are final. (Jitter: the pods of
    many jobs that failed together do not come back together.)"""
    for attempt in range(1, ATTEMPTS + 1):
        try:
            return call()
        except (OSError, http.client.HTTPException, RemoteError) as exc:
            transient = (
                not isinstance(exc, RemoteError)
                or exc.status is None
                or exc.status >= 500
                or exc.status == 429
            )
            if not transient or attempt == ATTEMPTS:
                raise
            time.sleep(BACKOFF.delay(attempt))
    raise AssertionError("unreachable")


class Workspace(Protocol):
    async def __aenter__(self) -> Workspace: ...

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...

    def keys(self, prefix: str) -> AsyncIterator[str]:
        """Every key under `prefix`, in order."""

    async def download(self, key: str, target: Path) -> int:
        """Write the object to `target`; returns its size. Raises RemoteError (404 included)."""

    async def upload(self, key: str, source: Path) -> tuple[int, str]:
        """Upload a file; returns (size, sha256 hex)."""


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


class ApiWorkspace:
    """The objects API with a workspace token (filesystem storage).

    Plain `http.client` rather than an async client: a sidecar starts once per job stage, and
    the standard library imports in a fraction of the time, which matters for many short jobs.
    """

    def __init__(self, url: str, workspace_id: str, token: str, timeout: float = 300) -> None:
        parts = urlsplit(url)
        self.https = parts.scheme == "https"
        self.netloc = parts.netloc
        self.base = f"{parts.path.rstrip('/')}/api/v1/workspaces/{quote(workspace_id, safe='')}/objects"
        self.headers = {"Authorization": f"Bearer {token}"}
        self.timeout = timeout

    async def __aenter__(self) -> ApiWorkspace:
        return self

    async def __aexit__(self, *args: object) -> None:
        return None

    def _connection(self) -> http.client.HTTPConnection:
        kind = http.client.HTTPSConnection if self.https else http.client.HTTPConnection
        return kind(self.netloc, timeout=self.timeout, blocksize=CHUNK)

    def _list_page(self, prefix: str, token: str | None) -> dict[str, Any]:
        query = urlencode({"prefix": prefix, "page_size": "500", **({"page_token": token} if token else {})})
        connection = self._connection()
        try:
            connection.request("GET", f"{self.base}?{query}", headers=self.headers)
            response = connection.getresponse()
            body = response.read()
            if response.status != 200:
                raise RemoteError(f"listing {prefix!r} failed with HTTP {response.status}", response.status)
            page: dict[str, Any] = json.loads(body)
            return page
        finally:
            connection.close()

    async def keys(self, prefix: str) -> AsyncIterator[str]:
        token: str | None = None
        while True:
            page = await asyncio.to_thread(_retried, functools.partial(self._list_page, prefix, token))
            for item in page["items"]:
                yield item["key"]
            token = page["next_page_token"]
            if not token:
                return

    def _download(self, key: str, target: Path) -> int:
        connection = self._connection()
        try:
            connection.request("GET", f"{self.base}/{quote(key, safe='/')}", headers=self.headers)
            response = connection.getresponse()
            if response.status != 200:
                response.read()
                raise RemoteError(f"object {key!r}: HTTP {response.status}", response.status)
            size = 0
            with target.open("wb") as handle:
                while block := response.read(CHUNK):
                    handle.write(block)
                    size += len(block)
            return size
        finally:
            connection.close()

    async def download(self, key: str, target: Path) -> int:
        return await asyncio.to_thread(_retried, lambda: self._download(key, target))

    def _upload(self, key: str, source: Path) -> tuple[int, str]:
        sha256 = file_digest(source)
        size = source.stat().st_size
        headers = {
            **self.headers,
            "x-checksum-sha256": sha256,
            "Content-Length": str(size),
            "Content-Type": "application/octet-stream",
        }
        connection = self._connection()
        try:
            with source.open("rb") as handle:
                connection.request("PUT", f"{self.base}/{quote(key, safe='/')}", body=handle, headers=headers)
                response = connection.getresponse()
                detail = response.read()
            if response.status not in (200, 201):
                raise RemoteError(
                    f"upload of {key!r} failed with HTTP {response.status}: {detail[:300]!r}", response.status
                )
            return size, sha256
        finally:
            connection.close()

    async def upload(self, key: str, source: Path) -> tuple[int, str]:
        return await asyncio.to_thread(_retried, lambda: self._upload(key, source))


class S3Workspace:
    """One bucket, or one prefix of a shared bucket, with temporary credentials (S3 storage).
    Keys are the workspace's own: the prefix is added on the way out and cut on the way back."""

    def __init__(self, endpoint_url: str | None, bucket: str, region: str, prefix: str = "") -> None:
        self.endpoint_url = endpoint_url or None
        self.bucket = bucket
        self.region = region
        self.prefix = prefix

    async def __aenter__(self) -> S3Workspace:
        import aioboto3
        from botocore.config import Config

        session = aioboto3.Session(
            aws_access_key_id=os.environ[Env.AWS_ACCESS_KEY_ID],
            aws_secret_access_key=os.environ[Env.AWS_SECRET_ACCESS_KEY],
            aws_session_token=os.environ.get(Env.AWS_SESSION_TOKEN),
            region_name=self.region,
        )
        config = Config(
            signature_version="s3v4", s3={"addressing_style": "path"}, retries={"mode": "standard"}
        )
        self._context = session.client("s3", endpoint_url=self.endpoint_url, config=config)
        self.s3: Any = await self._context.__aenter__()
        return self

    async def __aexit__(self, *args: Any) -> None:
        await self._context.__aexit__(*args)

    async def keys(self, prefix: str) -> AsyncIterator[str]:
        paginator = self.s3.get_paginator("list_objects_v2")
        async for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix + prefix):
            for item in page.get("Contents", []):
                yield item["Key"][len(self.prefix) :]

    async def download(self, key: str, target: Path) -> int:
        from botocore.exceptions import ClientError

        try:
            answer = await self.s3.get_object(Bucket=self.bucket, Key=self.prefix + key)
        except ClientError as exc:
            raise RemoteError(f"object {key!r}: {exc.response.get('Error', {}).get('Code')}") from exc
        size = 0
        async with answer["Body"] as stream:
            with target.open("wb") as handle:
                async for block in stream.content.iter_chunked(CHUNK):
                    handle.write(block)
                    size += len(block)
        return size

    async def upload(self, key: str, source: Path) -> tuple[int, str]:
        from boto3.s3.transfer import TransferConfig

        sha256 = file_digest(source)
        config = TransferConfig(
            multipart_threshold=16 * CHUNK, multipart_chunksize=16 * CHUNK, max_concurrency=2
        )
        await self.s3.upload_file(str(source), self.bucket, self.prefix + key, Config=config)
        return source.stat().st_size, sha256
