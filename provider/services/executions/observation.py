"""What compute reports, turned into transitions: each goes through `Observation.apply`, which
decides by the domain's rules (provider/domain/executions.py), persists, and only then announces
(long-poll waiters, listeners, the event outbox). Failed attempts may run again (retries); at the
end the worker's log is kept and the job released. Reconciliation makes the store and the
backend agree after a restart or a change of leader."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import timedelta

from provider.aio import Backoff, retry
from provider.domain.errors import NotFound, Unavailable
from provider.domain.executions import (
    Execution,
    OutputFile,
    Reason,
    State,
    behind,
    logs_key,
    observed_target,
    output_files,
    reach,
    should_retry,
)
from provider.domain.pagination import PageRequest
from provider.domain.workspaces import WorkspaceState
from provider.services.executions.reads import Reads
from provider.services.executions.shared import Dependencies, Shared, log
from provider.services.executions.submission import Submission
from provider.services.ports import ComputeEvent, Reported
from provider.sidecar.contract import Manifest, manifest_key, outputs_prefix

HELD = "held: its workspace's data flow is suspended; it is submitted again when the flow resumes"
# A busy SQLite writer: tried again soon, for about 10 s in all, since a transition must not be lost.
STORE_BUSY = Backoff(0.05, 2.0, "upper")


@dataclass(frozen=True)
class RetryLimit:
    """What the operator and the asset allow for one execution's failures."""

    max_attempts: int
    executor_errors: bool


