"""Helpers shared by the SQL repositories."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, TypeVar

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from provider.domain.errors import Conflict
from provider.domain.pagination import Page, PageRequest, page_from_rows


class _HasId(Protocol):
    @property
    def id(self) -> str: ...


T = TypeVar("T", bound=_HasId)


async def insert_row(conn: AsyncConnection, stmt: sa.Insert, what: str) -> None:
    """Insert inside a savepoint so that a unique violation leaves the transaction usable."""
    try:
        async with conn.begin_nested():
            await conn.execute(stmt)
    except IntegrityError as exc:
        raise Conflict(f"{what} already exists") from exc


async def insert_new(conn: AsyncConnection, stmt: sa.Insert, what: str) -> None:
    """Insert a row under a fresh id, which nothing else can hold: no savepoint, two round trips
    fewer on the single writer's time (SQLite). Should it fail after all, the whole transaction
    is lost with it; use insert_row where a conflict is expected and the transaction goes on."""
    try:
        await conn.execute(stmt)
    except IntegrityError as exc:
        raise Conflict(f"{what} already exists") from exc


async def id_page(
    conn: AsyncConnection,
    query: sa.Select[Any],
    column: sa.ColumnElement[str],
    page: PageRequest,
    to_item: Callable[[sa.Row[Any]], T],
    *,
    newest_first: bool = False,
) -> Page[T]:
    """One page of `query` in id order (ids sort by creation time), after `page.after`."""
    query = query.order_by(column.desc() if newest_first else column).limit(page.size + 1)
    if page.after:
        query = query.where(column < page.after[0] if newest_first else column > page.after[0])
    rows = [to_item(row) for row in await conn.execute(query)]
    return page_from_rows(rows, page.size, lambda item: (item.id,))
