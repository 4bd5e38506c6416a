"""Data Plane Signaling: data flows and control plane registrations."""

from __future__ import annotations

import builtins
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from provider.backends.sql import tables as t
from provider.backends.sql.common import insert_row
from provider.domain.dataflows import DataFlow, FlowRole, FlowState, Notice
from provider.domain.pagination import Page, PageRequest, page_from_rows

_FIELDS = (
    "profile", "participant_id", "counter_party_id", "agreement_id", "dataset_id", "tenant_id",
    "workspace_id", "target_key", "import_id", "error", "notice_attempts", "next_notice_at",
    "notice_error", "created_at", "updated_at", "delete_after",
)  # fmt: skip
_F = t.dataflows.c


def _values(flow: DataFlow) -> dict[str, Any]:
    return {
        **{name: getattr(flow, name) for name in _FIELDS},
        "role": flow.role.value,
        "state": flow.state.value,
        "notice": flow.notice.value if flow.notice else None,
    }


def _row(row: sa.Row[Any]) -> DataFlow:
    return DataFlow(
        id=row.id,
        control_plane=row.control_plane,
        role=FlowRole(row.role),
        state=FlowState(row.state),
        notice=Notice(row.notice) if row.notice else None,
        **{n: getattr(row, n) for n in _FIELDS},
    )


class SqlDataFlowRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def add(self, flow: DataFlow) -> None:
        stmt = t.dataflows.insert().values(control_plane=flow.control_plane, id=flow.id, **_values(flow))
        await insert_row(self.conn, stmt, f"a data flow for process {flow.id}")

    async def get(self, control_plane: str, flow_id: str, *, for_update: bool = False) -> DataFlow | None:
        query = t.dataflows.select().where(_F.control_plane == control_plane, _F.id == flow_id)
        if for_update:
            query = query.with_for_update()
        row = (await self.conn.execute(query)).first()
        return _row(row) if row else None

    async def update(self, flow: DataFlow) -> None:
        await self.conn.execute(
            t.dataflows.update()
            .where(_F.control_plane == flow.control_plane, _F.id == flow.id)
            .values(**_values(flow))
        )

    async def list(self, page: PageRequest, state: str | None = None) -> Page[DataFlow]:
        query = t.dataflows.select().order_by(_F.control_plane, _F.id).limit(page.size + 1)
        if state is not None:
            query = query.where(_F.state == state)
        if page.after:
            query = query.where(sa.tuple_(_F.control_plane, _F.id) > sa.tuple_(*page.after))
        rows = [_row(row) for row in await self.conn.execute(query)]
        return page_from_rows(rows, page.size, lambda flow: (flow.control_plane, flow.id))

    async def for_import(self, import_id: str) -> DataFlow | None:
        row = (await self.conn.execute(t.dataflows.select().where(_F.import_id == import_id))).first()
        return _row(row) if row else None

    async def for_workspace(self, workspace_id: str) -> builtins.list[DataFlow]:
        query = t.dataflows.select().where(_F.workspace_id == workspace_id).order_by(_F.created_at)
        return [_row(r) for r in await self.conn.execute(query)]

    async def started_consumer_flows(self) -> builtins.list[DataFlow]:
        query = t.dataflows.select().where(
            _F.role == FlowRole.CONSUMER.value, _F.state == FlowState.STARTED.value
        )
        return [_row(r) for r in await self.conn.execute(query)]

    async def started_provider_flows(
        self, limit: int, after: tuple[datetime, str, str] | None = None
    ) -> builtins.list[DataFlow]:
        query = t.dataflows.select().where(
            _F.role == FlowRole.PROVIDER.value, _F.state == FlowState.STARTED.value
        )
        if after is not None:
            query = query.where(sa.tuple_(_F.created_at, _F.control_plane, _F.id) > sa.tuple_(*after))
        query = query.order_by(_F.created_at, _F.control_plane, _F.id).limit(limit)
        return [_row(r) for r in await self.conn.execute(query)]

    async def ended_with_open_workspace(self, limit: int) -> builtins.list[DataFlow]:
        w = t.workspaces.c
        query = (
            t.dataflows.select()
            .join(t.workspaces, w.id == _F.workspace_id)
            .where(
                _F.role == FlowRole.PROVIDER.value,
                _F.state.in_([FlowState.COMPLETED.value, FlowState.TERMINATED.value]),
                _F.delete_after.is_not(None),
                w.state == "active",
            )
            .limit(limit)
        )
        return [_row(r) for r in await self.conn.execute(query)]

    async def deletions_due(self, now: datetime, limit: int) -> builtins.list[DataFlow]:
        query = t.dataflows.select().where(_F.delete_after <= now).order_by(_F.delete_after).limit(limit)
        return [_row(r) for r in await self.conn.execute(query)]

    async def claim_deletion(self, flow: DataFlow, until: datetime) -> bool:
        result = await self.conn.execute(
            t.dataflows.update()
            .where(
                _F.control_plane == flow.control_plane,
                _F.id == flow.id,
                _F.delete_after == flow.delete_after,
            )
            .values(delete_after=until)
        )
        return bool(result.rowcount)

    async def claim_notice(self, flow: DataFlow, until: datetime) -> bool:
        result = await self.conn.execute(
            t.dataflows.update()
            .where(
                _F.control_plane == flow.control_plane,
                _F.id == flow.id,
                _F.notice == (flow.notice.value if flow.notice else None),
                _F.notice_attempts == flow.notice_attempts,
                _F.next_notice_at == flow.next_notice_at,
            )
            .values(next_notice_at=until)
        )
        return bool(result.rowcount)

    async def notices_due(self, now: datetime, limit: int = 100) -> builtins.list[DataFlow]:
        query = (
            t.dataflows.select()
            .where(_F.notice.is_not(None), _F.next_notice_at <= now)
            .order_by(_F.next_notice_at)
            .limit(limit)
        )
        return [_row(r) for r in await self.conn.execute(query)]

    async def next_notice(self) -> datetime | None:
        query = sa.select(sa.func.min(_F.next_notice_at)).where(_F.notice.is_not(None))
        value: datetime | None = (await self.conn.execute(query)).scalar_one()
        return value

    async def register_control_plane(
        self, name: str, controlplane_id: str, endpoint: str, at: datetime
    ) -> None:
        """Record (or replace) where a control plane wants its callbacks."""
        r = t.control_plane_registrations
        await self.conn.execute(r.delete().where(r.c.name == name))
        await self.conn.execute(
            r.insert().values(name=name, controlplane_id=controlplane_id, endpoint=endpoint, registered_at=at)
        )

    async def control_plane_endpoint(self, name: str) -> tuple[str, str] | None:
        """(controlplane id, endpoint) of a control plane's registration, if it made one."""
        r = t.control_plane_registrations
        row = (
            await self.conn.execute(sa.select(r.c.controlplane_id, r.c.endpoint).where(r.c.name == name))
        ).first()
        return (row.controlplane_id, row.endpoint) if row else None

    async def unregister_control_plane(self, name: str, controlplane_id: str) -> bool:
        r = t.control_plane_registrations
        result = await self.conn.execute(
            r.delete().where(r.c.name == name, r.c.controlplane_id == controlplane_id)
        )
        return bool(result.rowcount)
