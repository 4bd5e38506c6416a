"""Workspaces and their tokens."""

from __future__ import annotations

import builtins
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from provider.backends.sql import tables as t
from provider.backends.sql.common import id_page, insert_new
from provider.domain.pagination import Page, PageRequest
from provider.domain.tokens import WorkspaceToken
from provider.domain.workspaces import Quota, Scope, Usage, Workspace, WorkspaceState


def _workspace_values(ws: Workspace) -> dict[str, Any]:
    return {
        "tenant_id": ws.tenant_id,
        "name": ws.name,
        "labels": ws.labels,
        "location": ws.location,
        "quota_bytes": ws.quota.max_bytes,
        "quota_objects": ws.quota.max_objects,
        "used_bytes": ws.usage.bytes,
        "used_objects": ws.usage.objects,
        "state": ws.state.value,
        "created_at": ws.created_at,
        "updated_at": ws.updated_at,
        "usage_checked_at": ws.usage_checked_at,
        "deleted_at": ws.deleted_at,
        "allowed_assets": _ids(ws.allowed_assets),
    }


def _ids(values: frozenset[str] | None) -> list[str] | None:
    return None if values is None else sorted(values)


def _id_set(values: list[str] | None) -> frozenset[str] | None:
    return None if values is None else frozenset(values)


class SqlWorkspaceRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    @staticmethod
    def _row(row: sa.Row[Any]) -> Workspace:
        return Workspace(
            id=row.id,
            tenant_id=row.tenant_id,
            name=row.name,
            labels=dict(row.labels),
            location=row.location,
            quota=Quota(row.quota_bytes, row.quota_objects),
            usage=Usage(row.used_bytes, row.used_objects),
            state=WorkspaceState(row.state),
            created_at=row.created_at,
            updated_at=row.updated_at,
            usage_checked_at=row.usage_checked_at,
            deleted_at=row.deleted_at,
            allowed_assets=_id_set(row.allowed_assets),
        )

    async def add(self, workspace: Workspace) -> None:
        stmt = t.workspaces.insert().values(id=workspace.id, **_workspace_values(workspace))
        await insert_new(self.conn, stmt, f"workspace {workspace.id}")

    async def get(self, workspace_id: str, *, for_update: bool = False) -> Workspace | None:
        query = t.workspaces.select().where(t.workspaces.c.id == workspace_id)
        if for_update:
            query = query.with_for_update()
        row = (await self.conn.execute(query)).first()
        return self._row(row) if row else None

    async def at_location(self, locations: builtins.list[str]) -> builtins.list[Workspace]:
        query = t.workspaces.select().where(t.workspaces.c.location.in_(locations))
        return [self._row(r) for r in await self.conn.execute(query)]

    async def list(self, page: PageRequest, tenant_id: str | None) -> Page[Workspace]:
        c = t.workspaces.c
        query = t.workspaces.select().where(c.state != WorkspaceState.DELETED.value)
        if tenant_id is not None:
            query = query.where(c.tenant_id == tenant_id)
        return await id_page(self.conn, query, c.id, page, self._row)

    async def update(self, workspace: Workspace) -> None:
        await self.conn.execute(
            t.workspaces.update()
            .where(t.workspaces.c.id == workspace.id)
            .values(**_workspace_values(workspace))
        )

    async def in_state(self, state: WorkspaceState) -> builtins.list[Workspace]:
        query = t.workspaces.select().where(t.workspaces.c.state == state.value).order_by(t.workspaces.c.id)
        return [self._row(r) for r in await self.conn.execute(query)]


class SqlTokenRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    @staticmethod
    def _row(row: sa.Row[Any]) -> WorkspaceToken:
        return WorkspaceToken(
            id=row.id,
            workspace_id=row.workspace_id,
            tenant_id=row.tenant_id,
            scopes=frozenset(Scope(s) for s in row.scopes),
            name=row.name,
            created_at=row.created_at,
            expires_at=row.expires_at,
            revoked_at=row.revoked_at,
        )

    async def add(self, token: WorkspaceToken) -> None:
        stmt = t.workspace_tokens.insert().values(
            id=token.id,
            workspace_id=token.workspace_id,
            tenant_id=token.tenant_id,
            scopes=sorted(s.value for s in token.scopes),
            name=token.name,
            created_at=token.created_at,
            expires_at=token.expires_at,
            revoked_at=token.revoked_at,
        )
        await insert_new(self.conn, stmt, "workspace token")

    async def get(self, token_id: str) -> WorkspaceToken | None:
        query = t.workspace_tokens.select().where(t.workspace_tokens.c.id == token_id)
        row = (await self.conn.execute(query)).first()
        return self._row(row) if row else None

    async def list_for_workspace(self, workspace_id: str, page: PageRequest) -> Page[WorkspaceToken]:
        c = t.workspace_tokens.c
        query = t.workspace_tokens.select().where(c.workspace_id == workspace_id)
        return await id_page(self.conn, query, c.id, page, self._row)

    async def revoke(self, token_id: str, at: datetime) -> None:
        c = t.workspace_tokens.c
        await self.conn.execute(
            t.workspace_tokens.update().where(c.id == token_id, c.revoked_at.is_(None)).values(revoked_at=at)
        )

    async def revoke_workspace(
        self, workspace_id: str, at: datetime, sparing: frozenset[str] = frozenset()
    ) -> list[str]:
        c = t.workspace_tokens.c
        live = (c.workspace_id == workspace_id) & c.revoked_at.is_(None)
        if sparing:
            live = live & c.name.not_in(sorted(sparing))
        ids = [row.id for row in await self.conn.execute(sa.select(c.id).where(live))]
        if ids:
            await self.conn.execute(t.workspace_tokens.update().where(c.id.in_(ids)).values(revoked_at=at))
        return ids
