"""The asset catalog."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from provider.backends.sql import tables as t
from provider.backends.sql.common import insert_row
from provider.domain.assets import Asset
from provider.domain.pagination import Page, PageRequest, page_from_rows


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
        await insert_row(self.conn, stmt, f"asset {asset.id} {asset.version}")
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
