"""Run Alembic migrations programmatically (`provider migrate`, or at start-up)."""

from __future__ import annotations

import logging
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from provider.backends.sql.store import SqlStore

log = logging.getLogger(__name__)
MIGRATIONS = Path(__file__).with_name("migrations")


def _config(connection: sa.Connection) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


# Any constant: replicas starting together take turns on it (PostgreSQL advisory lock).
MIGRATION_LOCK = 0x70726F76


async def upgrade(store: SqlStore, revision: str = "head") -> None:
    """Bring the schema up to `revision` in one transaction.

    On PostgreSQL the transaction first takes an advisory lock, so that replicas starting at the
    same time migrate one after the other (the later ones find nothing left to do) instead of
    failing on each other's tables.
    """
    before = await current_revision(store)
    async with store.engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            await conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
        await conn.run_sync(lambda sync: command.upgrade(_config(sync), revision))
    after = await current_revision(store)
    if after != before:
        log.info("database schema migrated", extra={"from_revision": before, "to_revision": after})


async def current_revision(store: SqlStore) -> str | None:
    async with store.engine.connect() as conn:
        return await conn.run_sync(lambda sync: MigrationContext.configure(sync).get_current_revision())


def head_revision() -> str | None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return ScriptDirectory.from_config(config).get_current_head()
