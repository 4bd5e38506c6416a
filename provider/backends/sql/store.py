"""SqlStore: the `Store` port over SQLAlchemy 2 async Core."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from provider.backends.sql.assets import SqlAssetRepository
from provider.backends.sql.dataflows import SqlDataFlowRepository
from provider.backends.sql.events import SqlEventRepository
from provider.backends.sql.executions import SqlExecutionRepository
from provider.backends.sql.imports import SqlImportRepository
from provider.backends.sql.provisioning import SqlProvisioningRepository, SqlTransferRegistrationRepository
from provider.backends.sql.stats import SqlStatsRepository
from provider.backends.sql.subscriptions import SqlDeliveryRepository, SqlSubscriptionRepository
from provider.backends.sql.tenants import SqlApiKeyRepository, SqlTenantRepository
from provider.backends.sql.tes import SqlTesTaskRepository
from provider.backends.sql.workspaces import SqlTokenRepository, SqlWorkspaceRepository
from provider.domain.errors import Unavailable
from provider.tracing import Tracing


def _contended(exc: OperationalError) -> bool:
    text = str(exc.orig).lower()
    return "database is locked" in text or "database is busy" in text


def default_sqlite_url(data_dir: Path) -> str:
    return f"sqlite+aiosqlite:///{(data_dir / 'provider.db').resolve()}"


def _configure_sqlite(engine: AsyncEngine, busy_timeout_ms: int) -> None:
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
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        mode = conn.get_execution_options().get("sqlite_begin", "IMMEDIATE")
        conn.exec_driver_sql(f"BEGIN {mode}")


class SqlStore:
    def __init__(
        self,
        url: str,
        *,
        pool_size: int = 10,
        echo: bool = False,
        schema: str | None = None,
        busy_timeout_ms: int = 15_000,
    ) -> None:
        self.url = sa.make_url(url)
        self.dialect = self.url.get_backend_name()
        # A network database may drop idle connections; a local SQLite file does not.
        kwargs: dict[str, Any] = {"echo": echo, "pool_pre_ping": self.dialect == "postgresql"}
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
        self._writers: asyncio.Lock | None = None
        self.tracing = Tracing.off()  # the composition root sets the service's
        if self.dialect == "sqlite":
            _configure_sqlite(self.engine, busy_timeout_ms)
            self._writers = asyncio.Lock()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[SqlUnitOfWork]:
        # SQLite has one writer at a time and its busy handler is not fair: under load some
        # waiters starve. Writers of this process queue here instead, first come first served.
        with self.tracing.span("store.transaction"):
            async with self._writers or contextlib.nullcontext(), self._transaction() as uow:
                yield uow

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[SqlUnitOfWork]:
        try:
            async with self.engine.begin() as conn:
                yield SqlUnitOfWork(conn)
        except OperationalError as exc:
            if _contended(exc):  # SQLite's single writer stayed busy past busy_timeout
                raise Unavailable("the database is busy; try again") from exc
            raise

    @asynccontextmanager
    async def read(self) -> AsyncIterator[SqlUnitOfWork]:
        with self.tracing.span("store.read"):
            async with self.engine.connect() as raw:
                conn = await raw.execution_options(sqlite_begin="DEFERRED")
                async with conn.begin():
                    yield SqlUnitOfWork(conn)

    def local_file(self) -> Path | None:
        """The SQLite database file, or None for a server (PostgreSQL) that replicas share."""
        if self.dialect != "sqlite" or self.url.database in (None, "", ":memory:"):
            return None
        return Path(str(self.url.database)).resolve()

    async def prepare(self, migrate: bool) -> None:
        """Bring the schema up to date, or (migrate False) check that it is."""
        from provider.backends.sql import migrate as migrations  # only when starting

        if migrate:
            await migrations.upgrade(self)
            return
        current, head = await migrations.current_revision(self), migrations.HEAD
        if current is not None and await migrations.check_newer(self, current):
            return
        if current != head:
            raise RuntimeError(
                f"database schema is at {current}, the service needs {head}: run 'provider migrate'"
            )

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
        self.workspaces = SqlWorkspaceRepository(conn)
        self.tokens = SqlTokenRepository(conn)
        self.imports = SqlImportRepository(conn)
        self.executions = SqlExecutionRepository(conn)
        self.provisionings = SqlProvisioningRepository(conn)
        self.transfers = SqlTransferRegistrationRepository(conn)
        self.dataflows = SqlDataFlowRepository(conn)
        self.events = SqlEventRepository(conn)
        self.subscriptions = SqlSubscriptionRepository(conn)
        self.deliveries = SqlDeliveryRepository(conn, conn.dialect.name)
        self.tes_tasks = SqlTesTaskRepository(conn)
        self.stats = SqlStatsRepository(conn)
