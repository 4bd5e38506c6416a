"""The asset catalog: what consumers can run."""

from __future__ import annotations

from collections.abc import Iterable

from provider.domain.assets import Asset, AssetSpec, identity_problems, latest
from provider.domain.errors import FieldProblem, InvalidInput, NotFound
from provider.domain.pagination import Page, PageRequest
from provider.services.ports import Clock, Store, UnitOfWork


class AssetService:
    def __init__(self, store: Store, clock: Clock) -> None:
        self.store = store
        self.clock = clock

    async def list(
        self, page: PageRequest, asset_id: str | None = None, text: str | None = None
    ) -> Page[Asset]:
        async with self.store.read() as uow:
            return await uow.assets.list(page, asset_id, text)

    async def get(self, asset_id: str, version: str | None = None) -> Asset:
        """One version, or the highest version when `version` is None."""
        async with self.store.read() as uow:
            if version is not None:
                found = await uow.assets.get(asset_id, version)
            else:
                found = latest(await uow.assets.versions(asset_id))
        if found is None:
            raise NotFound("asset", asset_id if version is None else f"{asset_id} {version}")
        return found

    async def granted_by(self, offering: str) -> frozenset[str]:
        """The ids of the catalog assets whose `offerings` name this data space offering."""
        granted: set[str] = set()
        page = PageRequest(size=500)
        while True:
            found = await self.list(page)
            granted.update(a.id for a in found.items if offering in a.offerings)
            if found.next_after is None:
                return frozenset(granted)
            page = PageRequest(page.size, found.next_after)

    async def put(self, asset_id: str, version: str, spec: AssetSpec) -> tuple[Asset, bool]:
        """Create or replace one version; returns the stored asset and whether it is new."""
        async with self.store.transaction() as uow:
            return await self._put(uow, asset_id, version, spec)

    async def check(self, asset_id: str, version: str, spec: AssetSpec) -> Asset:
        """The asset `put` would store, validated the same way, with nothing stored (a dry run)."""
        async with self.store.read() as uow:
            return self._build(asset_id, version, spec, await uow.assets.get(asset_id, version))

    async def load(self, assets: Iterable[Asset]) -> int:
        """Upsert assets read from files at start-up, all in one transaction; returns the count."""
        items = list(assets)
        async with self.store.transaction() as uow:
            for asset in items:
                await self._put(uow, asset.id, asset.version, asset.spec())
        return len(items)

    async def _put(self, uow: UnitOfWork, asset_id: str, version: str, spec: AssetSpec) -> tuple[Asset, bool]:
        asset = self._build(asset_id, version, spec, await uow.assets.get(asset_id, version))
        return asset, await uow.assets.upsert(asset)

    def _build(self, asset_id: str, version: str, spec: AssetSpec, existing: Asset | None) -> Asset:
        problems = [FieldProblem(f"path.{name}", msg) for name, msg in identity_problems(asset_id, version)]
        if problems:
            raise InvalidInput("invalid asset id or version", problems)
        now = self.clock()
        return Asset.model_validate(
            {
                **spec.model_dump(),
                "id": asset_id,
                "version": version,
                "created_at": existing.created_at if existing else now,
                "updated_at": now,
            }
        )

    async def delete(self, asset_id: str, version: str | None = None) -> None:
        async with self.store.transaction() as uow:
            deleted = await uow.assets.delete(asset_id, version)
        if not deleted:
            raise NotFound("asset", asset_id if version is None else f"{asset_id} {version}")
