"""Subscriptions and their outbox of deliveries, with the attempts made for each.

Claiming takes, per subscription, only the oldest pending delivery (so a subscription's next
delivery waits for the previous one to succeed or die), with `FOR UPDATE SKIP LOCKED` on
PostgreSQL so that replicas sharing the outbox never claim the same row; a claim is a lease
(`claimed_until`), so the claims of a worker that died come back when it runs out.
"""

from __future__ import annotations

import builtins
from collections import defaultdict
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from provider.backends.sql import tables as t
from provider.backends.sql.common import id_page
from provider.domain.notifications import (
    Attempt,
    ClaimedDelivery,
    Delivery,
    DeliveryState,
    Event,
    Outcome,
    Subscription,
    SubscriptionState,
)
from provider.domain.pagination import Page, PageRequest, page_from_rows

PENDING = DeliveryState.PENDING.value


# The statements of a delivery round, built once: a round runs many times a second under load,
# and building a statement costs more than running it.
def _claimable() -> tuple[sa.Select[Any], sa.Select[Any]]:
    """Per subscription, its oldest pending delivery, if due and not claimed by a live worker."""
    d = t.deliveries.alias("d")
    earlier = t.deliveries.alias("earlier")
    s, e = t.subscriptions.c, t.events.c
    now: sa.BindParameter[Any] = sa.bindparam("now")
    query = (
        sa.select(
            d.c.id,
            d.c.subscription_id,
            d.c.attempts,
            d.c.queued_at,
            s.url,
            s.secret,
            e.body,
            e.occurred_at,
        )
        .select_from(
            d.join(t.subscriptions, s.id == d.c.subscription_id).join(t.events, e.id == d.c.event_id)
        )
        .where(
            d.c.state == PENDING,
            d.c.ready,
            d.c.next_attempt_at <= now,
            sa.or_(d.c.claimed_until.is_(None), d.c.claimed_until < now),
            s.state == SubscriptionState.ACTIVE.value,
            ~sa.exists().where(
                earlier.c.subscription_id == d.c.subscription_id,
                earlier.c.state == PENDING,
                earlier.c.event_seq < d.c.event_seq,
            ),
        )
        .order_by(d.c.next_attempt_at, d.c.event_seq)
        .limit(sa.bindparam("limit"))
    )
    return query, query.with_for_update(skip_locked=True, of=d)


_CLAIMABLE, _CLAIMABLE_LOCKED = _claimable()  # the second for PostgreSQL, where replicas share the outbox
_D = t.deliveries.c
_IDS: sa.BindParameter[Any] = sa.bindparam("ids", expanding=True)
_TAKE = (
    t.deliveries.update()
    .where(_D.id.in_(_IDS))
    .values(claimed_until=sa.bindparam("lease_until"), claimed_by=sa.bindparam("worker"))
)
_A = t.delivery_attempts.c
_ATTEMPTS_SO_FAR = sa.select(
    _D.id,
    _D.attempts,
    sa.select(sa.func.max(_A.number)).where(_A.delivery_id == _D.id).scalar_subquery().label("last_number"),
).where(_D.id.in_(_IDS))
_ADD_ATTEMPT = t.delivery_attempts.insert()
_SUBSCRIPTIONS_WITH_PENDING = (
    sa.select(_D.subscription_id).where(_D.subscription_id.in_(_IDS), _D.state == PENDING).distinct()
)


def _first_pending(subscription: sa.ColumnElement[Any]) -> sa.ScalarSelect[Any]:
    head = t.deliveries.alias("head")
    return (
        sa.select(head.c.id)
        .where(head.c.subscription_id == subscription, head.c.state == PENDING)
        .order_by(head.c.event_seq)
        .limit(1)
        .scalar_subquery()
    )


