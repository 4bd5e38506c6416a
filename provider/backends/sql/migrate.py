"""Run Alembic migrations programmatically (`provider migrate`, or at start-up).

A start-up whose schema is current (the usual restart) reads the stored revision with one query
and imports none of Alembic: the head is the highest numbered script (the history is one line,
0001, 0002, ..., which tests/test_store.py checks against Alembic's own view).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError

from provider.backends.sql.store import SqlStore

if TYPE_CHECKING:
    from alembic.config import Config

log = logging.getLogger(__name__)
MIGRATIONS = Path(__file__).with_name("migrations")
HEAD = max(path.name.split("_", 1)[0] for path in (MIGRATIONS / "versions").glob("[0-9][0-9][0-9][0-9]_*.py"))


def _config(connection: sa.Connection) -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


# Any constant: replicas starting together take turns on it (PostgreSQL advisory lock).
MIGRATION_LOCK = 0x70726F76


class NewerSchema(RuntimeError):
    """The database was migrated by newer code than this."""


async def oldest_code(store: SqlStore) -> str | None:
    """The oldest code revision the schema admits (`schema_compatibility`); None without it."""
    table = sa.table("schema_compatibility", sa.column("oldest_code"))
    async with store.engine.connect() as conn:
        try:
            return (await conn.execute(sa.select(table.c.oldest_code))).scalar_one_or_none()
        except DBAPIError as exc:
            if not _missing_table(exc):
                raise
            return None


async def check_newer(store: SqlStore, current: str) -> bool:
    """Whether a schema at `current` is newer than this code; raises NewerSchema when this code
    may not run on it (docs/operations.md, "Upgrades and rollbacks")."""
    if current <= HEAD:
        return False
    oldest = await oldest_code(store)
    if oldest is None or oldest > HEAD:
        raise NewerSchema(
            f"database schema is at {current}, which code at {HEAD} may not run on "
            f"(it admits code at {oldest or 'its own revision'} or newer): deploy the newer release"
        )
    log.warning(
        "database schema is newer than this code, and admits it",
        extra={"schema_revision": current, "code_revision": HEAD, "oldest_code": oldest},
    )
    return True


async def upgrade(store: SqlStore, revision: str = "head") -> None:
    """Bring the schema up to `revision` in one transaction.

    On PostgreSQL the transaction first takes an advisory lock, so that replicas starting at the
    same time migrate one after the other (the later ones find nothing left to do) instead of
    failing on each other's tables.
    """
    before = await current_revision(store)
    if revision == "head" and before == HEAD:
        return
    if revision == "head" and before is not None and await check_newer(store, before):
        return  # a rolling upgrade: newer replicas migrated already
    from alembic import command

    async with store.engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            await conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
        await conn.run_sync(lambda sync: command.upgrade(_config(sync), revision))
    after = await current_revision(store)
    if after != before:
        log.info("database schema migrated", extra={"from_revision": before, "to_revision": after})


async def current_revision(store: SqlStore) -> str | None:
    """The revision the database is at; None before the first migration."""
    version = sa.table("alembic_version", sa.column("version_num"))
    async with store.engine.connect() as conn:
        try:
            rows = (await conn.execute(sa.select(version.c.version_num))).scalars().all()
        except DBAPIError as exc:
            if not _missing_table(exc):
                raise  # the database is unreachable or refuses: not "never migrated"
            return None
    return rows[0] if len(rows) == 1 else None


def _missing_table(exc: DBAPIError) -> bool:
    text = str(exc.orig).lower()
    return "no such table" in text or ("alembic_version" in text and "does not exist" in text)


def head_revision() -> str | None:
    """The newest revision, as Alembic reads the scripts."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return ScriptDirectory.from_config(config).get_current_head()
