"""Notifications: events recorded with the state changes they report, subscriptions, the delivery
worker that sends the outbox, and the live event stream.

Events and their deliveries are written inside the transaction of the change they report (the
outbox), so an event exists exactly when its change was committed. The worker claims due
deliveries (at most the oldest pending one per subscription, so a subscription's order is kept),
sends each in its own task with bounded concurrency, and writes the results of many attempts at
once together with the next claim.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import json
import logging
import random
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncGenerator, Iterable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from provider import __version__
from provider.domain.errors import Conflict, FieldProblem, Forbidden, InvalidInput, NotFound, Unavailable
from provider.domain.executions import Execution, State
from provider.domain.ids import id_floor, id_millis, new_id
from provider.domain.imports import Import, ImportState
from provider.domain.notifications import (
    Attempt,
    ClaimedDelivery,
    Delivery,
    DeliveryState,
    Event,
    EventFilter,
    EventType,
    Outcome,
    Subscription,
    SubscriptionState,
    event_document,
    expand_types,
    generate_secret,
    secret_problem,
    sign,
    type_problem,
)
from provider.domain.pagination import Page, PageRequest
from provider.domain.representations import execution_out, import_out, timestamp, workspace_out
from provider.domain.tenants import CredentialKind, Principal
from provider.domain.workspaces import Scope, Workspace, WorkspaceState
from provider.services.ports import (
    Clock,
    DeliveryObserver,
    Store,
    UnitOfWork,
    WebhookResponse,
    WebhookSender,
)

log = logging.getLogger(__name__)

FINAL_EXECUTION_TYPES = {
    State.COMPLETE: EventType.EXECUTION_COMPLETED,
    State.EXECUTOR_ERROR: EventType.EXECUTION_FAILED,
    State.SYSTEM_ERROR: EventType.EXECUTION_FAILED,
    State.CANCELED: EventType.EXECUTION_CANCELED,
}
FINAL_IMPORT_TYPES = {
    ImportState.SUCCEEDED: EventType.IMPORT_SUCCEEDED,
    ImportState.FAILED: EventType.IMPORT_FAILED,
    ImportState.CANCELED: EventType.IMPORT_CANCELED,
}
# How far back a stream re-reads on its periodic poll: a transaction on another replica may
# commit an event a little after events with later ids were already sent.
STREAM_LOOKBACK_SECONDS = 2.0


async def wait_for_event(event: asyncio.Event, seconds: float) -> None:
    """Wait until `event` is set or `seconds` pass. (asyncio.timeout, unlike wait_for on Python
    3.11, never swallows a cancellation that arrives as the event is set.)"""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await event.wait()


class Signal:
    """Wakes everything waiting in this process (the worker, event streams) after a commit."""

    def __init__(self) -> None:
        self._waiters: set[asyncio.Event] = set()

    def notify(self) -> None:
        for waiter in self._waiters:
            waiter.set()

    def register(self) -> asyncio.Event:
        waiter = asyncio.Event()
        self._waiters.add(waiter)
        return waiter

    def unregister(self, waiter: asyncio.Event) -> None:
        self._waiters.discard(waiter)


class EventLog:
    """Writes events and their deliveries into the caller's transaction."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.signal = Signal()  # every commit with events: event streams
        self.queued = Signal()  # commits that queued deliveries: the delivery worker

    async def record(
        self,
        uow: UnitOfWork,
        event_type: EventType,
        tenant_id: str,
        workspace_id: str | None,
        subject_id: str,
        labels: dict[str, str],
        data: dict[str, Any],
        occurred_at: datetime,
    ) -> bool:
        """Write the event and a delivery per matching subscription; whether any was queued."""
        event_id = new_id("evt")
        document = event_document(event_id, event_type.value, timestamp(occurred_at), data)
        event = Event(
            id=event_id,
            type=event_type.value,
            tenant_id=tenant_id,
            workspace_id=workspace_id,
            subject_id=subject_id,
            labels=labels,
            occurred_at=occurred_at,
            body=json.dumps(document, separators=(",", ":")),
        )
        seq = await uow.events.add(event)
        rows = [
            {
                "id": new_id("msg"),
                "subscription_id": subscription.id,
                "event_id": event.id,
                "event_seq": seq,
                "event_type": event.type,
                "created_at": occurred_at,
            }
            for subscription in await uow.subscriptions.candidates(event)
            if subscription.filter.matches(event)
        ]
        await uow.deliveries.add_many(rows)
        return bool(rows)

    async def execution_changed(self, uow: UnitOfWork, execution: Execution) -> bool:
        """An execution entered a new state: `execution.state_changed`, and its end if it ended.
        Whether deliveries were queued (pass it to `committed`)."""
        types = [EventType.EXECUTION_STATE_CHANGED]
        if execution.state in FINAL_EXECUTION_TYPES:
            types.append(FINAL_EXECUTION_TYPES[execution.state])
        data = execution_out(execution)
        queued = False
        for event_type in types:
            queued |= await self.record(
                uow,
                event_type,
                execution.tenant_id,
                execution.workspace_id,
                execution.id,
                execution.labels,
                data,
                execution.updated_at,
            )
        return queued

    async def import_changed(self, uow: UnitOfWork, item: Import) -> None:
        types = [EventType.IMPORT_STATE_CHANGED]
        if item.state in FINAL_IMPORT_TYPES:
            types.append(FINAL_IMPORT_TYPES[item.state])
        for event_type in types:
            await self.record(
                uow,
                event_type,
                item.tenant_id,
                item.workspace_id,
                item.id,
                {},
                import_out(item),
                item.updated_at,
            )

    async def workspace_changed(self, uow: UnitOfWork, workspace: Workspace, storage_backend: str) -> None:
        if workspace.state is WorkspaceState.ACTIVE:
            event_type = EventType.WORKSPACE_CREATED
        elif workspace.state is WorkspaceState.DELETED:
            event_type = EventType.WORKSPACE_DELETED
        else:
            return
        await self.record(
            uow,
            event_type,
            workspace.tenant_id,
            workspace.id,
            workspace.id,
            {},
            workspace_out(workspace, storage_backend),
            workspace.updated_at,
        )

    def committed(self, queued: bool = True) -> None:
        """Call after the transaction that recorded events committed: stream at once, and deliver
        at once if it queued deliveries (most commits do not: waking the worker for them would
        cost a read each)."""
        self.signal.notify()
        if queued:
            self.queued.notify()


