"""Executions: run an asset on a workspace's data and report faithfully what happened.

Every state change goes through `ExecutionService._apply`: it is validated by the state
machine, persisted, and only then announced (long-poll waiters, listeners).
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import contextvars
import hashlib
import json
import logging
import random
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import timedelta

from provider.domain.assets import Asset, InputKind, grant_problem
from provider.domain.errors import (
    AssetNotGranted,
    Conflict,
    FieldProblem,
    InvalidInput,
    InvalidKey,
    NotFound,
    NotSupported,
    ProblemCollector,
    Unavailable,
)
from provider.domain.executions import (
    Execution,
    OutputFile,
    Reason,
    State,
    Transition,
    behind,
    logs_key,
    observed_target,
    outputs_from_manifest,
    outputs_prefix,
    reach,
    retry_delay,
    should_retry,
)
from provider.domain.ids import new_id
from provider.domain.notifications import Subscription
from provider.domain.pagination import Page, PageRequest
from provider.domain.tenants import CredentialKind, Principal
from provider.domain.workspaces import Workspace, check_key
from provider.services.assets import AssetService
from provider.services.notifications import EventLog, SubscriptionService
from provider.services.ports import (
    Clock,
    Compute,
    ComputeEvent,
    ExecutionFilter,
    JobSpec,
    Reported,
    Storage,
    StorageAccess,
    Store,
)
from provider.services.workspaces import WorkspaceService

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExecutionRequest:
    asset_id: str
    asset_version: str | None
    workspace_id: str
    inputs: dict[str, str]
    env: dict[str, str]
    labels: dict[str, str]

    def digest(self) -> str:
        canonical = json.dumps(self.__dict__, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class CallbackRequest:
    """An inline subscription for one execution, made with it."""

    url: str
    events: tuple[str, ...] = ("execution.*",)
    secret: str | None = None


@dataclass(frozen=True)
class Started:
    execution: Execution
    created: bool
    subscription: Subscription | None = None
    secret: str | None = None  # a generated callback secret, shown once


@dataclass(frozen=True)
class ExecutionPolicy:
    api_url: str  # where job sidecars reach the objects API (filesystem storage)
    token_margin_seconds: int  # job credentials outlive the run time by this much
    max_wait_seconds: float
    cache_seconds: float = 1.0  # how long a read may be served from memory
    max_attempts: int = 1  # attempts per execution for failures that are not the consumer's
    retry_backoff_seconds: float = 5.0
    retry_max_backoff_seconds: float = 300.0


@dataclass(frozen=True)
class RetryLimit:
    """What the operator and the asset allow for one execution's failures."""

    max_attempts: int
    executor_errors: bool


class ExecutionCache:
    """Recent executions in memory, so that hot polling does not cost a database round trip.

    Every change this process makes is written here after it is committed, so this replica
    never serves an older version than it wrote; changes made by other replicas are seen once
    an entry is older than `seconds`.
    """

    def __init__(self, seconds: float, size: int = 20_000) -> None:
        self.seconds = seconds
        self.size = size
        self._entries: OrderedDict[str, tuple[float, Execution]] = OrderedDict()

    def get(self, execution_id: str) -> Execution | None:
        entry = self._entries.get(execution_id)
        if entry is None or time.monotonic() - entry[0] > self.seconds:
            return None
        return entry[1]

    def peek(self, execution_id: str) -> Execution | None:
        """The entry however old it is."""
        entry = self._entries.get(execution_id)
        return entry[1] if entry is not None else None

    def put(self, execution: Execution) -> None:
        current = self._entries.get(execution.id)
        if current is not None and current[1].version > execution.version:
            return  # never replace a newer version with an older read
        self._entries[execution.id] = (time.monotonic(), execution)
        self._entries.move_to_end(execution.id)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)


