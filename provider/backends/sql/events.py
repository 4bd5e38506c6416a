"""Events: the history the event stream replays and deliveries send."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from provider.backends.sql import tables as t
from provider.domain.notifications import Event, EventFilter


def _row(row: sa.Row[Any]) -> Event:
    return Event(
        id=row.id,
        type=row.type,
        tenant_id=row.tenant_id,
        workspace_id=row.workspace_id,
        subject_id=row.subject_id,
        labels=dict(row.labels),
        occurred_at=row.occurred_at,
        body=row.body,
    )


class SqlEventRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def add(self, event: Event) -> int:
        result = await self.conn.execute(
            t.events.insert()
            .values(
                id=event.id,
                type=event.type,
                tenant_id=event.tenant_id,
                workspace_id=event.workspace_id,
                subject_id=event.subject_id,
                labels=event.labels,
                occurred_at=event.occurred_at,
                body=event.body,
            )
            .returning(t.events.c.seq)
        )
        return int(result.scalar_one())

    async def after(self, where: EventFilter, after_id: str, limit: int) -> list[Event]:
        c = t.events.c
        query = t.events.select().where(c.id > after_id, c.type.in_(sorted(where.types)))
        if where.tenant_id is not None:
            query = query.where(c.tenant_id == where.tenant_id)
        for workspace_id in (where.owner_workspace_id, where.workspace_id):
            if workspace_id is not None:
                query = query.where(c.workspace_id == workspace_id)
        if where.execution_id is not None:
            query = query.where(c.subject_id == where.execution_id, c.type.like("execution.%"))
        query = query.order_by(c.id).limit(limit)
        return [e for e in (_row(r) for r in await self.conn.execute(query)) if where.matches(e)]

    async def prune(self, before: datetime) -> int:
        """Delete events older than `before` that no pending delivery still needs."""
        d = t.deliveries.c
        pending = sa.select(d.event_id).where(d.state == "pending")
        result = await self.conn.execute(
            t.events.delete().where(t.events.c.occurred_at < before, t.events.c.id.not_in(pending))
        )
        return int(result.rowcount)
