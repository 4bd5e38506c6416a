"""Ports: the small interfaces that backends implement (see provider/backends/)."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from datetime import datetime
from typing import Protocol

from provider.domain.assets import Asset
from provider.domain.pagination import Page, PageRequest
from provider.domain.tenants import ApiKey, Tenant


class Clock(Protocol):
    def __call__(self) -> datetime:
        """The current time, timezone-aware (UTC)."""


class TenantRepository(Protocol):
    async def add(self, tenant: Tenant) -> None:
        """Insert; raises Conflict if the participant id is taken."""

    async def get(self, tenant_id: str) -> Tenant | None:
        """The tenant with this id, or None."""

    async def get_by_participant(self, participant_id: str) -> Tenant | None:
        """The tenant for a data space participant id, or None."""

    async def list(self, page: PageRequest) -> Page[Tenant]:
        """Tenants in creation order."""


class ApiKeyRepository(Protocol):
    async def add(self, key: ApiKey) -> None:
        """Insert a key (its hash only)."""

    async def get(self, key_id: str) -> ApiKey | None:
        """The key with this id, revoked or not."""

    async def find_by_hash(self, secret_hash: str) -> ApiKey | None:
        """The key whose secret hashes to `secret_hash`, or None."""

    async def list_for_tenant(self, tenant_id: str, page: PageRequest) -> Page[ApiKey]:
        """A tenant's keys in creation order, revoked ones included."""

    async def revoke(self, key_id: str, at: datetime) -> None:
        """Mark the key revoked (idempotent: an earlier revocation time is kept)."""

    async def count_usable_admin_keys(self, now: datetime) -> int:
        """How many admin keys are neither revoked nor expired."""


class AssetRepository(Protocol):
    async def upsert(self, asset: Asset) -> bool:
        """Insert or replace by (id, version); True when it was created."""

    async def get(self, asset_id: str, version: str) -> Asset | None:
        """One version of an asset, or None."""

    async def versions(self, asset_id: str) -> list[Asset]:
        """Every stored version of an asset (any order)."""

    async def list(self, page: PageRequest, asset_id: str | None, text: str | None) -> Page[Asset]:
        """Assets ordered by (id, version); filter by id and by a substring of title or description."""

    async def delete(self, asset_id: str, version: str | None) -> int:
        """Delete one version, or every version when `version` is None; returns how many."""


class UnitOfWork(Protocol):
    """One transaction: every write through these repositories commits together or not at all."""

    @property
    def tenants(self) -> TenantRepository: ...

    @property
    def api_keys(self) -> ApiKeyRepository: ...

    @property
    def assets(self) -> AssetRepository: ...


class Store(Protocol):
    def transaction(self) -> AbstractAsyncContextManager[UnitOfWork, bool | None]:
        """Open a read-write transaction; it commits when the block exits normally, else rolls back."""

    def read(self) -> AbstractAsyncContextManager[UnitOfWork, bool | None]:
        """Open a read-only transaction (cheaper: it takes no write lock)."""

    async def ping(self) -> None:
        """Raise if the store cannot be reached."""

    async def close(self) -> None:
        """Release connections."""