# Queueing a delivery and settling its predecessor both decide who is the head of a queue. On
# PostgreSQL each locks its subscriptions first (sorted, so two never wait on each other), so the
# later one sees what the earlier committed; SQLite has one writer at a time already.
_LOCK_SUBSCRIPTIONS = (
    sa.select(t.subscriptions.c.id)
    .where(t.subscriptions.c.id.in_(_IDS))
    .order_by(t.subscriptions.c.id)
    .with_for_update(key_share=True)  # FOR NO KEY UPDATE: readers and foreign keys go on
)
_PROMOTE = (
    t.deliveries.update().where(_D.id == _first_pending(sa.bindparam("b_subscription"))).values(ready=True)
)
_REPAIR_HEADS = (
    t.deliveries.update()
    .where(_D.state == PENDING, ~_D.ready, _D.id == _first_pending(_D.subscription_id))
    .values(ready=True)
)
_SETTLE = (
    t.deliveries.update()
    .where(_D.id == sa.bindparam("b_id"), _D.state == PENDING)
    .values(
        state=sa.bindparam("b_state"),
        attempts=sa.bindparam("b_attempts"),
        next_attempt_at=sa.bindparam("b_next"),
        last_error=sa.bindparam("b_error"),
        finished_at=sa.bindparam("b_finished"),
        claimed_until=None,
        claimed_by=None,
    )
)


def _subscription(row: sa.Row[Any]) -> Subscription:
    return Subscription(
        id=row.id,
        tenant_id=row.tenant_id,
        owner_workspace_id=row.owner_workspace_id,
        url=row.url,
        events=tuple(row.events),
        execution_id=row.execution_id,
        workspace_id=row.workspace_id,
        labels=dict(row.labels),
        secret=row.secret,
        state=SubscriptionState(row.state),
        created_at=row.created_at,
        updated_at=row.updated_at,
        disabled_reason=row.disabled_reason,
    )


class SqlSubscriptionRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def add(self, item: Subscription) -> None:
        await self.conn.execute(
            t.subscriptions.insert().values(
                id=item.id,
                tenant_id=item.tenant_id,
                owner_workspace_id=item.owner_workspace_id,
                url=item.url,
                events=list(item.events),
                execution_id=item.execution_id,
                workspace_id=item.workspace_id,
                labels=item.labels,
                secret=item.secret,
                state=item.state.value,
                disabled_reason=item.disabled_reason,
                created_at=item.created_at,
                updated_at=item.updated_at,
            )
        )

    async def get(self, subscription_id: str) -> Subscription | None:
        row = (
            await self.conn.execute(t.subscriptions.select().where(t.subscriptions.c.id == subscription_id))
        ).first()
        return _subscription(row) if row else None

    async def list(
        self, page: PageRequest, tenant_id: str | None, owner_workspace_id: str | None
    ) -> Page[Subscription]:
        c = t.subscriptions.c
        query = t.subscriptions.select()
        if tenant_id is not None:
            query = query.where(c.tenant_id == tenant_id)
        if owner_workspace_id is not None:
            query = query.where(c.owner_workspace_id == owner_workspace_id)
        return await id_page(self.conn, query, c.id, page, _subscription)

    async def candidates(self, event: Event) -> builtins.list[Subscription]:
        """Active subscriptions whose tenant, workspace and execution filters admit `event`
        (types and labels are matched by the caller): one indexed query, however many
        subscriptions the tenant has."""
        c = t.subscriptions.c
        is_execution = event.type.startswith("execution.")
        query = t.subscriptions.select().where(
            c.tenant_id == event.tenant_id,
            c.state == SubscriptionState.ACTIVE.value,
            sa.or_(c.execution_id.is_(None), c.execution_id == (event.subject_id if is_execution else None)),
            sa.or_(c.workspace_id.is_(None), c.workspace_id == event.workspace_id),
            sa.or_(c.owner_workspace_id.is_(None), c.owner_workspace_id == event.workspace_id),
        )
        return [_subscription(r) for r in await self.conn.execute(query)]

    async def delete(self, subscription_id: str) -> None:
        d = t.deliveries.c
        ids = sa.select(d.id).where(d.subscription_id == subscription_id)
        await self.conn.execute(
            t.delivery_attempts.delete().where(t.delivery_attempts.c.delivery_id.in_(ids))
        )
        await self.conn.execute(t.deliveries.delete().where(d.subscription_id == subscription_id))
        await self.conn.execute(t.subscriptions.delete().where(t.subscriptions.c.id == subscription_id))


