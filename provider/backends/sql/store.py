"""SqlStore: the `Store` port over SQLAlchemy 2 async Core."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from provider.backends.sql import tables as t
from provider.domain.assets import Asset
from provider.domain.errors import Conflict
from provider.domain.pagination import Page, PageRequest, page_from_rows
from provider.domain.tenants import ApiKey, Role, Tenant


def default_sqlite_url(data_dir: Path) -> str:
    return f"sqlite+aiosqlite:///{(data_dir / 'provider.db').resolve()}"


def _configure_sqlite(engine: AsyncEngine) -> None:
    """WAL for concurrent readers, and write transactions that take the lock up front.

    A deferred SQLite transaction that reads and then writes can fail with SQLITE_BUSY when
    another writer got in between; `BEGIN IMMEDIATE` waits (busy_timeout) instead.
    """

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=15000")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        mode = conn.get_execution_options().get("sqlite_begin", "IMMEDIATE")
        conn.exec_driver_sql(f"BEGIN {mode}")


class SqlStore:
    def __init__(
        self, url: str, *, pool_size: int = 10, echo: bool = False, schema: str | None = None
    ) -> None:
        self.url = sa.make_url(url)
        self.dialect = self.url.get_backend_name()
        kwargs: dict[str, Any] = {"echo": echo, "pool_pre_ping": True}
        if self.dialect == "sqlite":
            if self.url.database and self.url.database != ":memory:":
                Path(self.url.database).parent.mkdir(parents=True, exist_ok=True)
        elif self.dialect == "postgresql":
            kwargs.update(pool_size=pool_size, max_overflow=pool_size)
            if schema:
                kwargs["connect_args"] = {"server_settings": {"search_path": schema}}
        else:
            raise ValueError(
                f"unsupported database {self.dialect!r}: use sqlite+aiosqlite or postgresql+asyncpg"
            )
        self.engine = create_async_engine(self.url, **kwargs)
        if self.dialect == "sqlite":
            _configure_sqlite(self.engine)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[SqlUnitOfWork]:
        async with self.engine.begin() as conn:
            yield SqlUnitOfWork(conn)

    @asynccontextmanager
    async def read(self) -> AsyncIterator[SqlUnitOfWork]:
        async with self.engine.connect() as raw:
            conn = await raw.execution_options(sqlite_begin="DEFERRED")
            async with conn.begin():
                yield SqlUnitOfWork(conn)

    async def ping(self) -> None:
        async with self.engine.connect() as conn:
            await conn.execute(sa.text("SELECT 1"))

    async def close(self) -> None:
        await self.engine.dispose()


class SqlUnitOfWork:
    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn
        self.tenants = SqlTenantRepository(conn)
        self.api_keys = SqlApiKeyRepository(conn)
        self.assets = SqlAssetRepository(conn)


async def _insert(conn: AsyncConnection, stmt: sa.Insert, what: str) -> None:
    """Insert inside a savepoint so that a unique violation leaves the transaction usable."""
    try:
        async with conn.begin_nested():
            await conn.execute(stmt)
    except IntegrityError as exc:
        raise Conflict(f"{what} already exists") from exc


class SqlTenantRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    @staticmethod
    def _row(row: sa.Row[Any]) -> Tenant:
        return Tenant(row.id, row.participant_id, row.display_name, row.created_at)

    async def add(self, tenant: Tenant) -> None:
        stmt = t.tenants.insert().values(
            id=tenant.id,
            participant_id=tenant.participant_id,
            display_name=tenant.display_name,
            created_at=tenant.created_at,
        )
        await _insert(self.conn, stmt, f"tenant for participant {tenant.participant_id!r}")

    async def get(self, tenant_id: str) -> Tenant | None:
        row = (await self.conn.execute(t.tenants.select().where(t.tenants.c.id == tenant_id))).first()
        return self._row(row) if row else None

    async def get_by_participant(self, participant_id: str) -> Tenant | None:
        query = t.tenants.select().where(t.tenants.c.participant_id == participant_id)
        row = (await self.conn.execute(query)).first()
        return self._row(row) if row else None

    async def list(self, page: PageRequest) -> Page[Tenant]:
        query = t.tenants.select().order_by(t.tenants.c.id).limit(page.size + 1)
        if page.after:
            query = query.where(t.tenants.c.id > page.after[0])
        rows = [self._row(r) for r in await self.conn.execute(query)]
        return page_from_rows(rows, page.size, lambda x: (x.id,))


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
        await _insert(self.conn, stmt, "API key")

    async def get(self, key_id: str) -> ApiKey | None:
        row = (await self.conn.execute(t.api_keys.select().where(t.api_keys.c.id == key_id))).first()
        return self._row(row) if row else None

    async def find_by_hash(self, secret_hash: str) -> ApiKey | None:
        query = t.api_keys.select().where(t.api_keys.c.secret_hash == secret_hash)
        row = (await self.conn.execute(query)).first()
        return self._row(row) if row else None

    async def list_for_tenant(self, tenant_id: str, page: PageRequest) -> Page[ApiKey]:
        query = (
            t.api_keys.select()
            .where(t.api_keys.c.tenant_id == tenant_id)
            .order_by(t.api_keys.c.id)
            .limit(page.size + 1)
        )
        if page.after:
            query = query.where(t.api_keys.c.id > page.after[0])
        rows = [self._row(r) for r in await self.conn.execute(query)]
        return page_from_rows(rows, page.size, lambda x: (x.id,))

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


class SqlAssetRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    @staticmethod
    def _row(row: sa.Row[Any]) -> Asset:
        return Asset.model_validate(
            {
                **row.spec,
                "id": row.id,
                "version": row.version,
                "created_at": row.created_at,
                "updated_at": row.updated_at,
            }
        )

    async def upsert(self, asset: Asset) -> bool:
        assert asset.created_at is not None and asset.updated_at is not None
        spec = asset.spec().model_dump(mode="json")
        key = (t.assets.c.id == asset.id) & (t.assets.c.version == asset.version)
        result = await self.conn.execute(
            t.assets.update()
            .where(key)
            .values(title=asset.title, description=asset.description, spec=spec, updated_at=asset.updated_at)
        )
        if result.rowcount:
            return False
        stmt = t.assets.insert().values(
            id=asset.id,
            version=asset.version,
            title=asset.title,
            description=asset.description,
            spec=spec,
            created_at=asset.created_at,
            updated_at=asset.updated_at,
        )
        await _insert(self.conn, stmt, f"asset {asset.id} {asset.version}")
        return True

    async def get(self, asset_id: str, version: str) -> Asset | None:
        query = t.assets.select().where(t.assets.c.id == asset_id, t.assets.c.version == version)
        row = (await self.conn.execute(query)).first()
        return self._row(row) if row else None

    async def versions(self, asset_id: str) -> list[Asset]:
        query = t.assets.select().where(t.assets.c.id == asset_id)
        return [self._row(r) for r in await self.conn.execute(query)]

    async def list(self, page: PageRequest, asset_id: str | None, text: str | None) -> Page[Asset]:
        c = t.assets.c
        query = t.assets.select().order_by(c.id, c.version).limit(page.size + 1)
        if asset_id is not None:
            query = query.where(c.id == asset_id)
        if text:
            pattern = "%" + text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            query = query.where(
                sa.or_(
                    sa.func.lower(c.title).like(pattern, escape="\\"),
                    sa.func.lower(c.description).like(pattern, escape="\\"),
                )
            )
        if page.after:
            after_id, after_version = page.after
            query = query.where(sa.or_(c.id > after_id, sa.and_(c.id == after_id, c.version > after_version)))
        rows = [self._row(r) for r in await self.conn.execute(query)]
        return page_from_rows(rows, page.size, lambda x: (x.id, x.version))

    async def delete(self, asset_id: str, version: str | None) -> int:
        query = t.assets.delete().where(t.assets.c.id == asset_id)
        if version is not None:
            query = query.where(t.assets.c.version == version)
        return int((await self.conn.execute(query)).rowcount)
