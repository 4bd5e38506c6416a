"""What the operator's gauges show, read in a few grouped queries (at each scrape, at most so often)."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from provider.backends.sql import tables as t
from provider.domain.executions import State
from provider.services.ports import OperationalStats

_ACTIVE = [s.value for s in State if s.active]


class SqlStatsRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def snapshot(self) -> OperationalStats:
        e = t.executions.c
        executions = await self.conn.execute(
            sa.select(e.state, e.asset_id, sa.func.count())
            .where(e.state.in_(_ACTIVE))
            .group_by(e.state, e.asset_id)
        )
        oldest = (
            await self.conn.execute(
                sa.select(sa.func.min(e.updated_at, type_=t.UTCDateTime())).where(
                    e.state == State.QUEUED.value
                )
            )
        ).scalar_one_or_none()
        p, d = t.provisionings.c, t.dataflows.c
        provisionings = await self.conn.execute(sa.select(p.state, sa.func.count()).group_by(p.state))
        dataflows = await self.conn.execute(sa.select(d.state, sa.func.count()).group_by(d.state))
        return OperationalStats(
            executions={(r[0], r[1]): int(r[2]) for r in executions},
            oldest_queued=oldest if isinstance(oldest, datetime) else None,
            provisionings={r[0]: int(r[1]) for r in provisionings},
            dataflows={r[0]: int(r[1]) for r in dataflows},
        )
