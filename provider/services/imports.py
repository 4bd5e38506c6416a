"""Imports: pull data from a remote HTTP endpoint (e.g. another provider's EDC data plane).

Each import streams straight into the workspace's storage. Transient failures (5xx, 429,
resets, time-outs) are retried with exponential backoff and jitter; when the source supports
fetches from an offset an interrupted transfer resumes where it stopped instead of starting
over. State and progress are persisted, and queued or running imports resume after a restart.
The policy (what to retry, when to resume, the checksum) is here; HTTP is behind RemoteSource.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace

from provider.aio import Backoff, Tasks
from provider.domain.errors import Conflict, DomainError, InvalidInput, NotFound
from provider.domain.ids import new_id
from provider.domain.imports import Import, ImportState, header_problems
from provider.domain.pagination import Page, PageRequest
from provider.domain.tenants import Principal
from provider.domain.workspaces import check_key
from provider.services.notifications import EventLog
from provider.services.ports import Clock, RemoteSource, SourceError, SourceInterrupted, SourceResponse, Store
from provider.services.workspaces import WorkspaceService

log = logging.getLogger(__name__)
PROGRESS_INTERVAL = 0.5
RETRYABLE_STATUS = {408, 425, 429, 500, 502, 503, 504}


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int
    backoff_seconds: float
    max_backoff_seconds: float = 60.0

    def delay(self, attempt: int) -> float:
        """Doubling, within the upper half: a source that failed is not asked again at once."""
        return Backoff(self.backoff_seconds, self.max_backoff_seconds, "upper").delay(attempt)


class Transient(Exception):
    """Worth another attempt."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class Permanent(Exception):
    """Not worth another attempt (e.g. 404 from the source)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class ImportService:
    def __init__(
        self,
        store: Store,
        workspaces: WorkspaceService,
        source: RemoteSource,
        clock: Clock,
        retry: RetryPolicy,
        max_concurrent: int,
        events: EventLog | None = None,
    ) -> None:
        self.store = store
        self.events = events
        self.workspaces = workspaces
        self.source = source
        self.clock = clock
        self.retry = retry
        self._slots = asyncio.Semaphore(max_concurrent)
        self._tasks = Tasks(log)  # import id -> its run in this process
        self.listeners: list[Callable[[Import], object]] = []

    # --- API ----------------------------------------------------------------------------------

    async def create(
        self,
        principal: Principal | None,
        workspace_id: str,
        source_url: str,
        headers: dict[str, str],
        target_key: str,
        expected_size: int | None = None,
        expected_sha256: str | None = None,
    ) -> Import:
        """Queue an import into an active workspace and start it.

        `principal` is the caller, who must see the workspace; None for an import the service
        starts on its own (an EDC transfer the workspace registered, authorized then).
        """
        check_key(target_key, "body.target_key")
        problems = header_problems(headers)
        if problems:
            raise InvalidInput("the headers cannot be sent as HTTP header fields", problems)
        if principal is None:
            workspace = await self.workspaces.get_system(workspace_id)
        else:
            workspace = await self.workspaces.get(principal, workspace_id)
        if not workspace.active:
            raise Conflict(f"workspace {workspace_id} is being deleted")
        await self.source.check(source_url)
        now = self.clock()
        item = Import(
            id=new_id("imp"),
            workspace_id=workspace.id,
            tenant_id=workspace.tenant_id,
            source_url=source_url,
            headers=headers,
            target_key=target_key,
            expected_size=expected_size,
            expected_sha256=expected_sha256.lower() if expected_sha256 else None,
            state=ImportState.QUEUED,
            created_at=now,
            updated_at=now,
            bytes_total=expected_size,
        )
        async with self.store.transaction() as uow:
            await uow.imports.add(item)
            if self.events is not None:
                await self.events.import_changed(uow, item)
        self._committed()
        self._start(item)
        return item

    async def get(self, principal: Principal, workspace_id: str, import_id: str) -> Import:
        workspace = await self.workspaces.get(principal, workspace_id)
        async with self.store.read() as uow:
            item = await uow.imports.get(import_id)
        if item is None or item.workspace_id != workspace.id:
            raise NotFound("import", import_id)
        return item

    async def list(self, principal: Principal, workspace_id: str, page: PageRequest) -> Page[Import]:
        workspace = await self.workspaces.get(principal, workspace_id)
        async with self.store.read() as uow:
            return await uow.imports.list_for_workspace(workspace.id, page)

    async def cancel(self, principal: Principal, workspace_id: str, import_id: str) -> Import:
        item = await self.get(principal, workspace_id, import_id)
        if item.state.final:
            raise Conflict(f"import {import_id} is already {item.state.value}")
        updated = await self._transition(item.id, ImportState.CANCELED)
        self._tasks.cancel(item.id)
        return updated

    async def cancel_system(self, import_id: str) -> None:
        """Cancel an import on the service's own behalf (its data flow was suspended or ended)."""
        with contextlib.suppress(Conflict):  # it ended meanwhile
            await self._transition(import_id, ImportState.CANCELED)
        self._tasks.cancel(import_id)

    async def cancel_workspace(self, workspace_id: str) -> None:
        """Stop every unfinished import of a workspace (it is being deleted)."""
        async with self.store.read() as uow:
            pending = await uow.imports.in_states({ImportState.QUEUED, ImportState.RUNNING})
        for item in pending:
            if item.workspace_id == workspace_id:
                with contextlib.suppress(Conflict):
                    await self._transition(item.id, ImportState.CANCELED, error="workspace deleted")
                await self._tasks.stop(item.id)

    # --- running ------------------------------------------------------------------------------

    async def resume(self) -> int:
        """Start every queued or running import (after a restart they were interrupted)."""
        async with self.store.read() as uow:
            pending = await uow.imports.in_states({ImportState.QUEUED, ImportState.RUNNING})
        for item in pending:
            self._start(item)
        return len(pending)

    async def stop(self) -> None:
        await self._tasks.close()

    def _start(self, item: Import) -> None:
        if not self._tasks.running(item.id):
            self._tasks.spawn(item.id, self._run(item.id), f"import {item.id}")

    async def _transition(self, import_id: str, state: ImportState, **changes: object) -> Import:
        async with self.store.transaction() as uow:
            current = await uow.imports.get(import_id)
            if current is None:
                raise NotFound("import", import_id)
            updated = current.to(state, self.clock(), **changes)
            await uow.imports.update(updated)
            if self.events is not None and updated.state is not current.state:
                await self.events.import_changed(uow, updated)
        self._committed()
        for listener in self.listeners:
            listener(updated)
        return updated

    def _committed(self) -> None:
        if self.events is not None:
            self.events.committed()

    async def _save_progress(self, import_id: str, bytes_done: int, bytes_total: int | None) -> bool:
        """Persist progress; False if the import was canceled meanwhile (by any replica)."""
        async with self.store.transaction() as uow:
            current = await uow.imports.get(import_id)
            if current is None or current.state is not ImportState.RUNNING:
                return False
            await uow.imports.update(
                replace(current, bytes_done=bytes_done, bytes_total=bytes_total, updated_at=self.clock())
            )
        return True

    async def _run(self, import_id: str) -> None:
        async with self._slots:
            try:
                await self._attempts(import_id)
            except asyncio.CancelledError:
                log.info("import stopped", extra={"import_id": import_id})
                raise
            except Exception as exc:  # a fault of ours: record it rather than leave the import hanging
                log.exception("import failed unexpectedly", extra={"import_id": import_id})
                with contextlib.suppress(Conflict, NotFound):
                    await self._transition(
                        import_id, ImportState.FAILED, error=f"internal error: {type(exc).__name__}"
                    )

    async def _attempts(self, import_id: str) -> None:
        async with self.store.read() as uow:
            item = await uow.imports.get(import_id)
        if item is None or item.state.final:
            return
        while True:
            try:
                item = await self._transition(
                    import_id, ImportState.RUNNING, attempts=item.attempts + 1, bytes_done=0, error=None
                )
            except Conflict:  # canceled meanwhile, possibly by another replica
                return
            try:
                stored = await self._copy(item)
            # TimeoutError and ConnectionError: the storage's own transport failing mid-copy.
            except (Transient, SourceError, TimeoutError, ConnectionError) as exc:
                status = getattr(exc, "status", None)
                if item.attempts >= self.retry.max_attempts:
                    await self._transition(
                        import_id,
                        ImportState.FAILED,
                        upstream_status=status,
                        error=f"gave up after {item.attempts} attempts: {_describe(exc)}",
                    )
                    return
                delay = self.retry.delay(item.attempts)
                log.info(
                    "import attempt failed; retrying",
                    extra={"import_id": import_id, "delay_s": round(delay, 2)},
                )
                item = await self._transition(
                    import_id,
                    ImportState.RUNNING,
                    upstream_status=status,
                    error=f"retrying: {_describe(exc)}",
                )
                await asyncio.sleep(delay)
                continue
            except Permanent as exc:
                await self._transition(
                    import_id, ImportState.FAILED, upstream_status=exc.status, error=str(exc)
                )
                return
            except _Canceled:
                return
            except DomainError as exc:  # quota, checksum, a redirect to a forbidden address, ...
                with contextlib.suppress(Conflict):
                    await self._transition(import_id, ImportState.FAILED, error=exc.detail)
                return
            await self._transition(
                import_id,
                ImportState.SUCCEEDED,
                bytes_done=stored[0],
                bytes_total=stored[0],
                sha256=stored[1],
            )
            log.info("import succeeded", extra={"import_id": import_id, "bytes": stored[0]})
            return

    async def _copy(self, item: Import) -> tuple[int, str]:
        """One attempt: stream the source into the workspace; returns (size, sha256)."""
        progress = _Progress(item.expected_size)

        async def body() -> AsyncIterator[bytes]:
            version: str | None = None
            resumes = 0
            while True:
                try:
                    async with self.source.fetch(
                        item.source_url, item.headers, progress.done, version
                    ) as response:
                        self._check_status(response, progress.done)
                        if progress.done == 0:
                            progress.start(response)
                            version = response.version
                        async for chunk in response.chunks:
                            progress.done += len(chunk)
                            yield chunk
                            if progress.due() and not await self._save_progress(
                                item.id, progress.done, progress.total
                            ):
                                raise _Canceled()
                    if progress.total is not None and progress.done < progress.total:
                        raise SourceInterrupted("the source closed the body early")
                    return
                except SourceInterrupted as exc:
                    # Mid-body failure: fetch the rest from where it stopped, if the source allows it.
                    if not (progress.resumable and progress.done) or resumes >= self.retry.max_attempts:
                        raise Transient(_describe(exc)) from exc
                    resumes += 1
                    log.info(
                        "import interrupted; resuming", extra={"import_id": item.id, "offset": progress.done}
                    )
                    await asyncio.sleep(self.retry.delay(resumes))

        sha256 = bytes.fromhex(item.expected_sha256) if item.expected_sha256 else None
        stored = await self.workspaces.put_import(
            item.workspace_id, item.target_key, body(), item.expected_size, sha256
        )
        return stored.info.size, stored.sha256

    @staticmethod
    def _check_status(response: SourceResponse, offset: int) -> None:
        status = response.status
        if status in (200, 206):
            if response.offset != offset:
                raise Transient("the source ignored the range request; starting over")
            return
        if status in RETRYABLE_STATUS:
            raise Transient(f"the source answered HTTP {status}", status)
        raise Permanent(f"the source answered HTTP {status}", status)


class _Canceled(Exception):
    """The import was canceled while it ran."""


class _Progress:
    def __init__(self, expected: int | None) -> None:
        self.done = 0
        self.total = expected
        self.resumable = False
        self._last = time.monotonic()

    def start(self, response: SourceResponse) -> None:
        """The first answer, from offset 0: its length unless the caller gave one, and whether the
        source can resume."""
        if self.total is None:
            self.total = response.length
        self.resumable = response.resumable

    def due(self) -> bool:
        now = time.monotonic()
        if now - self._last >= PROGRESS_INTERVAL:
            self._last = now
            return True
        return False


def _describe(exc: BaseException) -> str:
    if isinstance(exc, DomainError):
        return exc.detail
    return (str(exc) or type(exc).__name__)[:300]
