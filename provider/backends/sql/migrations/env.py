"""Alembic environment: always driven programmatically by provider.backends.sql.migrate."""

from __future__ import annotations

from alembic import context

from provider.backends.sql.tables import metadata

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",  # SQLite alters tables by copying them
    compare_type=True,
)
context.run_migrations()