class ChangeNotifier:
    """Wakes long-poll waiters of one execution when it changes in this process."""

    def __init__(self) -> None:
        self._events: dict[str, asyncio.Event] = {}

    def changed(self, execution_id: str) -> None:
        event = self._events.pop(execution_id, None)
        if event is not None:
            event.set()

    async def wait(self, execution_id: str, seconds: float) -> None:
        event = self._events.setdefault(execution_id, asyncio.Event())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), seconds)


class ExecutionService:
    def __init__(
        self,
        store: Store,
        compute: Compute,
        storage: Storage,
        workspaces: WorkspaceService,
        assets: AssetService,
        clock: Clock,
        policy: ExecutionPolicy,
        events: EventLog | None = None,
        subscriptions: SubscriptionService | None = None,
    ) -> None:
        self.store = store
        self.events = events
        self.subscriptions = subscriptions
        self.compute = compute
        self.storage = storage
        self.workspaces = workspaces
        self.assets = assets
        self.clock = clock
        self.policy = policy
        self.notifier = ChangeNotifier()
        self.cache = ExecutionCache(policy.cache_seconds)
        self.listeners: list[Callable[[Execution], Awaitable[None] | None]] = []
        self._job_tokens: dict[str, str] = {}
        self._waited: dict[str, int] = {}  # execution id -> long-poll waiters in this process
        self._poller: asyncio.Task[None] | None = None
        self._retries: dict[str, asyncio.Task[None]] = {}  # execution id -> its waiting resubmission

    # --- create -------------------------------------------------------------------------------

    async def create(
        self, principal: Principal, request: ExecutionRequest, idempotency_key: str | None
    ) -> tuple[Execution, bool]:
        """Validate, persist as QUEUED, hand to compute. Returns (execution, created)."""
        started = await self.start(principal, request, idempotency_key)
        return started.execution, started.created

    async def _check_granted(self, asset_id: str, workspace: Workspace) -> None:
        """403 unless the workspace's offering and the tenant's allowance both grant the asset."""
        async with self.store.read() as uow:
            tenant = await uow.tenants.get(workspace.tenant_id)
        problem = grant_problem(asset_id, workspace.allowed_assets, tenant.allowed_assets if tenant else None)
        if problem is not None:
            raise AssetNotGranted(problem)

    async def start(
        self,
        principal: Principal,
        request: ExecutionRequest,
        idempotency_key: str | None,
        callback: CallbackRequest | None = None,
    ) -> Started:
        """`create`, with an optional callback subscription made in the same transaction.

        A replayed request (same Idempotency-Key) makes no second subscription.
        """
        digest = request.digest()
        if idempotency_key is not None:
            replayed = await self._replay(principal.tenant_id, idempotency_key, digest)
            if replayed is not None:
                return Started(replayed, False)
        asset = await self.assets.get(request.asset_id, request.asset_version)
        workspace = await self.workspaces.get(principal, request.workspace_id)
        if not workspace.active:
            raise Conflict(f"workspace {workspace.id} is being deleted")
        await self._check_granted(asset.id, workspace)
        env = await self._validate(asset, workspace, request)
        execution_id = new_id("exe")
        subscription, secret = None, None
        if callback is not None:
            if self.subscriptions is None:
                raise NotSupported("callbacks are not available")
            subscription, secret = await self.subscriptions.new(
                principal,
                callback.url,
                callback.events,
                callback.secret,
                execution_id=execution_id,
                field="body.callback",
            )
        now = self.clock()
        execution = Execution(
            id=execution_id,
            tenant_id=workspace.tenant_id,
            workspace_id=workspace.id,
            asset_id=asset.id,
            asset_version=asset.version,
            inputs=dict(request.inputs),
            env=env,
            labels=dict(request.labels),
            state=State.QUEUED,
            version=1,
            created_at=now,
            updated_at=now,
            history=(Transition(State.QUEUED, now),),
            idempotency_key=idempotency_key,
            request_hash=digest,
        )
        try:
            async with self.store.transaction() as uow:
                await uow.executions.add(execution)
                if subscription is not None:
                    await uow.subscriptions.add(subscription)
                queued = self.events is not None and await self.events.execution_changed(uow, execution)
        except Conflict:  # the same key raced in from another request
            assert idempotency_key is not None
            replayed = await self._replay(principal.tenant_id, idempotency_key, digest)
            if replayed is None:
                raise
            return Started(replayed, False)
        await self._announce(execution, queued)
        await self._submit(execution, asset, workspace)
        return Started(await self._load(execution.id), True, subscription, secret)

    async def _replay(self, tenant_id: str, key: str, digest: str) -> Execution | None:
        async with self.store.read() as uow:
            existing = await uow.executions.by_idempotency_key(tenant_id, key)
        if existing is None:
            return None
        if existing.request_hash != digest:
            raise InvalidInput(
                "this Idempotency-Key was used for a different request",
                [FieldProblem("header.Idempotency-Key", "reused with a different body")],
            )
        return existing

    async def _validate(
        self, asset: Asset, workspace: Workspace, request: ExecutionRequest
    ) -> dict[str, str]:
        """Every problem at once (422), or the environment with the asset's defaults applied."""
        problems = ProblemCollector()
        declared = {i.name: i for i in asset.inputs}
        for name in request.inputs:
            if name not in declared:
                problems.add(f"body.inputs.{name}", f"asset {asset.id} has no input {name!r}")
        for item in asset.inputs:
            key = request.inputs.get(item.name)
            if key is None:
                if item.required:
                    problems.add(f"body.inputs.{item.name}", "required input is missing")
                continue
            field_name = f"body.inputs.{item.name}"
            try:
                check_key(key.rstrip("/") if item.kind is InputKind.DIRECTORY else key, field_name)
            except InvalidKey as exc:
                problems.problems.extend(exc.problems)
                continue
            if item.kind is InputKind.DIRECTORY:
                prefix = key if key.endswith("/") else key + "/"
                found = await self.storage.list(workspace.location, prefix, PageRequest(1))
                if not found.items:
                    problems.add(field_name, f"no objects under {prefix!r} in workspace {workspace.id}")
            elif await self.storage.head(workspace.location, key) is None:
                problems.add(field_name, f"object {key!r} does not exist in workspace {workspace.id}")
        env: dict[str, str] = {}
        for name, value in request.env.items():
            rule = asset.consumer_env.get(name)
            if rule is None:
                allowed = ", ".join(sorted(asset.consumer_env)) or "none"
                problems.add(
                    f"body.env.{name}", f"not a variable this asset lets consumers set (allowed: {allowed})"
                )
            elif not rule.accepts(value):
                expected = f"one of {rule.enum}" if rule.enum else f"a value matching {rule.pattern!r}"
                problems.add(f"body.env.{name}", f"must be {expected}")
            else:
                env[name] = value
        for name, rule in asset.consumer_env.items():
            if name not in request.env and rule.default is not None:
                env[name] = rule.default
        problems.raise_if_any("the execution request does not fit the asset")
        return env

    async def _access(self, workspace: Workspace, execution: Execution, asset: Asset) -> StorageAccess:
        """Scoped credentials for the job's sidecar: this workspace only, for the job's lifetime."""
        lifetime = asset.max_run_seconds + self.policy.token_margin_seconds
        if self.storage.name == "s3":
            creds = await self.storage.temporary_credentials(workspace.location, lifetime)
            return StorageAccess(
                "s3",
                secrets={
                    "AWS_ACCESS_KEY_ID": creds.access_key_id,
                    "AWS_SECRET_ACCESS_KEY": creds.secret_access_key,
                    "AWS_SESSION_TOKEN": creds.session_token,
                },
                settings={
                    "PROVIDER_S3_ENDPOINT": creds.endpoint_url or "",
                    "PROVIDER_S3_BUCKET": creds.bucket,
                    "PROVIDER_S3_REGION": creds.region,
                },
            )
        issued = await self.workspaces.issue_job_token(workspace.id, lifetime)
        self._job_tokens[execution.id] = issued.record.id
        return StorageAccess(
            "api",
            secrets={"PROVIDER_WORKSPACE_TOKEN": issued.token},
            settings={"PROVIDER_API_URL": self.policy.api_url, "PROVIDER_WORKSPACE_ID": workspace.id},
        )

    async def _submit(self, execution: Execution, asset: Asset, workspace: Workspace) -> None:
        try:
            access = await self._access(workspace, execution, asset)
            await self.compute.submit(
                JobSpec(
                    execution.id,
                    execution.tenant_id,
                    asset,
                    execution.inputs,
                    execution.env,
                    access,
                    execution.version,
                    execution.attempt,
                )
            )
        except Exception as exc:
            log.exception("could not submit execution", extra={"execution_id": execution.id})
            await self.on_event(
                ComputeEvent(
                    execution.id,
                    State.SYSTEM_ERROR,
                    reason=Reason.SUBMIT,
                    message=f"{type(exc).__name__}: {exc}",
                )
            )

    # --- read ---------------------------------------------------------------------------------

    async def _load(self, execution_id: str) -> Execution:
        execution = await self._fetch(execution_id)
        if execution is None:
            raise NotFound("execution", execution_id)
        return execution

    async def _fetch(self, execution_id: str) -> Execution | None:
        execution = self.cache.get(execution_id)
        if execution is None:
            async with self.store.read() as uow:
                execution = await uow.executions.get(execution_id)
            if execution is not None:
                self.cache.put(execution)
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
        return self._visible(principal, await self._fetch(execution_id), execution_id)

    async def wait(
        self, principal: Principal, execution_id: str, version: int, seconds: float
    ) -> Execution | None:
        """The execution once its version passes `version`, or None after `seconds`.

        Changes made in this process wake the waiter at once; changes made by another replica
        are seen by the version poller, one query a second for all waiters of this process.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + min(seconds, self.policy.max_wait_seconds)
        while True:
            execution = await self.get(principal, execution_id)
            remaining = deadline - loop.time()
            if execution.version > version:
                return execution
            if remaining <= 0:
                return None
            self._waited[execution_id] = self._waited.get(execution_id, 0) + 1
            if self._poller is None or self._poller.done():
                self._poller = asyncio.create_task(
                    self._poll_versions(), name="execution version poller", context=contextvars.Context()
                )
            try:
                await self.notifier.wait(execution_id, remaining)
            finally:
                left = self._waited.pop(execution_id) - 1
                if left:
                    self._waited[execution_id] = left

    async def _poll_versions(self) -> None:
        """While anyone waits: every `cache_seconds`, one query for the versions of all waited-on
        executions; those that moved on (another replica changed them) are re-read and wake."""
        while self._waited:
            await asyncio.sleep(max(self.policy.cache_seconds, 0.1))
            ids = list(self._waited)
            try:
                for start in range(0, len(ids), 500):
                    chunk = ids[start : start + 500]
                    async with self.store.read() as uow:
                        versions = await uow.executions.versions(chunk)
                    for execution_id, stored in versions.items():
                        cached = self.cache.peek(execution_id)
                        if cached is not None and cached.version >= stored:
                            continue
                        async with self.store.read() as uow:
                            execution = await uow.executions.get(execution_id)
                        if execution is not None:
                            self.cache.put(execution)
                            self.notifier.changed(execution_id)
            except Exception:
                log.warning("could not poll execution versions; trying again", exc_info=True)

    async def list(self, principal: Principal, where: ExecutionFilter, page: PageRequest) -> Page[Execution]:
        if not principal.is_admin:
            where = replace(where, tenant_id=principal.tenant_id)
        if principal.kind is CredentialKind.WORKSPACE_TOKEN:
            if where.workspace_id not in (None, principal.workspace_id):
                return Page([], None)
            where = replace(where, workspace_id=principal.workspace_id)
        async with self.store.read() as uow:
            return await uow.executions.list(where, page)

    # --- cancel, logs, outputs ----------------------------------------------------------------

    async def cancel(self, principal: Principal, execution_id: str) -> Execution:
        execution = await self.get(principal, execution_id)
        if execution.state.final or execution.state is State.CANCELING:
            raise Conflict(f"execution {execution_id} is {execution.state.value}; there is nothing to cancel")
        target = State.CANCELED if execution.state is State.QUEUED else State.CANCELING
        updated = await self._apply(
            ComputeEvent(execution_id, target, reason=Reason.CANCELED, message="canceled on request")
        )
        await self.compute.cancel(execution_id)
        if updated is not None and updated.state.final:  # a queued execution ends here
            await self._finish(updated)
        return updated or await self._load(execution_id)

    async def cancel_workspace(
        self, workspace_id: str, message: str = "the workspace was deprovisioned"
    ) -> int:
        """Cancel every active execution of a workspace (it is being deprovisioned or deleted)."""
        active = frozenset(s for s in State if s.active and s is not State.CANCELING)
        where = ExecutionFilter(workspace_id=workspace_id, states=active)
        count = 0
        while True:
            async with self.store.read() as uow:
                page = await uow.executions.list(where, PageRequest(500))
            if not page.items:
                return count
            for execution in page.items:
                target = State.CANCELED if execution.state is State.QUEUED else State.CANCELING
                event = ComputeEvent(execution.id, target, reason=Reason.CANCELED, message=message)
                updated = await self._apply(event)
                await self.compute.cancel(execution.id)
                if updated is not None and updated.state.final:
                    await self._finish(updated)
                count += 1

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
            workspace = await self.workspaces.get(principal, execution.workspace_id)
            if await self.storage.head(workspace.location, kept) is not None:
                stream = await self.storage.open(workspace.location, kept, None)
                data = b"".join([chunk async for chunk in stream.chunks])
                if tail is not None:
                    data = b"".join(data.splitlines(keepends=True)[-tail:]) if tail else b""
                yield data
                return
            if attempt is not None and attempt != execution.attempt:
                return  # that attempt wrote nothing
        async for chunk in self.compute.logs(execution_id, tail, follow and not execution.state.final):
            yield chunk

    async def outputs(
        self, principal: Principal, execution_id: str
    ) -> builtins.list[tuple[OutputFile, str | None]]:
        execution = await self.get(principal, execution_id)
        workspace = await self.workspaces.get(principal, execution.workspace_id)
        links = []
        for item in execution.outputs:
            url = await self.storage.presign(
                workspace.location, item.key, "GET", self.workspaces.policy.presign_seconds
            )
            links.append((item, url))
        return links

    # --- events -------------------------------------------------------------------------------

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
        delay = 0.05
        for attempt in range(10):
            try:
                updated = await self._apply(event, limit)
                break
            except Unavailable:
                if attempt == 9:
                    raise
                log.warning("store busy; retrying a transition", extra={"execution_id": event.execution_id})
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
        if updated is not None and behind(updated.state, event.state):
            log.info(
                "an observation behind the execution is ignored: %s seen while it is %s",
                event.state.value,
                updated.state.value,
                extra={"execution_id": event.execution_id},
            )
            return Reported.STALE
        if updated is not None and updated.state.final:
            await self._finish(updated)
        elif updated is not None and updated.just_retried:
            await self._end_attempt(updated)
        return Reported.RECORDED

    async def _retry_limit(self, event: ComputeEvent) -> RetryLimit | None:
        """The retry limit for a failure event; None when retries are off or the asset is gone."""
        execution = await self._fetch(event.execution_id)
        if execution is None or self.policy.max_attempts <= 1:
            return None
        try:
            asset = await self.assets.get(execution.asset_id, execution.asset_version)
        except NotFound:
            return None
        if asset.retry is None:
            return RetryLimit(self.policy.max_attempts, False)
        return RetryLimit(
            min(self.policy.max_attempts, asset.retry.max_attempts), asset.retry.on_executor_error
        )

    async def _apply(self, event: ComputeEvent, limit: RetryLimit | None = None) -> Execution | None:
        async with self.store.transaction() as uow:
            current = await uow.executions.get(event.execution_id, for_update=True)
            now = self.clock()  # the change happens once this transaction holds the row
            if current is None or current.state.final:
                return None  # unknown, or a late event after the end: the first final state stands
            if event.attempt is not None and event.attempt != current.attempt:
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
                    target, event.reason, current.attempt, limit.max_attempts, limit.executor_errors
                )
            ):
                wait = retry_delay(
                    current.attempt,
                    self.policy.retry_backoff_seconds,
                    self.policy.retry_max_backoff_seconds,
                    random.random(),  # noqa: S311 - jitter, not a secret
                )
                updated: Execution | None = current.retry(
                    now, now + timedelta(seconds=wait), target, event.reason, event.message, event.exit_code
                )
            else:
                updated = reach(
                    current, target, now, event.reason, event.message, event.exit_code, event.outputs
                )
            if updated is None:
                return None  # nothing new
            await uow.executions.update(updated)
            queued = (
                self.events is not None
                and (updated.state is not current.state or updated.attempt != current.attempt)
                and await self.events.execution_changed(uow, updated)
            )
        await self._announce(updated, queued)
        return updated

    async def _manifest_outputs(self, execution_id: str) -> tuple[OutputFile, ...]:
        """The outputs the sidecar listed in its manifest in the workspace (read before the
        transition's transaction, which should hold no lock while storage answers)."""
        execution = await self._fetch(execution_id)
        if execution is None:
            return ()
        async with self.store.read() as uow:
            workspace = await uow.workspaces.get(execution.workspace_id)
        if workspace is None:
            return ()
        key = outputs_prefix(execution.id) + "manifest.json"
        try:
            stream = await self.storage.open(workspace.location, key, None)
        except NotFound:
            log.warning("execution completed without a manifest", extra={"execution_id": execution.id})
            return ()
        return outputs_from_manifest(json.loads(b"".join([chunk async for chunk in stream.chunks])))

    async def _announce(self, execution: Execution, queued: bool = False) -> None:
        if self.events is not None:
            self.events.committed(queued)
        self.cache.put(execution)
        self.notifier.changed(execution.id)
        for listener in self.listeners:
            result = listener(execution)
            if result is not None:
                await result

    async def _keep_logs(self, execution: Execution, attempt: int) -> str | None:
        """Copy the job's log into the workspace under the attempt's key; the key, or None."""
        chunks = [chunk async for chunk in self.compute.logs(execution.id, None, False)]
        if not chunks:
            return None
        key = logs_key(execution.id, attempt)

        async def body() -> AsyncIterator[bytes]:
            for chunk in chunks:
                yield chunk

        await self.workspaces.put_import(execution.workspace_id, key, body(), None, None)
        return key

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
        token_id = self._job_tokens.pop(execution.id, None)
        if token_id is not None:
            await self.workspaces.revoke_token_id(token_id)
        await self.compute.release(execution.id)
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
        async with self.store.read() as uow:
            workspace = await uow.workspaces.get(execution.workspace_id)
        if workspace is None:
            return
        prefix = outputs_prefix(execution.id)
        page = PageRequest(500)
        while True:
            found = await self.storage.list(workspace.location, prefix, page)
            for item in found.items:
                await self.storage.delete(workspace.location, item.key)
            if found.next_after is None:
                return

    def _schedule_retry(self, execution: Execution) -> None:
        assert execution.retry_at is not None
        wait = max(0.0, (execution.retry_at - self.clock()).total_seconds())
        previous = self._retries.pop(execution.id, None)
        if previous is not None:
            previous.cancel()
        task = asyncio.create_task(self._resubmit(execution.id, execution.attempt, wait))
        self._retries[execution.id] = task
        task.add_done_callback(
            lambda _: (
                self._retries.pop(execution.id, None) if self._retries.get(execution.id) is task else None
            )
        )

    async def _resubmit(self, execution_id: str, attempt: int, wait: float) -> None:
        await asyncio.sleep(wait)
        async with self.store.read() as uow:
            execution = await uow.executions.get(execution_id)
            workspace = await uow.workspaces.get(execution.workspace_id) if execution else None
        if execution is None or execution.state is not State.QUEUED or execution.attempt != attempt:
            return  # canceled meanwhile, or another replica went on
        try:
            asset = await self.assets.get(execution.asset_id, execution.asset_version)
            if workspace is None or not workspace.active:
                raise NotFound("workspace", execution.workspace_id)
        except NotFound as exc:
            await self.on_event(
                ComputeEvent(execution.id, State.SYSTEM_ERROR, reason=Reason.LOST, message=exc.detail)
            )
            return
        await self._submit(execution, asset, workspace)

    async def stop(self) -> None:
        """Retries waiting in this process end here; reconciliation schedules them again at start."""
        tasks = list(self._retries.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _finish(self, execution: Execution) -> None:
        """Keep the worker's logs in the workspace, revoke the job's token, release the job."""
        try:
            key = await self._keep_logs(execution, execution.attempt)
            if key is not None:
                async with self.store.transaction() as uow:
                    current = await uow.executions.get(execution.id, for_update=True)
                    annotated = current.annotate(self.clock(), logs_key=key) if current is not None else None
                    if annotated is not None:
                        await uow.executions.update(annotated)
                if annotated is not None:
                    await self._announce(annotated)
        except NotFound:  # the workspace is being deleted: nowhere to keep them, nothing to keep
            log.info("logs not kept: the workspace is gone", extra={"execution_id": execution.id})
        except Exception:
            log.exception("could not keep the logs of an execution", extra={"execution_id": execution.id})
        token_id = self._job_tokens.pop(execution.id, None)
        if token_id is not None:
            await self.workspaces.revoke_token_id(token_id)
        await self.compute.release(execution.id)

    # --- start-up -----------------------------------------------------------------------------

    async def reconcile(self, queued_grace_seconds: float = 0.0) -> None:
        """Make the store and the compute backend agree; nothing stays stuck.

        QUEUED executions without a job are submitted again (once older than the grace, so that a
        submission under way on another replica is not doubled); other active executions whose
        job the backend does not know became SYSTEM_ERROR, reason Lost (CANCELING ones CANCELED);
        jobs of executions that are no longer active are released.
        """
        async with self.store.read() as uow:
            active = await uow.executions.active()
        known = await self.compute.known()  # raises if the backend cannot tell: nothing is judged
        now = self.clock()
        for execution in active:
            if execution.id in known:
                continue
            if execution.state is State.QUEUED:
                if execution.retry_at is not None and execution.retry_at > now:
                    if execution.id not in self._retries:
                        self._schedule_retry(execution)  # a retry that waited when we restarted
                    continue
                if (now - execution.updated_at).total_seconds() < queued_grace_seconds:
                    continue
                try:
                    asset = await self.assets.get(execution.asset_id, execution.asset_version)
                    async with self.store.read() as uow:
                        workspace = await uow.workspaces.get(execution.workspace_id)
                    if workspace is None or not workspace.active:
                        raise NotFound("workspace", execution.workspace_id)
                except NotFound as exc:
                    await self.on_event(
                        ComputeEvent(execution.id, State.SYSTEM_ERROR, reason=Reason.LOST, message=exc.detail)
                    )
                    continue
                await self._submit(execution, asset, workspace)
                continue
            target = State.CANCELED if execution.state is State.CANCELING else State.SYSTEM_ERROR
            await self.on_event(
                ComputeEvent(
                    execution.id,
                    target,
                    reason=Reason.LOST,
                    message=f"the {self.compute.name} backend lost the job while {execution.state.value}",
                )
            )
        for orphan in known - {e.id for e in active}:
            log.info("releasing a job without an active execution", extra={"execution_id": orphan})
            await self.compute.release(orphan)
