"""The relational store: SQLite (aiosqlite) by default, PostgreSQL (asyncpg) for several replicas."""

from provider.backends.sql.store import SqlStore, default_sqlite_url

__all__ = ["SqlStore", "default_sqlite_url"]
