"""Delivery: the worker that sends the outbox.

It claims due deliveries (at most the oldest pending one per subscription, so a subscription's
order is kept), sends each in its own task with bounded concurrency, and writes the results of
many attempts at once together with the next claim.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass, replace
from datetime import timedelta

from provider import __version__
from provider.aio import Backoff, Tasks, wait_event
from provider.domain.errors import Unavailable
from provider.domain.notifications import Attempt, ClaimedDelivery, DeliveryState, Outcome, sign
from provider.services.notifications.outbox import EventLog
from provider.services.ports import Clock, DeliveryObserver, Store, WebhookResponse, WebhookSender

log = logging.getLogger(__name__)


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
        """Full jitter: many receivers that failed together do not come back together."""
        return Backoff(self.backoff_seconds, self.max_backoff_seconds).delay(attempts)


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
        self._inflight = Tasks(log)  # delivery id -> its send
        self._wake: asyncio.Event | None = None
        self._loop = Tasks(log)  # the worker's own loop, once started
        self._started = False
        self._next_retry: float | None = None
        self._stopping = False
        # Rounds completed: whatever was due when one began has had its chance to be claimed.
        self.rounds = 0

    def start(self) -> None:
        self._stopping = False
        self._wake = self.events.queued.register()
        self._started = True
        self._loop.spawn("loop", self._run(), "delivery worker")

    async def stop(self) -> None:
        """Stop sending; attempts under way are abandoned and their claims released for the next start."""
        if not self._started:
            return
        self._stopping = True
        await self._loop.close()
        await self._inflight.close()
        if self._wake is not None:
            self.events.queued.unregister(self._wake)
        try:
            async with self.store.transaction() as uow:
                await uow.deliveries.record(self._take_outcomes(), self.clock())
                await uow.deliveries.release(self.name)
        except Exception:
            log.exception("could not save the last delivery results")
        self._started = False

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
                self.rounds += 1
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
        await wait_event(self._wake, timeout)

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
            self._inflight.spawn(item.id, self._send(item), f"delivery {item.id}")
        return len(claimed)

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
