"""GA4GH TES tasks, with tags in a table of their own so that tag filters use an index."""

from __future__ import annotations

import builtins
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from provider.backends.sql import tables as t
from provider.backends.sql.common import id_page, insert_new
from provider.domain.executions import Reason, State
from provider.domain.pagination import Page, PageRequest
from provider.domain.tes import StateFilter, TaskRecord
from provider.services.ports import TaskFilter


def _row(row: sa.Row[Any]) -> TaskRecord:
    return TaskRecord(
        id=row.id,
        tenant_id=row.tenant_id,
        name=row.name,
        tags=dict(row.tags),
        document=dict(row.document),
        created_at=row.created_at,
        input_keys=tuple(row.input_keys),
        output_keys=tuple(row.output_keys),
        imports=tuple(row.imports),
        warnings=tuple(row.warnings),
    )


class SqlTesTaskRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def add(self, record: TaskRecord) -> None:
        stmt = t.tes_tasks.insert().values(
            id=record.id,
            tenant_id=record.tenant_id,
            name=record.name,
            tags=record.tags,
            document=record.document,
            input_keys=list(record.input_keys),
            output_keys=list(record.output_keys),
            imports=list(record.imports),
            warnings=list(record.warnings),
            created_at=record.created_at,
        )
        await insert_new(self.conn, stmt, "a task with this id")
        if record.tags:
            await self.conn.execute(
                t.tes_task_tags.insert(),
                [{"task_id": record.id, "key": k, "value": v} for k, v in record.tags.items()],
            )

    async def set_imports(self, task_id: str, import_ids: builtins.list[str]) -> None:
        await self.conn.execute(
            t.tes_tasks.update().where(t.tes_tasks.c.id == task_id).values(imports=import_ids)
        )

    async def get(self, task_id: str) -> TaskRecord | None:
        row = (await self.conn.execute(t.tes_tasks.select().where(t.tes_tasks.c.id == task_id))).first()
        return _row(row) if row else None

    async def list(self, where: TaskFilter, page: PageRequest) -> Page[TaskRecord]:
        c, e = t.tes_tasks.c, t.executions.c
        query = sa.select(t.tes_tasks).join(t.executions, e.id == c.id)
        if where.workspace_id is not None:
            query = query.where(e.workspace_id == where.workspace_id)
        if where.tenant_id is not None:
            query = query.where(c.tenant_id == where.tenant_id)
        if where.name_prefix:  # exactly, in every case (LIKE ignores case on SQLite)
            query = query.where(sa.func.substr(c.name, 1, len(where.name_prefix)) == where.name_prefix)
        if where.state is not None:
            query = _state(query, where.state)
        tags = t.tes_task_tags.c
        for key, value in where.tags:
            match = sa.exists().where(tags.task_id == c.id, tags.key == key)
            if value:  # an empty value matches any value of the key (TES 1.1)
                match = match.where(tags.value == value)
            query = query.where(match)
        return await id_page(self.conn, query, c.id, page, _row, newest_first=True)

    async def waiting(self) -> builtins.list[TaskRecord]:
        """Tasks whose execution is queued waiting for its inputs to be fetched."""
        c, e = t.tes_tasks.c, t.executions.c
        query = (
            sa.select(t.tes_tasks)
            .join(t.executions, e.id == c.id)
            .where(e.state == State.QUEUED.value, e.reason == Reason.AWAITING_INPUTS.value)
            .order_by(c.id)
        )
        return [_row(r) for r in await self.conn.execute(query)]


def _state(query: sa.Select[Any], state: StateFilter) -> sa.Select[Any]:
    e = t.executions.c
    if state.nothing:
        return query.where(sa.false())
    query = query.where(e.state.in_([s.value for s in state.states]))
    if state.reason is not None:
        query = query.where(e.reason == state.reason)
    if state.not_reason is not None:
        query = query.where(sa.or_(e.reason.is_(None), e.reason != state.not_reason))
    return query
