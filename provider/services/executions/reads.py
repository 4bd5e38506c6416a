"""Reading executions: one (with a long-poll wait for its next version), a list, the worker's
log and the links to the outputs. Reads are served from the shared cache when it is fresh."""

from __future__ import annotations

import asyncio
import builtins
from collections.abc import AsyncIterator
from dataclasses import replace

from provider.domain.errors import NotFound
from provider.domain.executions import Execution, OutputFile
from provider.domain.pagination import Page, PageRequest
from provider.domain.tenants import CredentialKind, Principal
from provider.services.executions.shared import Dependencies, Shared, log
from provider.services.ports import ExecutionFilter

POLLER = ("version poller",)  # its key among the background tasks, apart from any execution id


class Reads:
    def __init__(self, deps: Dependencies, shared: Shared) -> None:
        self.deps = deps
        self.shared = shared
        self._waited: dict[str, int] = {}  # execution id -> long-poll waiters in this process

    async def load(self, execution_id: str) -> Execution:
        """The execution, whoever asks; raises NotFound."""
        execution = await self.fetch(execution_id)
        if execution is None:
            raise NotFound("execution", execution_id)
        return execution

    async def fetch(self, execution_id: str) -> Execution | None:
        """The execution, whoever asks, from the cache while it is fresh; None if there is none.

        A missing or expired entry is read once however many ask at that moment (the others
        wait for that read); an entry in the second half of its life is read again in the
        background, so that a hot one never expires under its pollers.
        """
        cache = self.shared.cache
        entry = cache.lookup(execution_id)
        if entry is not None:
            age, execution = entry
            if age <= cache.seconds:
                if age > cache.seconds / 2:
                    self.shared.loads.start(execution_id, lambda: self._read(execution_id))
                return execution
        loaded = await self.shared.loads.do(execution_id, lambda: self._read(execution_id))
        newer = cache.peek(execution_id)  # committed here while the shared read was under way
        return newer if newer is not None and (loaded is None or newer.version > loaded.version) else loaded

    async def _read(self, execution_id: str) -> Execution | None:
        async with self.deps.store.read() as uow:
            execution = await uow.executions.get(execution_id)
        if execution is not None:
            self.shared.cache.put(execution)
        return execution

    def _visible(self, principal: Principal, execution: Execution | None, execution_id: str) -> Execution:
        if (
            execution is None
            or not principal.may_see_tenant(execution.tenant_id)
            or (
                principal.kind is CredentialKind.WORKSPACE_TOKEN
                and principal.workspace_id != execution.workspace_id
            )
        ):
            raise NotFound("execution", execution_id)
        return execution

    async def get(self, principal: Principal, execution_id: str) -> Execution:
        return self._visible(principal, await self.fetch(execution_id), execution_id)

    async def wait(
        self, principal: Principal, execution_id: str, version: int, seconds: float
    ) -> Execution | None:
        """The execution once its version passes `version`, or None after `seconds`.

        Changes made in this process wake the waiter at once; changes made by another replica
        are seen by the version poller, one query a second for all waiters of this process.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + min(seconds, self.deps.policy.max_wait_seconds)
        while True:
            execution = await self.get(principal, execution_id)
            remaining = deadline - loop.time()
            if execution.version > version:
                return execution
            if remaining <= 0:
                return None
            self._waited[execution_id] = self._waited.get(execution_id, 0) + 1
            if not self.shared.tasks.running(POLLER):
                self.shared.tasks.spawn(POLLER, self._poll_versions(), "execution version poller")
            try:
                await self.shared.notifier.wait(execution_id, remaining)
            finally:
                left = self._waited.pop(execution_id) - 1
                if left:
                    self._waited[execution_id] = left

    async def _poll_versions(self) -> None:
        """While anyone waits: every `cache_seconds`, one query for the versions of all waited-on
        executions; those that moved on (another replica changed them) are re-read and wake."""
        cache, notifier = self.shared.cache, self.shared.notifier
        while self._waited:
            await asyncio.sleep(max(self.deps.policy.cache_seconds, 0.1))
            ids = list(self._waited)
            try:
                for start in range(0, len(ids), 500):
                    chunk = ids[start : start + 500]
                    async with self.deps.store.read() as uow:
                        versions = await uow.executions.versions(chunk)
                    for execution_id, stored in versions.items():
                        cached = cache.peek(execution_id)
                        if cached is not None and cached.version >= stored:
                            continue
                        async with self.deps.store.read() as uow:
                            execution = await uow.executions.get(execution_id)
                        if execution is not None:
                            cache.put(execution)
                            notifier.changed(execution_id)
            except Exception:
                log.warning("could not poll execution versions; trying again", exc_info=True)

    async def list(self, principal: Principal, where: ExecutionFilter, page: PageRequest) -> Page[Execution]:
        if not principal.is_admin:
            where = replace(where, tenant_id=principal.tenant_id)
        if principal.kind is CredentialKind.WORKSPACE_TOKEN:
            if where.workspace_id not in (None, principal.workspace_id):
                return Page([], None)
            where = replace(where, workspace_id=principal.workspace_id)
        async with self.deps.store.read() as uow:
            return await uow.executions.list(where, page)

    async def logs(
        self,
        principal: Principal,
        execution_id: str,
        tail: int | None,
        follow: bool,
        attempt: int | None = None,
    ) -> AsyncIterator[bytes]:
        """The worker's log: of the attempt under way (live from the backend) or, once it ended,
        as kept in the workspace; `attempt` names an earlier attempt of a retried execution."""
        execution = await self.get(principal, execution_id)
        kept = execution.logs_key if execution.state.final else None
        if attempt is not None and attempt != execution.attempt:
            earlier = {a.number: a for a in execution.attempts}
            if attempt not in earlier:
                raise NotFound("attempt", f"{execution_id} {attempt}")
            kept = earlier[attempt].logs_key
            if kept is None:
                return
        if kept:
            workspace = await self.deps.workspaces.get(principal, execution.workspace_id)
            if await self.deps.storage.head(workspace.location, kept) is not None:
                stream = await self.deps.storage.open(workspace.location, kept, None)
                data = b"".join([chunk async for chunk in stream.chunks])
                if tail is not None:
                    data = b"".join(data.splitlines(keepends=True)[-tail:]) if tail else b""
                yield data
                return
            if attempt is not None and attempt != execution.attempt:
                return  # that attempt wrote nothing
        async for chunk in self.deps.compute.logs(execution_id, tail, follow and not execution.state.final):
            yield chunk

    async def outputs(
        self, principal: Principal, execution_id: str
    ) -> builtins.list[tuple[OutputFile, str | None]]:
        execution = await self.get(principal, execution_id)
        workspace = await self.deps.workspaces.get(principal, execution.workspace_id)
        links = []
        for item in execution.outputs:
            url = await self.deps.storage.presign(
                workspace.location, item.key, "GET", self.deps.workspaces.policy.presign_seconds
            )
            links.append((item, url))
        return links
