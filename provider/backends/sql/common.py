"""Helpers shared by the SQL repositories."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from provider.domain.errors import Conflict


async def insert_row(conn: AsyncConnection, stmt: sa.Insert, what: str) -> None:
    """Insert inside a savepoint so that a unique violation leaves the transaction usable."""
    try:
        async with conn.begin_nested():
            await conn.execute(stmt)
    except IntegrityError as exc:
        raise Conflict(f"{what} already exists") from exc
