"""Executions, with labels in a table of their own so that label filters use an index."""

from __future__ import annotations

import builtins
import functools
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from provider.backends.sql import tables as t
from provider.backends.sql.common import id_page, insert_row
from provider.domain.executions import Attempt, Execution, OutputFile, State, Transition
from provider.domain.pagination import Page, PageRequest
from provider.domain.programs import Program, StepLog
from provider.services.ports import ExecutionFilter

_ACTIVE = [s.value for s in State if s.active]


def _values(e: Execution) -> dict[str, Any]:
    return {
        "tenant_id": e.tenant_id,
        "workspace_id": e.workspace_id,
        "asset_id": e.asset_id,
        "asset_version": e.asset_version,
        "inputs": e.inputs,
        "env": e.env,
        "labels": e.labels,
        "state": e.state.value,
        "version": e.version,
        "attempt": e.attempt,
        "exit_code": e.exit_code,
        "reason": e.reason,
        "message": e.message,
        "history": [
            {"state": h.state.value, "at": h.at.isoformat(), **({"reason": h.reason} if h.reason else {})}
            for h in e.history
        ],
        "outputs": [{"name": o.name, "key": o.key, "size": o.size, "sha256": o.sha256} for o in e.outputs],
        "logs_key": e.logs_key,
        "idempotency_key": e.idempotency_key,
        "request_hash": e.request_hash,
        "callback": e.callback,
        "created_at": e.created_at,
        "updated_at": e.updated_at,
        "attempts": [_attempt_json(a) for a in e.attempts] or None,
        "retry_at": e.retry_at,
        "program": e.program.to_json() if e.program else None,
        "steps": [s.to_json() for s in e.steps] or None,
    }


def _attempt_json(a: Attempt) -> dict[str, Any]:
    return {
        "number": a.number,
        "state": a.state.value,
        "reason": a.reason,
        "message": a.message,
        "exit_code": a.exit_code,
        "started_at": a.started_at.isoformat(),
        "ended_at": a.ended_at.isoformat(),
        "logs_key": a.logs_key,
    }


def _attempt(item: dict[str, Any]) -> Attempt:
    return Attempt(
        item["number"],
        State(item["state"]),
        item["reason"],
        item["message"],
        item["exit_code"],
        datetime.fromisoformat(item["started_at"]),
        datetime.fromisoformat(item["ended_at"]),
        item.get("logs_key"),
    )


@functools.cache
def _update_statement(columns: tuple[str, ...]) -> sa.Update:
    """One UPDATE with bound parameters, built once: building it per call costs more than running it."""
    return (
        t.executions.update()
        .where(t.executions.c.id == sa.bindparam("b_id"))
        .values({name: sa.bindparam(f"b_{name}") for name in columns})
    )


def _row(row: sa.Row[Any]) -> Execution:
    return Execution(
        id=row.id,
        tenant_id=row.tenant_id,
        workspace_id=row.workspace_id,
        asset_id=row.asset_id,
        asset_version=row.asset_version,
        inputs=dict(row.inputs),
        env=dict(row.env),
        labels=dict(row.labels),
        state=State(row.state),
        version=row.version,
        attempt=row.attempt,
        exit_code=row.exit_code,
        reason=row.reason,
        message=row.message,
        history=tuple(
            Transition(State(h["state"]), datetime.fromisoformat(h["at"]), h.get("reason"))
            for h in row.history
        ),
        outputs=tuple(OutputFile(o["name"], o["key"], o["size"], o["sha256"]) for o in row.outputs),
        logs_key=row.logs_key,
        idempotency_key=row.idempotency_key,
        request_hash=row.request_hash,
        callback=row.callback,
        created_at=row.created_at,
        updated_at=row.updated_at,
        attempts=tuple(_attempt(a) for a in row.attempts or ()),
        retry_at=row.retry_at,
        program=Program.from_json(row.program) if row.program else None,
        steps=tuple(StepLog.from_json(s) for s in row.steps or ()),
    )


class SqlExecutionRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def add(self, execution: Execution) -> None:
        stmt = t.executions.insert().values(id=execution.id, **_values(execution))
        await insert_row(self.conn, stmt, "an execution with this Idempotency-Key")
        if execution.labels:
            await self.conn.execute(
                t.execution_labels.insert(),
                [{"execution_id": execution.id, "key": k, "value": v} for k, v in execution.labels.items()],
            )

    async def get(self, execution_id: str, *, for_update: bool = False) -> Execution | None:
        query = t.executions.select().where(t.executions.c.id == execution_id)
        if for_update:
            query = query.with_for_update()
        row = (await self.conn.execute(query)).first()
        return _row(row) if row else None

    async def versions(self, execution_ids: builtins.list[str]) -> dict[str, int]:
        c = t.executions.c
        rows = await self.conn.execute(sa.select(c.id, c.version).where(c.id.in_(execution_ids)))
        return {r.id: int(r.version) for r in rows}

    async def by_idempotency_key(self, tenant_id: str, key: str) -> Execution | None:
        c = t.executions.c
        row = (
            await self.conn.execute(
                t.executions.select().where(c.tenant_id == tenant_id, c.idempotency_key == key)
            )
        ).first()
        return _row(row) if row else None

    async def update(self, execution: Execution) -> None:
        values = _values(execution)
        await self.conn.execute(
            _update_statement(tuple(values)),
            {"b_id": execution.id, **{f"b_{k}": v for k, v in values.items()}},
        )

    async def list(self, where: ExecutionFilter, page: PageRequest) -> Page[Execution]:
        c = t.executions.c
        query = t.executions.select()
        if where.tenant_id is not None:
            query = query.where(c.tenant_id == where.tenant_id)
        if where.workspace_id is not None:
            query = query.where(c.workspace_id == where.workspace_id)
        if where.asset_id is not None:
            query = query.where(c.asset_id == where.asset_id)
        if where.states:
            query = query.where(c.state.in_([s.value for s in where.states]))
        if where.created_after is not None:
            query = query.where(c.created_at >= where.created_after)
        if where.created_before is not None:
            query = query.where(c.created_at < where.created_before)
        labels = t.execution_labels.c
        for key, value in where.labels:
            query = query.where(
                sa.exists().where(labels.execution_id == c.id, labels.key == key, labels.value == value)
            )
        return await id_page(self.conn, query, c.id, page, _row, newest_first=True)

    async def active(self) -> builtins.list[Execution]:
        query = t.executions.select().where(t.executions.c.state.in_(_ACTIVE)).order_by(t.executions.c.id)
        return [_row(r) for r in await self.conn.execute(query)]

    async def workspace_activity(self, workspace_id: str) -> tuple[int, datetime | None]:
        c = t.executions.c
        active = sa.func.sum(sa.case((c.state.in_(_ACTIVE), 1), else_=0))
        ended = sa.func.max(
            sa.case((c.state.not_in(_ACTIVE), c.updated_at), else_=None), type_=t.UTCDateTime()
        )
        row = (await self.conn.execute(sa.select(active, ended).where(c.workspace_id == workspace_id))).one()
        return int(row[0] or 0), row[1]

    async def count_active(self, tenant_id: str) -> int:
        c = t.executions.c
        busy = [s for s in _ACTIVE if s != State.QUEUED.value]
        query = (
            sa.select(sa.func.count())
            .select_from(t.executions)
            .where(c.tenant_id == tenant_id, c.state.in_(busy))
        )
        return int((await self.conn.execute(query)).scalar_one())
