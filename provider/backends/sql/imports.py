"""Imports pulled from remote HTTP endpoints."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from provider.backends.sql import tables as t
from provider.backends.sql.common import id_page, insert_row
from provider.domain.imports import Import, ImportState
from provider.domain.pagination import Page, PageRequest

_FIELDS = (
    "workspace_id", "tenant_id", "source_url", "headers", "target_key", "expected_size", "expected_sha256",
    "bytes_done", "bytes_total", "attempts", "upstream_status", "error", "sha256",
    "created_at", "updated_at", "finished_at",
)  # fmt: skip


def _values(item: Import) -> dict[str, Any]:
    values = {name: getattr(item, name) for name in _FIELDS}
    values["state"] = item.state.value
    return values


class SqlImportRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    @staticmethod
    def _row(row: sa.Row[Any]) -> Import:
        fields = {name: getattr(row, name) for name in _FIELDS}
        fields["headers"] = dict(fields["headers"])
        return Import(id=row.id, state=ImportState(row.state), **fields)

    async def add(self, item: Import) -> None:
        await insert_row(
            self.conn, t.imports.insert().values(id=item.id, **_values(item)), f"import {item.id}"
        )

    async def get(self, import_id: str) -> Import | None:
        row = (await self.conn.execute(t.imports.select().where(t.imports.c.id == import_id))).first()
        return self._row(row) if row else None

    async def list_for_workspace(self, workspace_id: str, page: PageRequest) -> Page[Import]:
        c = t.imports.c
        query = t.imports.select().where(c.workspace_id == workspace_id)
        return await id_page(self.conn, query, c.id, page, self._row)

    async def update(self, item: Import) -> None:
        await self.conn.execute(t.imports.update().where(t.imports.c.id == item.id).values(**_values(item)))

    async def in_states(self, states: set[ImportState]) -> list[Import]:
        query = (
            t.imports.select()
            .where(t.imports.c.state.in_([s.value for s in states]))
            .order_by(t.imports.c.id)
        )
        return [self._row(r) for r in await self.conn.execute(query)]
