"""Commands: start an execution (validate, persist it QUEUED, submit it) and cancel one, or
every execution of a workspace."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from provider.domain.assets import Asset, InputKind, grant_problem
from provider.domain.errors import (
    AssetNotGranted,
    Conflict,
    FieldProblem,
    InvalidInput,
    InvalidKey,
    NotSupported,
    ProblemCollector,
)
from provider.domain.executions import Execution, Reason, State, Transition
from provider.domain.ids import new_id
from provider.domain.notifications import Subscription
from provider.domain.pagination import PageRequest
from provider.domain.programs import Program
from provider.domain.tenants import Principal
from provider.domain.workspaces import Workspace, check_key
from provider.services.executions.observation import Observation
from provider.services.executions.reads import Reads
from provider.services.executions.shared import Dependencies
from provider.services.executions.submission import Submission
from provider.services.ports import ComputeEvent, ExecutionFilter


@dataclass(frozen=True)
class ExecutionRequest:
    asset_id: str
    asset_version: str | None
    workspace_id: str
    inputs: dict[str, str]
    env: dict[str, str]
    labels: dict[str, str]
    program: Program | None = None  # the caller's own steps and paths (a TES task)

    def digest(self) -> str:
        fields = {**self.__dict__, "program": self.program.to_json() if self.program else None}
        canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()


# Writes made in the transaction that creates an execution (a TES task's document, say).
AlsoWrite = Callable[[Any, Execution], Awaitable[None]]


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


class WorkspaceClosed(Exception):
    """The workspace was closed (suspended, completed, deleted) while an execution was started."""


class Commands:
    def __init__(
        self, deps: Dependencies, reads: Reads, submission: Submission, observation: Observation
    ) -> None:
        self.deps = deps
        self.reads = reads
        self.submission = submission
        self.observation = observation

    async def create(
        self, principal: Principal, request: ExecutionRequest, idempotency_key: str | None
    ) -> tuple[Execution, bool]:
        """Validate, persist as QUEUED, hand to compute. Returns (execution, created)."""
        started = await self.start(principal, request, idempotency_key)
        return started.execution, started.created

    async def _check_granted(self, asset_id: str, workspace: Workspace) -> None:
        """403 unless the workspace's offering and the tenant's allowance both grant the asset."""
        async with self.deps.store.read() as uow:
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
        *,
        execution_id: str | None = None,
        also: AlsoWrite | None = None,
        awaiting_inputs: bool = False,
    ) -> Started:
        """`create`, with an optional callback subscription made in the same transaction.

        A replayed request (same Idempotency-Key) makes no second subscription. `also` writes
        more in that transaction; `awaiting_inputs` keeps the execution QUEUED, not submitted,
        until `Observation.inputs_arrived`.
        """
        digest = request.digest()
        if idempotency_key is not None:
            replayed = await self._replay(principal.tenant_id, idempotency_key, digest)
            if replayed is not None:
                return Started(replayed, False)
        asset = await self.deps.assets.get(request.asset_id, request.asset_version)
        workspace = await self.deps.workspaces.get(principal, request.workspace_id)
        if not workspace.active:
            raise Conflict(f"workspace {workspace.id} is being deleted")
        await self._check_granted(asset.id, workspace)
        env = await self._validate(asset, workspace, request)
        execution_id = execution_id or new_id("exe")
        subscription, secret = None, None
        if callback is not None:
            if self.deps.subscriptions is None:
                raise NotSupported("callbacks are not available")
            subscription, secret = await self.deps.subscriptions.new(
                principal,
                callback.url,
                callback.events,
                callback.secret,
                execution_id=execution_id,
                field="body.callback",
            )
        now = self.deps.clock()
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
            program=request.program,
            reason=Reason.AWAITING_INPUTS if awaiting_inputs else None,
            message="waiting for its inputs to be fetched" if awaiting_inputs else None,
        )
        try:
            async with self.deps.store.transaction() as uow:
                # Locked: a data flow that completes by itself at this moment (which locks the
                # workspace too) either sees this execution or has closed the workspace first.
                current = await uow.workspaces.get(workspace.id, for_update=True)
                if current is None or not current.active:
                    raise WorkspaceClosed(f"workspace {workspace.id} is no longer open to new executions")
                await uow.executions.add(execution)
                if also is not None:
                    await also(uow, execution)
                if subscription is not None:
                    await uow.subscriptions.add(subscription)
                events = self.deps.events
                queued = events is not None and await events.execution_changed(uow, execution)
        except WorkspaceClosed as closed:
            raise Conflict(str(closed)) from None
        except Conflict:  # the same key raced in from another request
            assert idempotency_key is not None
            replayed = await self._replay(principal.tenant_id, idempotency_key, digest)
            if replayed is None:
                raise
            return Started(replayed, False)
        await self.observation.announce(execution, queued)
        if not awaiting_inputs:
            await self.submission.submit(execution, asset, workspace)
        return Started(await self.reads.load(execution.id), True, subscription, secret)

    async def _replay(self, tenant_id: str, key: str, digest: str) -> Execution | None:
        async with self.deps.store.read() as uow:
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
        # A program places its own files: the asset's inputs are not asked for.
        for item in asset.inputs if request.program is None else []:
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
                found = await self.deps.storage.list(workspace.location, prefix, PageRequest(1))
                if not found.items:
                    problems.add(field_name, f"no objects under {prefix!r} in workspace {workspace.id}")
            elif await self.deps.storage.head(workspace.location, key) is None:
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

    async def cancel(self, principal: Principal, execution_id: str) -> Execution:
        execution = await self.reads.get(principal, execution_id)
        if execution.state.final or execution.state is State.CANCELING:
            raise Conflict(f"execution {execution_id} is {execution.state.value}; there is nothing to cancel")
        updated = await self._cancel(execution, "canceled on request")
        return updated or await self.reads.load(execution_id)

    async def cancel_workspace(
        self, workspace_id: str, message: str = "the workspace was deprovisioned"
    ) -> int:
        """Cancel every active execution of a workspace (it is being deprovisioned or deleted)."""
        active = frozenset(s for s in State if s.active and s is not State.CANCELING)
        where = ExecutionFilter(workspace_id=workspace_id, states=active)
        count = 0
        while True:
            async with self.deps.store.read() as uow:
                page = await uow.executions.list(where, PageRequest(500))
            if not page.items:
                return count
            for execution in page.items:
                await self._cancel(execution, message)
                count += 1

    async def hold_workspace(self, workspace_id: str) -> int:
        """Hold every queued execution of a workspace whose data flow is suspended; how many.
        Those past QUEUED run on: their job has begun, and its sidecar keeps its token."""
        return await self._each_queued(workspace_id, self.observation.hold)

    async def release_workspace(self, workspace_id: str) -> int:
        """Submit the held executions of a workspace whose data flow resumed; how many."""
        return await self._each_queued(workspace_id, self.observation.unhold)

    async def _each_queued(
        self, workspace_id: str, action: Callable[[str], Awaitable[Execution | None]]
    ) -> int:
        where = ExecutionFilter(workspace_id=workspace_id, states=frozenset({State.QUEUED}))
        page, count = PageRequest(500), 0
        while True:
            async with self.deps.store.read() as uow:
                found = await uow.executions.list(where, page)
            for execution in found.items:
                count += await action(execution.id) is not None
            if found.next_after is None:
                return count
            page = PageRequest(500, found.next_after)

    async def _cancel(self, execution: Execution, message: str) -> Execution | None:
        """A queued execution ends CANCELED here; a later one is CANCELING until its job stops."""
        target = State.CANCELED if execution.state is State.QUEUED else State.CANCELING
        updated = await self.observation.apply(
            ComputeEvent(execution.id, target, reason=Reason.CANCELED, message=message)
        )
        await self.deps.compute.cancel(execution.id)
        if updated is not None and updated.state.final:
            await self.observation.finish(updated)
        return updated
