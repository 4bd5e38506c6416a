"""In-memory fakes of the ports, for service tests that need neither HTTP, nor a disk, nor a
server. Each keeps the port's contract: `MemoryStorage` runs the storage contract suite
(tests/test_storage_contract.py) beside the real backends, so a service test over it proves what
it would prove over them."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from provider.backends.storage.streams import DigestingCounter
from provider.domain.errors import NotFound, NotSupported
from provider.domain.executions import State
from provider.domain.pagination import Page, PageRequest, page_from_rows
from provider.domain.ranges import ByteRange
from provider.domain.workspaces import Usage
from provider.services.ports import (
    Clock,
    ComputeEvent,
    EventSink,
    JobSpec,
    ObjectInfo,
    ObjectStream,
    PutLimits,
    Reconciler,
    SourceInterrupted,
    SourceResponse,
    StorageAccess,
    StoredObject,
    TemporaryCredentials,
)


@dataclass(frozen=True)
class _Object:
    data: bytes
    info: ObjectInfo


class MemoryStorage:
    """The Storage port in a dict: locations of objects, written whole or not at all."""

    name = "memory"

    def __init__(self, clock: Clock = lambda: datetime.now(UTC)) -> None:
        self.clock = clock
        self.locations: dict[str, dict[str, _Object]] = {}
        self._writes = 0  # makes every write's ETag new, as a real store's would be

    async def verify(self) -> None:
        return None

    async def ping(self) -> None:
        return None

    def location_for(self, name: str) -> str:
        return name

    async def create_location(self, location: str) -> None:
        self.locations.setdefault(location, {})

    async def delete_location(self, location: str) -> None:
        self.locations.pop(location, None)

    def _objects(self, location: str) -> dict[str, _Object]:
        try:
            return self.locations[location]
        except KeyError:
            raise NotFound("location", location) from None

    async def put(
        self, location: str, key: str, chunks: AsyncIterator[bytes], limits: PutLimits
    ) -> StoredObject:
        objects = self._objects(location)
        counter = DigestingCounter(limits)
        body = bytearray()
        async for chunk in chunks:
            counter.update(chunk)  # raises PayloadTooLarge past the limit: nothing is kept
            body += chunk
        sha256 = counter.verify()  # raises ChecksumMismatch: nothing is kept
        self._writes += 1
        etag = '"' + hashlib.md5(bytes(body) + str(self._writes).encode()).hexdigest() + '"'  # noqa: S324
        info = ObjectInfo(key, len(body), etag, self.clock())
        replaced = objects.get(key)
        objects[key] = _Object(bytes(body), info)
        return StoredObject(info, sha256, replaced.info.size if replaced else None)

    async def open(self, location: str, key: str, byte_range: ByteRange | None) -> ObjectStream:
        found = self.locations.get(location, {}).get(key)
        if found is None:
            raise NotFound("object", key)
        data = found.data if byte_range is None else found.data[byte_range.start : byte_range.end + 1]

        async def chunks() -> AsyncIterator[bytes]:
            for start in range(0, len(data), 64 * 1024):
                yield data[start : start + 64 * 1024]

        return ObjectStream(found.info, byte_range, chunks())

    async def head(self, location: str, key: str) -> ObjectInfo | None:
        found = self.locations.get(location, {}).get(key)
        return found.info if found else None

    async def list(self, location: str, prefix: str, page: PageRequest) -> Page[ObjectInfo]:
        objects = self._objects(location)
        after = page.after[0] if page.after else ""
        # Key order as S3 gives it: by the UTF-8 bytes of the key.
        keys = sorted((k for k in objects if k.startswith(prefix) and k > after), key=str.encode)
        rows = [objects[k].info for k in keys[: page.size + 1]]
        return page_from_rows(rows, page.size, lambda o: (o.key,))

    async def delete(self, location: str, key: str) -> ObjectInfo | None:
        found = self.locations.get(location, {}).pop(key, None)
        return found.info if found else None

    async def usage(self, location: str) -> Usage:
        objects = self._objects(location)
        return Usage(sum(o.info.size for o in objects.values()), len(objects))

    async def presign(self, location: str, key: str, method: str, expires_seconds: int) -> str | None:
        return None

    async def temporary_credentials(self, location: str, duration_seconds: int) -> TemporaryCredentials:
        raise NotSupported("memory storage has no credentials of its own; use a workspace token")

    async def job_access(self, location: str, lifetime_seconds: int) -> StorageAccess | None:
        return None  # like the filesystem: jobs use the objects API with a workspace token

    async def consumer_credentials(self, location: str, duration_seconds: int) -> TemporaryCredentials | None:
        return None

    def consumer_address(self, location: str) -> dict[str, Any] | None:
        return None

    def local_path(self, location: str, key: str) -> Path | None:
        return None

    async def close(self) -> None:
        return None


class DrivenCompute:
    """A compute backend whose events the test sends by hand."""

    name = "driven"
    step_errors_ignorable = True

    def __init__(self) -> None:
        self.submitted: list[JobSpec] = []
        self.canceled: list[str] = []
        self.running: set[str] = set()
        self.released: list[str] = []
        self.withdrawn: list[str] = []
        self.sink: EventSink | None = None

    async def start(self, sink: EventSink, reconcile: Reconciler) -> None:
        self.sink = sink

    async def submit(self, job: JobSpec) -> None:
        self.submitted.append(job)
        self.running.add(job.execution_id)

    async def cancel(self, execution_id: str) -> None:
        self.canceled.append(execution_id)

    async def logs(self, execution_id: str, tail: int | None, follow: bool) -> AsyncIterator[bytes]:
        yield b"line one\nline two\n"

    async def known(self) -> set[str]:
        return set(self.running)

    async def release(self, execution_id: str) -> None:
        self.released.append(execution_id)
        self.running.discard(execution_id)

    async def withdraw(self, execution_id: str, attempt: int) -> None:
        self.withdrawn.append(execution_id)
        self.running.discard(execution_id)

    async def stop(self) -> None:
        return None

    async def emit(self, execution_id: str, state: State, **details: object) -> None:
        assert self.sink is not None
        await self.sink(ComputeEvent(execution_id, state, **details))  # type: ignore[arg-type]


@dataclass
class Answer:
    """What a ScriptedSource does for one fetch: answer `status`; on 200 serve the data from the
    offset asked for (when `ranges`), breaking off after `break_after` bytes of this answer."""

    status: int = 200
    break_after: int | None = None
    ranges: bool = True


@dataclass
class ScriptedSource:
    """The RemoteSource port serving `data`, each fetch answered by the next scripted Answer
    (then plain 200s); every fetch is recorded as (offset, version)."""

    data: bytes
    script: list[Answer] = field(default_factory=list)
    version: str = '"v1"'
    fetches: list[tuple[int, str | None]] = field(default_factory=list)

    async def check(self, url: str, field: str = "body.source_url") -> None:
        return None

    @asynccontextmanager
    async def fetch(
        self, url: str, headers: dict[str, str], offset: int = 0, version: str | None = None
    ) -> AsyncIterator[SourceResponse]:
        self.fetches.append((offset, version))
        answer = self.script.pop(0) if self.script else Answer()
        start = offset if answer.ranges and (version is None or version == self.version) else 0
        body = self.data[start:] if answer.status == 200 else b""
        cut = answer.break_after

        async def chunks() -> AsyncIterator[bytes]:
            served = body if cut is None else body[:cut]
            for i in range(0, len(served), 1000):
                yield served[i : i + 1000]
            if cut is not None:
                raise SourceInterrupted("connection reset by peer")

        status = 206 if start and answer.status == 200 else answer.status
        yield SourceResponse(status, start, len(body), answer.ranges, self.version, chunks())
