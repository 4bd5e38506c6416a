"""Filesystem storage: one directory per workspace under a root directory.

Layout: `<root>/<location>/objects/<key>` holds each object as a plain file; uploads are
written to `<root>/<location>/uploads/` and renamed into place only when complete and
verified, so a reader never sees a partial object.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from provider.backends.directories import ensure_writable
from provider.backends.storage.streams import DigestingCounter, batches
from provider.domain.errors import Conflict, NotFound, NotSupported
from provider.domain.pagination import Page, PageRequest, page_from_rows
from provider.domain.ranges import ByteRange
from provider.domain.workspaces import Usage
from provider.services.ports import (
    ObjectInfo,
    ObjectStream,
    PutLimits,
    StorageAccess,
    StoredObject,
    TemporaryCredentials,
)

BLOCK = 1024 * 1024


def file_etag(stat: os.stat_result) -> str:
    """The same ETag aiohttp's FileResponse sends, so both paths agree."""
    return f'"{stat.st_mtime_ns:x}-{stat.st_size:x}"'


def _info(key: str, stat: os.stat_result) -> ObjectInfo:
    return ObjectInfo(key, stat.st_size, file_etag(stat), datetime.fromtimestamp(stat.st_mtime, UTC))


class FilesystemStorage:
    name = "fs"

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    def _objects(self, location: str) -> Path:
        return self.root / location / "objects"

    def _path(self, location: str, key: str) -> Path:
        # Keys are validated by the domain (no '..', no leading '/'); resolve() guards again.
        path = (self._objects(location) / key).resolve()
        if not path.is_relative_to(self._objects(location).resolve()):
            raise NotFound("object", key)
        return path

    def _require(self, location: str) -> None:
        if not self._objects(location).is_dir():
            raise NotFound("storage location", location)

    async def verify(self) -> None:
        # Directories are reached only through the service: no credentials to escape with.
        await self.ping()

    async def ping(self) -> None:
        await ensure_writable(self.root)

    def location_for(self, name: str) -> str:
        return name

    async def create_location(self, location: str) -> None:
        def create() -> None:
            self._objects(location).mkdir(parents=True, exist_ok=True)
            (self.root / location / "uploads").mkdir(exist_ok=True)

        await asyncio.to_thread(create)

    async def delete_location(self, location: str) -> None:
        await asyncio.to_thread(shutil.rmtree, self.root / location, True)

    async def put(
        self, location: str, key: str, chunks: AsyncIterator[bytes], limits: PutLimits
    ) -> StoredObject:
        self._require(location)
        target = self._path(location, key)
        temp = self.root / location / "uploads" / uuid.uuid4().hex
        counter = DigestingCounter(limits)
        handle = await asyncio.to_thread(open, temp, "wb")
        pending: list[asyncio.Future[None]] = []
        try:
            # Batches of about BLOCK bytes are hashed and written in two threads (both release the
            # GIL) while the event loop receives the next batch: three cores' worth of work overlap.
            async for batch in batches(chunks, BLOCK):
                await asyncio.gather(*pending)
                pending = [
                    asyncio.ensure_future(asyncio.to_thread(counter.update_many, batch)),
                    asyncio.ensure_future(asyncio.to_thread(handle.writelines, batch)),
                ]
            await asyncio.gather(*pending)
            sha256 = counter.verify()
            await asyncio.to_thread(_flush, handle)
            await asyncio.to_thread(handle.close)
            replaced, stat = await asyncio.to_thread(_commit, temp, target, key)
        except BaseException:
            for future in pending:
                future.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            await asyncio.to_thread(_discard, handle, temp)
            raise
        return StoredObject(_info(key, stat), sha256, replaced)

    async def open(self, location: str, key: str, byte_range: ByteRange | None) -> ObjectStream:
        path = self._path(location, key)
        try:
            handle = await asyncio.to_thread(open, path, "rb")
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise NotFound("object", key) from None
        stat = os.fstat(handle.fileno())
        start, length = (byte_range.start, byte_range.length) if byte_range else (0, stat.st_size)

        async def chunks() -> AsyncIterator[bytes]:
            try:
                await asyncio.to_thread(handle.seek, start)
                remaining = length
                while remaining > 0:
                    block = await asyncio.to_thread(handle.read, min(BLOCK, remaining))
                    if not block:
                        break
                    remaining -= len(block)
                    yield block
            finally:
                handle.close()

        return ObjectStream(_info(key, stat), byte_range, chunks())

    async def head(self, location: str, key: str) -> ObjectInfo | None:
        try:
            stat = await asyncio.to_thread(os.stat, self._path(location, key))
        except (FileNotFoundError, NotADirectoryError):
            return None
        return _info(key, stat) if not _is_dir(stat) else None

    async def list(self, location: str, prefix: str, page: PageRequest) -> Page[ObjectInfo]:
        self._require(location)
        after = page.after[0] if page.after else ""

        def scan() -> list[ObjectInfo]:
            objects = self._objects(location)
            # Walk only the directory the prefix points into.
            base = objects / prefix.rsplit("/", 1)[0] if "/" in prefix else objects
            found = []
            for directory, _dirs, files in os.walk(base):
                for name in files:
                    full = Path(directory) / name
                    key = full.relative_to(objects).as_posix()
                    if key.startswith(prefix) and key > after:
                        found.append((key, full))
            found.sort()
            result = []
            for key, full in found[: page.size + 1]:
                try:
                    result.append(_info(key, full.stat()))
                except FileNotFoundError:
                    continue  # deleted while listing
            return result

        rows = await asyncio.to_thread(scan)
        return page_from_rows(rows, page.size, lambda o: (o.key,))

    async def delete(self, location: str, key: str) -> ObjectInfo | None:
        path = self._path(location, key)
        objects = self._objects(location)

        def remove() -> ObjectInfo | None:
            try:
                stat = path.stat()
                if _is_dir(stat):
                    return None
                path.unlink()
            except (FileNotFoundError, NotADirectoryError):
                return None
            _prune_empty(path.parent, objects)
            return _info(key, stat)

        return await asyncio.to_thread(remove)

    async def usage(self, location: str) -> Usage:
        self._require(location)

        def count() -> Usage:
            total = objects = 0
            for directory, _dirs, files in os.walk(self._objects(location)):
                for name in files:
                    try:
                        total += (Path(directory) / name).stat().st_size
                        objects += 1
                    except FileNotFoundError:
                        continue
            return Usage(total, objects)

        return await asyncio.to_thread(count)

    async def presign(self, location: str, key: str, method: str, expires_seconds: int) -> str | None:
        return None

    async def temporary_credentials(self, location: str, duration_seconds: int) -> TemporaryCredentials:
        raise NotSupported("temporary S3 credentials need the s3 storage backend; use a workspace token")

    async def job_access(self, location: str, lifetime_seconds: int) -> StorageAccess | None:
        return None  # directories are reached through the objects API only

    async def consumer_credentials(self, location: str, duration_seconds: int) -> TemporaryCredentials | None:
        return None

    def consumer_address(self, location: str) -> dict[str, Any] | None:
        return None

    def local_path(self, location: str, key: str) -> Path | None:
        return self._path(location, key)

    async def close(self) -> None:
        return None


