"""Tenants and API keys."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from provider.backends.sql import tables as t
from provider.backends.sql.common import id_page, insert_new, insert_row
from provider.domain.pagination import Page, PageRequest
from provider.domain.tenants import ApiKey, Role, Tenant


class SqlTenantRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    @staticmethod
    def _row(row: sa.Row[Any]) -> Tenant:
        allowed = None if row.allowed_assets is None else frozenset(row.allowed_assets)
        return Tenant(row.id, row.participant_id, row.display_name, row.created_at, allowed)

    async def add(self, tenant: Tenant) -> None:
        stmt = t.tenants.insert().values(
            id=tenant.id,
            participant_id=tenant.participant_id,
            display_name=tenant.display_name,
            created_at=tenant.created_at,
            allowed_assets=None if tenant.allowed_assets is None else sorted(tenant.allowed_assets),
        )
        await insert_row(self.conn, stmt, f"tenant for participant {tenant.participant_id!r}")

    async def set_allowed_assets(self, tenant_id: str, allowed: frozenset[str] | None) -> bool:
        values = None if allowed is None else sorted(allowed)
        stmt = t.tenants.update().where(t.tenants.c.id == tenant_id).values(allowed_assets=values)
        return bool((await self.conn.execute(stmt)).rowcount)

    async def get(self, tenant_id: str) -> Tenant | None:
        row = (await self.conn.execute(t.tenants.select().where(t.tenants.c.id == tenant_id))).first()
        return self._row(row) if row else None

    async def get_by_participant(self, participant_id: str) -> Tenant | None:
        query = t.tenants.select().where(t.tenants.c.participant_id == participant_id)
        row = (await self.conn.execute(query)).first()
        return self._row(row) if row else None

    async def list(self, page: PageRequest) -> Page[Tenant]:
        return await id_page(self.conn, t.tenants.select(), t.tenants.c.id, page, self._row)


class SqlApiKeyRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    @staticmethod
    def _row(row: sa.Row[Any]) -> ApiKey:
        return ApiKey(
            id=row.id,
            tenant_id=row.tenant_id,
            role=Role(row.role),
            name=row.name,
            prefix=row.prefix,
            secret_hash=row.secret_hash,
            created_at=row.created_at,
            expires_at=row.expires_at,
            revoked_at=row.revoked_at,
        )

    async def add(self, key: ApiKey) -> None:
        stmt = t.api_keys.insert().values(
            id=key.id,
            tenant_id=key.tenant_id,
            role=key.role.value,
            name=key.name,
            prefix=key.prefix,
            secret_hash=key.secret_hash,
            created_at=key.created_at,
            expires_at=key.expires_at,
            revoked_at=key.revoked_at,
        )
        await insert_new(self.conn, stmt, "API key")

    async def get(self, key_id: str) -> ApiKey | None:
        row = (await self.conn.execute(t.api_keys.select().where(t.api_keys.c.id == key_id))).first()
        return self._row(row) if row else None

    async def find_by_hash(self, secret_hash: str) -> ApiKey | None:
        query = t.api_keys.select().where(t.api_keys.c.secret_hash == secret_hash)
        row = (await self.conn.execute(query)).first()
        return self._row(row) if row else None

    async def list_for_tenant(self, tenant_id: str, page: PageRequest) -> Page[ApiKey]:
        query = t.api_keys.select().where(t.api_keys.c.tenant_id == tenant_id)
        return await id_page(self.conn, query, t.api_keys.c.id, page, self._row)

    async def revoke(self, key_id: str, at: datetime) -> None:
        await self.conn.execute(
            t.api_keys.update()
            .where(t.api_keys.c.id == key_id, t.api_keys.c.revoked_at.is_(None))
            .values(revoked_at=at)
        )

    async def count_usable_admin_keys(self, now: datetime) -> int:
        c = t.api_keys.c
        query = (
            sa.select(sa.func.count())
            .select_from(t.api_keys)
            .where(
                c.role == Role.ADMIN.value,
                c.revoked_at.is_(None),
                sa.or_(c.expires_at.is_(None), c.expires_at > now),
            )
        )
        return int((await self.conn.execute(query)).scalar_one())