class SqlDeliveryRepository:
    def __init__(self, conn: AsyncConnection, dialect: str) -> None:
        self.conn = conn
        self.dialect = dialect

    async def add_many(self, rows: builtins.list[dict[str, Any]]) -> None:
        """Insert deliveries: id, subscription_id, event_id, event_seq, event_type, created_at.

        A delivery is its subscription's head (`ready`) when nothing of that subscription is
        pending yet, the first of this batch's rows for it.
        """
        if not rows:
            return
        await self._lock_queues({r["subscription_id"] for r in rows})
        busy = set(
            (
                await self.conn.execute(
                    _SUBSCRIPTIONS_WITH_PENDING, {"ids": [r["subscription_id"] for r in rows]}
                )
            ).scalars()
        )
        values = []
        for row in rows:
            values.append(
                {
                    **row,
                    "state": PENDING,
                    "attempts": 0,
                    "next_attempt_at": row["created_at"],
                    "queued_at": row["created_at"],
                    "ready": row["subscription_id"] not in busy,
                }
            )
            busy.add(row["subscription_id"])
        await self.conn.execute(t.deliveries.insert(), values)

    async def claim(
        self, now: datetime, lease_until: datetime, worker: str, limit: int
    ) -> builtins.list[ClaimedDelivery]:
        query = _CLAIMABLE_LOCKED if self.dialect == "postgresql" else _CLAIMABLE
        rows = (await self.conn.execute(query, {"now": now, "limit": limit})).all()
        if not rows:
            return []
        await self.conn.execute(
            _TAKE, {"ids": [r.id for r in rows], "lease_until": lease_until, "worker": worker}
        )
        return [
            ClaimedDelivery(
                id=r.id,
                subscription_id=r.subscription_id,
                url=r.url,
                secret=r.secret,
                body=r.body,
                attempts=r.attempts,
                created_at=r.queued_at,
                occurred_at=r.occurred_at,
            )
            for r in rows
        ]

    async def record(self, outcomes: builtins.list[Outcome], now: datetime) -> None:
        """Write the results of many attempts at once (one statement per kind of write)."""
        if not outcomes:
            return
        ids = [o.delivery_id for o in outcomes]
        rows = (await self.conn.execute(_ATTEMPTS_SO_FAR, {"ids": ids})).all()
        counts = {r.id: r.attempts for r in rows}
        numbers = {r.id: r.last_number or 0 for r in rows}  # the history outlives a manual retry's reset
        known = [o for o in outcomes if o.delivery_id in counts]  # deleted with their subscription
        if not known:
            return
        finished = {o.subscription_id for o in known if o.state is not DeliveryState.PENDING}
        await self._lock_queues(finished)  # before any delivery row: one lock order everywhere
        await self.conn.execute(
            _ADD_ATTEMPT,
            [
                {
                    "delivery_id": o.delivery_id,
                    "number": numbers[o.delivery_id] + 1,
                    "at": o.attempt.at,
                    "duration_ms": o.attempt.duration_ms,
                    "status": o.attempt.status,
                    "error": o.attempt.error,
                }
                for o in known
            ],
        )
        await self.conn.execute(
            _SETTLE,
            [
                {
                    "b_id": o.delivery_id,
                    "b_state": o.state.value,
                    "b_attempts": counts[o.delivery_id] + 1,
                    "b_next": o.next_attempt_at or now,
                    "b_error": o.attempt.error,
                    "b_finished": None if o.state is DeliveryState.PENDING else now,
                }
                for o in known
            ],
        )
        if finished:  # the next delivery of each becomes its head
            await self.conn.execute(_PROMOTE, [{"b_subscription": sid} for sid in sorted(finished)])
        for o in known:
            if o.disable_reason is not None:
                await self._disable(o.subscription_id, o.disable_reason, now)

    async def _lock_queues(self, subscription_ids: set[str]) -> None:
        if subscription_ids and self.dialect == "postgresql":
            await self.conn.execute(_LOCK_SUBSCRIPTIONS, {"ids": sorted(subscription_ids)})

    async def _disable(self, subscription_id: str, reason: str, now: datetime) -> None:
        s = t.subscriptions.c
        await self.conn.execute(
            t.subscriptions.update()
            .where(s.id == subscription_id)
            .values(state=SubscriptionState.DISABLED.value, disabled_reason=reason, updated_at=now)
        )
        c = t.deliveries.c
        await self.conn.execute(
            t.deliveries.update()
            .where(c.subscription_id == subscription_id, c.state == PENDING)
            .values(
                state=DeliveryState.DEAD.value,
                last_error=f"subscription disabled: {reason}",
                finished_at=now,
                claimed_until=None,
                claimed_by=None,
            )
        )

    async def get(self, delivery_id: str) -> Delivery | None:
        row = (await self.conn.execute(t.deliveries.select().where(t.deliveries.c.id == delivery_id))).first()
        if row is None:
            return None
        return (await self._with_history([row]))[0]

    async def list_for_subscription(self, subscription_id: str, page: PageRequest) -> Page[Delivery]:
        c = t.deliveries.c
        query = t.deliveries.select().where(c.subscription_id == subscription_id).order_by(c.id)
        if page.after:
            query = query.where(c.id > page.after[0])
        rows = builtins.list(await self.conn.execute(query.limit(page.size + 1)))
        return page_from_rows(await self._with_history(rows), page.size, lambda item: (item.id,))

    async def _with_history(self, rows: builtins.list[sa.Row[Any]]) -> builtins.list[Delivery]:
        a = t.delivery_attempts.c
        attempts: dict[str, builtins.list[Attempt]] = defaultdict(list)
        if rows:
            query = (
                t.delivery_attempts.select()
                .where(a.delivery_id.in_([r.id for r in rows]))
                .order_by(a.delivery_id, a.number)
            )
            for r in await self.conn.execute(query):
                attempts[r.delivery_id].append(Attempt(r.at, r.duration_ms, r.status, r.error))
        return [
            Delivery(
                id=r.id,
                subscription_id=r.subscription_id,
                event_id=r.event_id,
                event_type=r.event_type,
                state=DeliveryState(r.state),
                attempts=r.attempts,
                next_attempt_at=r.next_attempt_at,
                created_at=r.created_at,
                finished_at=r.finished_at,
                last_error=r.last_error,
                history=tuple(attempts[r.id]),
            )
            for r in rows
        ]

    async def requeue(self, delivery_id: str, now: datetime) -> bool:
        """A dead letter back to pending with fresh attempts; False if it was not dead."""
        c = t.deliveries.c
        result = await self.conn.execute(
            t.deliveries.update()
            .where(c.id == delivery_id, c.state == DeliveryState.DEAD.value)
            .values(
                state=PENDING,
                ready=True,  # claims still send the older of two heads first
                attempts=0,
                next_attempt_at=now,
                queued_at=now,
                finished_at=None,
                claimed_until=None,
                claimed_by=None,
            )
        )
        return bool(result.rowcount)

    async def release(self, worker: str) -> None:
        """Give up the claims of a worker that stops, so that they need not wait for the lease."""
        c = t.deliveries.c
        await self.conn.execute(
            t.deliveries.update()
            .where(c.claimed_by == worker, c.state == PENDING)
            .values(claimed_until=None, claimed_by=None)
        )

    async def repair_heads(self) -> int:
        """Mark as heads the pending deliveries that are first in their queue but not marked.

        Queueing and settling lock their subscriptions, so this finds nothing unless a writer
        outside this repository (an operator's SQL, an older replica during an upgrade) skipped
        the lock; the sweep (in housekeeping) keeps such a queue from stalling.
        """
        result = await self.conn.execute(_REPAIR_HEADS)
        return int(result.rowcount)

    async def pending_count(self) -> int:
        query = sa.select(sa.func.count()).select_from(t.deliveries).where(t.deliveries.c.state == PENDING)
        return int((await self.conn.execute(query)).scalar_one())

    async def next_due(self) -> datetime | None:
        c = t.deliveries.c
        query = sa.select(sa.func.min(c.next_attempt_at)).where(c.state == PENDING)
        value: datetime | None = (await self.conn.execute(query)).scalar_one()
        return value

    async def prune(self, before: datetime) -> int:
        """Delete finished deliveries (and their attempts) older than `before`."""
        c = t.deliveries.c
        old = sa.select(c.id).where(c.state != PENDING, c.finished_at < before)
        await self.conn.execute(
            t.delivery_attempts.delete().where(t.delivery_attempts.c.delivery_id.in_(old))
        )
        result = await self.conn.execute(
            t.deliveries.delete().where(c.state != PENDING, c.finished_at < before)
        )
        return int(result.rowcount)