def _is_dir(stat: os.stat_result) -> bool:
    import stat as stat_module

    return stat_module.S_ISDIR(stat.st_mode)


def _flush(handle: object) -> None:
    handle.flush()  # type: ignore[attr-defined]
    os.fsync(handle.fileno())  # type: ignore[attr-defined]


def _commit(temp: Path, target: Path, key: str) -> tuple[int | None, os.stat_result]:
    """Move a finished upload into place; the rename is atomic on one filesystem."""
    try:
        previous = target.stat()
        if _is_dir(previous):
            raise Conflict(f"key {key!r} is a prefix of other objects and cannot be an object itself")
        replaced: int | None = previous.st_size
    except FileNotFoundError:
        replaced = None
    except NotADirectoryError:
        raise Conflict(f"key {key!r} lies below an existing object") from None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise Conflict(f"key {key!r} lies below an existing object") from None
    os.replace(temp, target)
    return replaced, target.stat()


def _discard(handle: object, temp: Path) -> None:
    try:
        handle.close()  # type: ignore[attr-defined]
    finally:
        temp.unlink(missing_ok=True)


def _prune_empty(directory: Path, stop: Path) -> None:
    while directory != stop and directory.is_relative_to(stop):
        try:
            directory.rmdir()
        except OSError:
            return
        directory = directory.parent