class Observation:
    def __init__(self, deps: Dependencies, shared: Shared, reads: Reads, submission: Submission) -> None:
        self.deps = deps
        self.shared = shared
        self.reads = reads
        self.submission = submission

    async def on_event(self, event: ComputeEvent) -> Reported:
        """A backend observed something: persist the transition, announce it, tidy up at the end.

        A busy database is retried with backoff: an observed transition must not be lost. An
        observation behind the execution's state (a replaced pod seen as QUEUED while the
        execution is RUNNING, say) changes nothing and is answered STALE.
        """
        if event.manifest_in_storage and event.state is State.COMPLETE and not event.outputs:
            event = replace(event, outputs=await self._manifest_outputs(event.execution_id))
        limit = (
            await self._retry_limit(event)
            if event.state in (State.SYSTEM_ERROR, State.EXECUTOR_ERROR)
            else None
        )

        def busy(error: Exception, failures: int, delay: float) -> None:
            log.warning("store busy; retrying a transition", extra={"execution_id": event.execution_id})

        updated = await retry(
            lambda: self.apply(event, limit),
            backoff=STORE_BUSY,
            retry_on=lambda error: isinstance(error, Unavailable),
            attempts=10,
            on_retry=busy,
        )
        if updated is not None and behind(updated.state, event.state):
            log.info(
                "an observation behind the execution is ignored: %s seen while it is %s",
                event.state.value,
                updated.state.value,
                extra={"execution_id": event.execution_id},
            )
            return Reported.STALE
        if updated is not None and updated.state.final:
            await self.finish(updated)
        elif updated is not None and updated.just_retried:
            await self._end_attempt(updated)
        return Reported.RECORDED

    async def _retry_limit(self, event: ComputeEvent) -> RetryLimit | None:
        """The retry limit for a failure event; None when retries are off or the asset is gone."""
        execution = await self.reads.fetch(event.execution_id)
        if execution is None or self.deps.policy.max_attempts <= 1:
            return None
        try:
            asset = await self.deps.assets.get(execution.asset_id, execution.asset_version)
        except NotFound:
            return None
        if asset.retry is None:
            return RetryLimit(self.deps.policy.max_attempts, False)
        return RetryLimit(
            min(self.deps.policy.max_attempts, asset.retry.max_attempts), asset.retry.on_executor_error
        )

    async def apply(self, event: ComputeEvent, limit: RetryLimit | None = None) -> Execution | None:
        """Persist and announce what `event` changes; the execution as it is now, or None when
        nothing changed (the execution as it was when the event is behind it)."""
        async with self.deps.store.transaction() as uow:
            current = await uow.executions.get(event.execution_id, for_update=True)
            now = self.deps.clock()  # the change happens once this transaction holds the row
            if current is None or current.state.final:
                return None  # unknown, or a late event after the end: the first final state stands
            if event.attempt is not None and event.attempt != current.attempt:
                if current.held and event.attempt < current.attempt and not event.state.final:
                    # The job of the held attempt began after all (a submission that was still
                    # being retried elsewhere when the hold came): it is stopped too.
                    self.shared.tasks.spawn(
                        ("withdraw", current.id),
                        self._withdraw(current.id, current.attempt),
                        f"withdraw {current.id}",
                    )
                return None  # a late report of an attempt that was already run again
            target = observed_target(current.state, event.state, event.reason)
            if target is None:
                return None  # progress reports while a cancel is under way
            if behind(current.state, target):
                return current  # an older view of the job: nothing changes (see on_event)
            if (
                limit is not None
                and current.state is not State.CANCELING
                and should_retry(
                    target, event.reason, current.tries, limit.max_attempts, limit.executor_errors
                )
            ):
                policy = self.deps.policy
                backoff = Backoff(policy.retry_backoff_seconds, policy.retry_max_backoff_seconds, "upper")
                wait = backoff.delay(current.attempt)
                updated: Execution | None = current.retry(
                    now, now + timedelta(seconds=wait), target, event.reason, event.message, event.exit_code
                )
            else:
                updated = reach(
                    current,
                    target,
                    now,
                    event.reason,
                    event.message,
                    event.exit_code,
                    event.outputs,
                    event.steps,
                )
            if updated is None:
                return None  # nothing new
            await uow.executions.update(updated)
            queued = (
                self.deps.events is not None
                and (updated.state is not current.state or updated.attempt != current.attempt)
                and await self.deps.events.execution_changed(uow, updated)
            )
        await self.announce(updated, queued)
        return updated

    async def announce(self, execution: Execution, queued: bool = False) -> None:
        """A committed change reaches this process: the outbox (`queued`: an event was written
        with it), the cache, long-poll waiters and listeners."""
        if self.deps.events is not None:
            self.deps.events.committed(queued)
        self.shared.cache.put(execution)
        self.shared.notifier.changed(execution.id)
        for listener in self.shared.listeners:
            result = listener(execution)
            if result is not None:
                await result

    async def _manifest_outputs(self, execution_id: str) -> tuple[OutputFile, ...]:
        """The outputs the sidecar listed in its manifest in the workspace (read before the
        transition's transaction, which should hold no lock while storage answers)."""
        execution = await self.reads.fetch(execution_id)
        if execution is None:
            return ()
        async with self.deps.store.read() as uow:
            workspace = await uow.workspaces.get(execution.workspace_id)
        if workspace is None:
            return ()
        key = manifest_key(execution.id)
        try:
            stream = await self.deps.storage.open(workspace.location, key, None)
        except NotFound:
            log.warning("execution completed without a manifest", extra={"execution_id": execution.id})
            return ()
        manifest = Manifest.from_json(json.loads(b"".join([chunk async for chunk in stream.chunks])))
        return output_files(manifest.listed())

    async def _keep_logs(self, execution: Execution, attempt: int) -> str | None:
        """Copy the job's log into the workspace under the attempt's key; the key, or None."""
        chunks = [chunk async for chunk in self.deps.compute.logs(execution.id, None, False)]
        if not chunks:
            return None
        key = logs_key(execution.id, attempt)

        async def body() -> AsyncIterator[bytes]:
            for chunk in chunks:
                yield chunk

        await self.deps.workspaces.put_import(execution.workspace_id, key, body(), None, None)
        return key

    async def _release(self, execution_id: str) -> None:
        """An attempt ended: revoke its job's token, remove what is left of its job."""
        token_id = self.shared.job_tokens.pop(execution_id, None)
        if token_id is not None:
            await self.deps.workspaces.revoke_token_id(token_id)
        await self.deps.compute.release(execution_id)

    async def _end_attempt(self, execution: Execution) -> None:
        """A failed attempt that runs again: keep its logs, end its job, drop what it half-wrote
        (so that the next attempt's outputs are its own), and submit the next one when due."""
        failed = execution.attempts[-1]
        try:
            await self._keep_logs(execution, failed.number)
        except NotFound:
            pass  # the workspace is being deleted; the retry will find that out
        except Exception:
            log.exception("could not keep the logs of an attempt", extra={"execution_id": execution.id})
        await self._release(execution.id)
        await self._drop_outputs(execution)
        log.info(
            "execution retried",
            extra={
                "execution_id": execution.id,
                "attempt": execution.attempt,
                "reason": failed.reason,
                "retry_at": execution.retry_at.isoformat() if execution.retry_at else None,
            },
        )
        self._schedule_retry(execution)

    async def _drop_outputs(self, execution: Execution) -> None:
        async with self.deps.store.read() as uow:
            workspace = await uow.workspaces.get(execution.workspace_id)
        if workspace is None:
            return
        prefix = outputs_prefix(execution.id)
        page = PageRequest(500)
        while True:
            found = await self.deps.storage.list(workspace.location, prefix, page)
            for item in found.items:
                await self.deps.storage.delete(workspace.location, item.key)
            if found.next_after is None:
                return

    def _schedule_retry(self, execution: Execution) -> None:
        assert execution.retry_at is not None
        wait = max(0.0, (execution.retry_at - self.deps.clock()).total_seconds())
        work = self._resubmit(execution.id, execution.attempt, wait)
        self.shared.tasks.spawn(execution.id, work, f"retry {execution.id}", replace=True)

    async def _resubmit(self, execution_id: str, attempt: int, wait: float) -> None:
        await asyncio.sleep(wait)
        async with self.deps.store.read() as uow:
            execution = await uow.executions.get(execution_id)
        if execution is None or execution.state is not State.QUEUED or execution.attempt != attempt:
            return  # canceled meanwhile, or another replica went on
        await self._submit_again(execution)

    async def _submit_again(self, execution: Execution) -> None:
        """Submit a QUEUED execution once more; one whose asset or workspace is gone ends Lost."""
        try:
            asset = await self.deps.assets.get(execution.asset_id, execution.asset_version)
            async with self.deps.store.read() as uow:
                workspace = await uow.workspaces.get(execution.workspace_id)
            if workspace is None or not workspace.open:
                raise NotFound("workspace", execution.workspace_id)
        except NotFound as exc:
            await self.on_event(
                ComputeEvent(execution.id, State.SYSTEM_ERROR, reason=Reason.LOST, message=exc.detail)
            )
            return
        if workspace.state is WorkspaceState.SUSPENDED:  # a retry that came due during a suspension
            await self.hold(execution.id)
            return
        await self.submission.submit(execution, asset, workspace)

    async def hold(self, execution_id: str) -> Execution | None:
        """Keep a queued execution from compute while its workspace's data flow is suspended: the
        hold is stored first, then its job (which had not begun) is stopped; None when it is not
        queued (any more) or held already."""
        async with self.deps.store.transaction() as uow:
            current = await uow.executions.get(execution_id, for_update=True)
            if (
                current is None
                or current.state is not State.QUEUED
                or current.held
                or current.awaiting_inputs
            ):
                return None
            updated = current.hold(self.deps.clock(), HELD)
            await uow.executions.update(updated)
            queued = self.deps.events is not None and await self.deps.events.execution_changed(uow, updated)
        self.shared.tasks.cancel(execution_id)  # a retry waiting here: the hold replaced its attempt
        await self.announce(updated, queued)
        await self._withdraw(execution_id, updated.attempt)
        return updated

    async def inputs_arrived(self, execution_id: str) -> Execution | None:
        """The inputs an execution waited for are in its workspace: it goes to compute."""
        async with self.deps.store.transaction() as uow:
            current = await uow.executions.get(execution_id, for_update=True)
            if current is None or not current.awaiting_inputs:
                return None
            updated = current.annotate(self.deps.clock(), reason=None, message=None)
            await uow.executions.update(updated)
        await self.announce(updated)
        await self._submit_again(updated)
        return updated

    async def unhold(self, execution_id: str) -> Execution | None:
        """The data flow resumed: a held execution is queued for compute again (its next attempt)."""
        async with self.deps.store.transaction() as uow:
            current = await uow.executions.get(execution_id, for_update=True)
            if current is None or not current.held:
                return None
            updated = current.unhold(self.deps.clock())
            await uow.executions.update(updated)
        await self.announce(updated)
        await self._submit_again(updated)
        return updated

    async def _withdraw(self, execution_id: str, attempt: int) -> None:
        """Stop the job of any attempt before `attempt` (the held one's), never a later one's: a
        resume on another replica may have submitted it meanwhile."""
        token_id = self.shared.job_tokens.pop(execution_id, None)
        if token_id is not None:
            await self.deps.workspaces.revoke_token_id(token_id)
        await self.deps.compute.withdraw(execution_id, attempt)

    async def stop(self) -> None:
        """Retries waiting in this process end here; reconciliation schedules them again at start."""
        await self.shared.tasks.close()

    async def finish(self, execution: Execution) -> None:
        """Keep the worker's logs in the workspace, revoke the job's token, release the job."""
        try:
            key = await self._keep_logs(execution, execution.attempt)
            if key is not None:
                async with self.deps.store.transaction() as uow:
                    current = await uow.executions.get(execution.id, for_update=True)
                    annotated = (
                        current.annotate(self.deps.clock(), logs_key=key) if current is not None else None
                    )
                    if annotated is not None:
                        await uow.executions.update(annotated)
                if annotated is not None:
                    await self.announce(annotated)
        except NotFound:  # the workspace is being deleted: nowhere to keep them, nothing to keep
            log.info("logs not kept: the workspace is gone", extra={"execution_id": execution.id})
        except Exception:
            log.exception("could not keep the logs of an execution", extra={"execution_id": execution.id})
        await self._release(execution.id)

    async def reconcile(self, queued_grace_seconds: float = 0.0) -> None:
        """Make the store and the compute backend agree; nothing stays stuck.

        QUEUED executions without a job are submitted again (once older than the grace, so that a
        submission under way on another replica is not doubled); other active executions whose
        job the backend does not know became SYSTEM_ERROR, reason Lost (CANCELING ones CANCELED);
        jobs of executions that are no longer active are released.
        """
        compute = self.deps.compute
        async with self.deps.store.read() as uow:
            active = await uow.executions.active()
        known = await compute.known()  # raises if the backend cannot tell: nothing is judged
        now = self.deps.clock()
        for execution in active:
            if execution.awaiting_inputs:
                continue  # submitted once its inputs arrive (TesService.resume after a restart)
            if execution.held:
                if execution.id in known:  # the hold was stored, and its job not stopped (a crash)
                    await self._withdraw(execution.id, execution.attempt)
                async with self.deps.store.read() as uow:
                    workspace = await uow.workspaces.get(execution.workspace_id)
                if workspace is not None and workspace.active:  # resumed, and the release was lost
                    await self.unhold(execution.id)
                continue
            if execution.id in known:
                continue
            if execution.state is State.QUEUED:
                if execution.retry_at is not None and execution.retry_at > now:
                    if not self.shared.tasks.running(execution.id):
                        self._schedule_retry(execution)  # a retry that waited when we restarted
                    continue
                if (now - execution.updated_at).total_seconds() >= queued_grace_seconds:
                    await self._submit_again(execution)
                continue
            target = State.CANCELED if execution.state is State.CANCELING else State.SYSTEM_ERROR
            await self.on_event(
                ComputeEvent(
                    execution.id,
                    target,
                    reason=Reason.LOST,
                    message=f"the {compute.name} backend lost the job while {execution.state.value}",
                )
            )
        for orphan in known - {e.id for e in active}:
            log.info("releasing a job without an active execution", extra={"execution_id": orphan})
            await compute.release(orphan)