# --- subscriptions ------------------------------------------------------------------------------


def check_types(patterns: Iterable[str], field: str) -> tuple[str, ...]:
    patterns = tuple(patterns)
    problems = [FieldProblem(f"{field}.{i}", p) for i, x in enumerate(patterns) if (p := type_problem(x))]
    if not patterns:
        problems.append(FieldProblem(field, "name at least one event type"))
    if problems:
        raise InvalidInput("unknown event types", problems)
    return patterns


class SubscriptionService:
    def __init__(self, store: Store, sender: WebhookSender, events: EventLog, clock: Clock) -> None:
        self.store = store
        self.sender = sender
        self.events = events
        self.clock = clock

    async def new(
        self,
        principal: Principal,
        url: str,
        events: Iterable[str],
        secret: str | None,
        *,
        execution_id: str | None = None,
        workspace_id: str | None = None,
        labels: dict[str, str] | None = None,
        field: str = "body",
    ) -> tuple[Subscription, str | None]:
        """A valid subscription, not stored yet, and its secret when it was generated here."""
        if (
            principal.kind is CredentialKind.WORKSPACE_TOKEN
            and Scope.SUBSCRIPTIONS_WRITE not in principal.scopes
        ):
            raise Forbidden("subscriptions need the subscriptions:write scope")
        patterns = check_types(events, f"{field}.events")
        if secret is not None and (problem := secret_problem(secret)) is not None:
            raise InvalidInput(
                "the secret is not a Standard Webhooks secret", [FieldProblem(f"{field}.secret", problem)]
            )
        await self.sender.check(url, f"{field}.url")
        now = self.clock()
        generated = generate_secret() if secret is None else None
        subscription = Subscription(
            id=new_id("sub"),
            tenant_id=principal.tenant_id,
            owner_workspace_id=principal.workspace_id,
            url=url,
            events=patterns,
            execution_id=execution_id,
            workspace_id=workspace_id,
            labels=dict(labels or {}),
            secret=secret or generated or "",
            state=SubscriptionState.ACTIVE,
            created_at=now,
            updated_at=now,
        )
        return subscription, generated

    async def create(
        self,
        principal: Principal,
        url: str,
        events: Iterable[str],
        secret: str | None,
        execution_id: str | None,
        workspace_id: str | None,
        labels: dict[str, str],
    ) -> tuple[Subscription, str | None]:
        async with self.store.read() as uow:
            if workspace_id is not None:
                workspace = await uow.workspaces.get(workspace_id)
                if (
                    workspace is None
                    or workspace.tenant_id != principal.tenant_id
                    or principal.workspace_id not in (None, workspace_id)
                ):
                    raise NotFound("workspace", workspace_id)
            if execution_id is not None:
                execution = await uow.executions.get(execution_id)
                if (
                    execution is None
                    or execution.tenant_id != principal.tenant_id
                    or principal.workspace_id not in (None, execution.workspace_id)
                ):
                    raise NotFound("execution", execution_id)
        subscription, generated = await self.new(
            principal,
            url,
            events,
            secret,
            execution_id=execution_id,
            workspace_id=workspace_id,
            labels=labels,
        )
        async with self.store.transaction() as uow:
            await uow.subscriptions.add(subscription)
        log.info("subscription created", extra={"subscription_id": subscription.id})
        return subscription, generated

    def _visible(self, principal: Principal, item: Subscription | None, subscription_id: str) -> Subscription:
        if (
            item is None
            or not principal.may_see_tenant(item.tenant_id)
            or (principal.workspace_id is not None and item.owner_workspace_id != principal.workspace_id)
        ):
            raise NotFound("subscription", subscription_id)
        return item

    async def get(self, principal: Principal, subscription_id: str) -> Subscription:
        async with self.store.read() as uow:
            return self._visible(principal, await uow.subscriptions.get(subscription_id), subscription_id)

    async def list(self, principal: Principal, page: PageRequest) -> Page[Subscription]:
        async with self.store.read() as uow:
            return await uow.subscriptions.list(
                page, None if principal.is_admin else principal.tenant_id, principal.workspace_id
            )

    async def delete(self, principal: Principal, subscription_id: str) -> None:
        async with self.store.transaction() as uow:
            self._visible(principal, await uow.subscriptions.get(subscription_id), subscription_id)
            await uow.subscriptions.delete(subscription_id)

    async def deliveries(
        self, principal: Principal, subscription_id: str, page: PageRequest
    ) -> Page[Delivery]:
        async with self.store.read() as uow:
            self._visible(principal, await uow.subscriptions.get(subscription_id), subscription_id)
            return await uow.deliveries.list_for_subscription(subscription_id, page)

    async def retry(self, principal: Principal, subscription_id: str, delivery_id: str) -> Delivery:
        """Queue a dead letter again (409 for any other delivery)."""
        async with self.store.transaction() as uow:
            subscription = self._visible(
                principal, await uow.subscriptions.get(subscription_id), subscription_id
            )
            delivery = await uow.deliveries.get(delivery_id)
            if delivery is None or delivery.subscription_id != subscription.id:
                raise NotFound("delivery", delivery_id)
            if subscription.state is not SubscriptionState.ACTIVE:
                raise Conflict(f"subscription {subscription.id} is disabled: {subscription.disabled_reason}")
            if not await uow.deliveries.requeue(delivery_id, self.clock()):
                raise Conflict(
                    f"delivery {delivery_id} is {delivery.state.value}; only dead letters are retried"
                )
            requeued = await uow.deliveries.get(delivery_id)
        self.events.committed()
        assert requeued is not None
        return requeued

    async def stream(
        self,
        principal: Principal,
        types: Iterable[str],
        execution_id: str | None,
        workspace_id: str | None,
        last_event_id: str | None,
        poll_seconds: float,
        heartbeat_seconds: float,
    ) -> AsyncGenerator[Event | None, None]:
        """Events the caller may see as they are committed, after `last_event_id` when given;
        None whenever `heartbeat_seconds` passed without one."""
        patterns = check_types(types, "query.types")
        if principal.kind is CredentialKind.WORKSPACE_TOKEN and workspace_id not in (
            None,
            principal.workspace_id,
        ):
            raise NotFound("workspace", workspace_id or "")
        where = EventFilter(
            types=expand_types(patterns),
            tenant_id=None if principal.is_admin else principal.tenant_id,
            owner_workspace_id=principal.workspace_id,
            execution_id=execution_id,
            workspace_id=workspace_id,
        )
        if last_event_id is not None and id_millis(last_event_id) is None:
            raise InvalidInput(
                "Last-Event-ID is not an event id", [FieldProblem("header.Last-Event-ID", "not an event id")]
            )
        return self._follow(where, last_event_id, poll_seconds, heartbeat_seconds)

    async def _follow(
        self, where: EventFilter, cursor: str | None, poll_seconds: float, heartbeat_seconds: float
    ) -> AsyncGenerator[Event | None, None]:
        loop = asyncio.get_running_loop()
        cursor = cursor or id_floor("evt", int(time.time() * 1000))
        seen: OrderedDict[str, None] = OrderedDict()
        waiter = self.events.signal.register()
        last_poll = last_sent = loop.time()
        try:
            while True:
                now = loop.time()
                periodic = now - last_poll >= poll_seconds
                start = cursor
                if periodic:
                    last_poll = now
                    lookback = id_floor("evt", int((time.time() - STREAM_LOOKBACK_SECONDS) * 1000))
                    start = min(cursor, lookback)
                waiter.clear()
                async with self.store.read() as uow:
                    found = await uow.events.after(where, start, 500)
                for event in found:
                    if event.id in seen:
                        continue
                    seen[event.id] = None
                    if len(seen) > 10_000:
                        seen.popitem(last=False)
                    cursor = max(cursor, event.id)
                    last_sent = loop.time()
                    yield event
                if len(found) == 500:
                    continue
                if loop.time() - last_sent >= heartbeat_seconds:
                    last_sent = loop.time()
                    yield None
                timeout = min(
                    poll_seconds - (loop.time() - last_poll), heartbeat_seconds - (loop.time() - last_sent)
                )
                await wait_for_event(waiter, max(0.01, timeout))
                await asyncio.sleep(0.02)  # gather the events of a burst into one read
        finally:
            self.events.signal.unregister(waiter)


# --- delivery -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class DeliveryPolicy:
    max_attempts: int
    max_age_seconds: float
    backoff_seconds: float
    max_backoff_seconds: float
    concurrency: int
    batch_size: int
    poll_seconds: float
    lease_seconds: float
    retention_seconds: float

    def delay(self, attempts: int) -> float:
        """Full jitter: uniform in [0, min(max, base * 2^(attempts-1))]."""
        ceiling = min(self.max_backoff_seconds, self.backoff_seconds * 2 ** max(0, attempts - 1))
        return random.uniform(0, ceiling)  # noqa: S311 - jitter, not security


class NullObserver:
    def delivered(self, outcome: str, seconds_since_event: float | None) -> None:
        return None

    def outbox_depth(self, pending: int) -> None:
        return None


class DeliveryWorker:
    """Sends the outbox. Several workers (replicas) may share one PostgreSQL outbox."""

    def __init__(
        self,
        store: Store,
        sender: WebhookSender,
        events: EventLog,
        clock: Clock,
        policy: DeliveryPolicy,
        observer: DeliveryObserver | None = None,
    ) -> None:
        self.store = store
        self.sender = sender
        self.events = events
        self.clock = clock
        self.policy = policy
        self.observer = observer or NullObserver()
        self.name = f"worker-{uuid.uuid4().hex[:12]}"
        self._outcomes: list[Outcome] = []
        self._inflight: dict[str, asyncio.Task[None]] = {}
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._next_retry: float | None = None
        self._stopping = False

    def start(self) -> None:
        self._stopping = False
        self._wake = self.events.queued.register()
        self._task = asyncio.create_task(self._run(), name="delivery worker", context=contextvars.Context())

    async def stop(self) -> None:
        """Stop sending; attempts under way are abandoned and their claims released for the next start."""
        if self._task is None:
            return
        self._stopping = True
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        inflight = list(self._inflight.values())
        for task in inflight:
            task.cancel()
        await asyncio.gather(*inflight, return_exceptions=True)
        if self._wake is not None:
            self.events.queued.unregister(self._wake)
        try:
            async with self.store.transaction() as uow:
                await uow.deliveries.record(self._take_outcomes(), self.clock())
                await uow.deliveries.release(self.name)
        except Exception:
            log.exception("could not save the last delivery results")
        self._task = None

    def _take_outcomes(self) -> list[Outcome]:
        taken, self._outcomes = self._outcomes, []
        return taken

    async def _run(self) -> None:
        assert self._wake is not None
        last_housekeeping = 0.0
        while not self._stopping:
            try:
                self._wake.clear()
                loop_time = asyncio.get_running_loop().time()
                if loop_time - last_housekeeping >= max(self.policy.poll_seconds, 5.0):
                    last_housekeeping = loop_time
                    await self._housekeeping()
                claimed = await self._round()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                level = logging.WARNING if isinstance(exc, Unavailable) else logging.ERROR
                log.log(
                    level, "delivery round failed; trying again", exc_info=not isinstance(exc, Unavailable)
                )
                await asyncio.sleep(self.policy.poll_seconds)
                continue
            if claimed and len(self._inflight) < self.policy.concurrency:
                continue  # there may be more due right now
            if self._outcomes:
                continue
            await self._sleep()

    async def _sleep(self) -> None:
        assert self._wake is not None
        timeout = self.policy.poll_seconds
        if self._next_retry is not None:
            timeout = min(timeout, max(0.0, self._next_retry - time.monotonic()))
            self._next_retry = None
        await wait_for_event(self._wake, timeout)

    async def _round(self) -> int:
        """Save finished attempts and claim what is due, in one transaction."""
        outcomes = self._take_outcomes()
        free = self.policy.concurrency - len(self._inflight)
        now = self.clock()
        if not outcomes:
            # Most commits queue no delivery (nobody subscribed): a read, which takes no write
            # lock, tells whether a write transaction is worth it.
            async with self.store.read() as uow:
                due = await uow.deliveries.next_due()
            if due is None:
                return 0
            if due > now:
                self._next_retry = time.monotonic() + (due - now).total_seconds()
                return 0
        try:
            async with self.store.transaction() as uow:
                await uow.deliveries.record(outcomes, now)
                claimed = (
                    await uow.deliveries.claim(
                        now,
                        now + timedelta(seconds=self.policy.lease_seconds),
                        self.name,
                        min(free, self.policy.batch_size),
                    )
                    if free > 0
                    else []
                )
        except BaseException:
            self._outcomes = outcomes + self._outcomes  # nothing was written: keep them for the next round
            raise
        for item in claimed:
            task = asyncio.create_task(self._send(item), name=f"delivery {item.id}")
            self._inflight[item.id] = task
            task.add_done_callback(functools.partial(self._sent, item.id))
        return len(claimed)

    def _sent(self, delivery_id: str, _: asyncio.Task[None]) -> None:
        self._inflight.pop(delivery_id, None)

    async def _housekeeping(self) -> None:
        before = self.clock() - timedelta(seconds=self.policy.retention_seconds)
        async with self.store.transaction() as uow:
            await uow.deliveries.prune(before)
            await uow.events.prune(before)
            repaired = await uow.deliveries.repair_heads()
        if repaired:
            log.info("deliveries promoted by the sweep", extra={"count": repaired})
        async with self.store.read() as uow:
            self.observer.outbox_depth(await uow.deliveries.pending_count())

    async def _send(self, item: ClaimedDelivery) -> None:
        body = item.body.encode()
        sent_at = self.clock()
        stamp = int(time.time())
        headers = {
            "Content-Type": "application/json",
            "User-Agent": f"provider-webhooks/{__version__}",
            "webhook-id": item.id,
            "webhook-timestamp": str(stamp),
            "webhook-signature": sign(item.secret, item.id, stamp, body),
        }
        try:
            response = await self.sender.send(item.url, headers, body)
        except Exception as exc:  # a fault of ours: count it as a failed attempt
            log.exception("webhook send failed unexpectedly", extra={"delivery_id": item.id})
            response = WebhookResponse(None, f"internal error: {type(exc).__name__}", 0.0)
        attempt = Attempt(sent_at, int(response.seconds * 1000), response.status, response.error)
        attempts = item.attempts + 1
        now = self.clock()
        if response.status is not None and 200 <= response.status < 300:
            outcome = Outcome(item.id, item.subscription_id, attempt, DeliveryState.SUCCEEDED)
            self.observer.delivered("succeeded", (now - item.occurred_at).total_seconds())
        elif response.status == 410:
            reason = "the receiver answered 410 Gone"
            outcome = Outcome(
                item.id,
                item.subscription_id,
                replace(attempt, error=reason),
                DeliveryState.DEAD,
                disable_reason=reason,
            )
            self.observer.delivered("gone", None)
            log.info("subscription disabled by its receiver", extra={"subscription_id": item.subscription_id})
        elif (
            attempts >= self.policy.max_attempts
            or (now - item.created_at).total_seconds() >= self.policy.max_age_seconds
        ):
            outcome = Outcome(item.id, item.subscription_id, attempt, DeliveryState.DEAD)
            self.observer.delivered("dead", None)
        else:
            delay = self.policy.delay(attempts)
            outcome = Outcome(
                item.id,
                item.subscription_id,
                attempt,
                DeliveryState.PENDING,
                next_attempt_at=now + timedelta(seconds=delay),
            )
            retry_at = time.monotonic() + delay + 0.005  # due by the store's clock too
            self._next_retry = retry_at if self._next_retry is None else min(self._next_retry, retry_at)
            self.observer.delivered("failed", None)
        self._outcomes.append(outcome)
        if self._wake is not None:
            self._wake.set()
