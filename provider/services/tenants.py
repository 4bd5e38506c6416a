"""Tenants and their API keys."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from provider.aio import SingleFlight
from provider.domain.errors import Conflict, FieldProblem, InvalidInput, NotFound
from provider.domain.ids import new_id
from provider.domain.pagination import Page, PageRequest
from provider.domain.tenants import (
    ApiKey,
    Role,
    Tenant,
    display_prefix,
    generate_api_key_secret,
    hash_secret,
)
from provider.services.ports import Clock, Store

BOOTSTRAP_KEY_NAME = "bootstrap"


log = logging.getLogger(__name__)


@dataclass(frozen=True)
class IssuedKey:
    """A key just created: the only moment its secret is known."""

    key: ApiKey
    secret: str


class TenantService:
    def __init__(
        self,
        store: Store,
        clock: Clock,
        operator_participant_id: str,
        operator_name: str,
        on_key_revoked: Callable[[str], None] = lambda key_id: None,
    ) -> None:
        self.store = store
        self.on_key_revoked = on_key_revoked
        self.clock = clock
        self.operator_participant_id = operator_participant_id
        self.operator_name = operator_name
        # First sight of a participant by many requests at once (a burst of transfers): one
        # looks and creates, the others wait for it instead of queueing for the writer.
        self._first_sight: SingleFlight[str, Tenant] = SingleFlight()

    async def create(
        self, participant_id: str, display_name: str, allowed_assets: frozenset[str] | None = None
    ) -> Tenant:
        tenant = Tenant(new_id("ten"), participant_id, display_name, self.clock(), allowed_assets)
        async with self.store.transaction() as uow:
            await uow.tenants.add(tenant)
        return tenant

    async def set_allowed_assets(self, tenant_id: str, allowed: frozenset[str] | None) -> Tenant:
        """The operator limits a tenant to these catalog assets, or (None) lifts the limit."""
        async with self.store.transaction() as uow:
            if not await uow.tenants.set_allowed_assets(tenant_id, allowed):
                raise NotFound("tenant", tenant_id)
            tenant = await uow.tenants.get(tenant_id)
        assert tenant is not None
        log.info(
            "tenant asset limit set", extra={"tenant_id": tenant_id, "allowed_assets": tenant.allowed_assets}
        )
        return tenant

    async def find_or_create(self, participant_id: str, display_name: str) -> Tenant:
        """The tenant for a participant, created on first sight (provisioning and data flows)."""
        return await self._first_sight.do(
            participant_id, lambda: self._find_or_create(participant_id, display_name)
        )

    async def _find_or_create(self, participant_id: str, display_name: str) -> Tenant:
        async with self.store.read() as uow:  # the usual case: no write, no wait for the writer
            known = await uow.tenants.get_by_participant(participant_id)
        if known is not None:
            return known
        try:
            async with self.store.transaction() as uow:
                existing = await uow.tenants.get_by_participant(participant_id)
                if existing:
                    return existing
                tenant = Tenant(new_id("ten"), participant_id, display_name, self.clock())
                await uow.tenants.add(tenant)
                return tenant
        except Conflict:
            # Another request created it meanwhile (PostgreSQL lets both look first): it stands.
            async with self.store.read() as uow:
                created = await uow.tenants.get_by_participant(participant_id)
            if created is None:
                raise
            return created

    async def get(self, tenant_id: str) -> Tenant:
        async with self.store.read() as uow:
            tenant = await uow.tenants.get(tenant_id)
        if tenant is None:
            raise NotFound("tenant", tenant_id)
        return tenant

    async def list(self, page: PageRequest) -> Page[Tenant]:
        async with self.store.read() as uow:
            return await uow.tenants.list(page)

    async def operator(self) -> Tenant:
        return await self.find_or_create(self.operator_participant_id, self.operator_name)

    async def issue_key(
        self, tenant_id: str, role: Role, name: str, expires_at: datetime | None = None
    ) -> IssuedKey:
        now = self.clock()
        if expires_at is not None and expires_at <= now:
            raise InvalidInput(
                "expires_at lies in the past", [FieldProblem("body.expires_at", "must be in the future")]
            )
        async with self.store.transaction() as uow:
            tenant = await uow.tenants.get(tenant_id)
            if tenant is None:
                raise NotFound("tenant", tenant_id)
            if role is Role.ADMIN and tenant.participant_id != self.operator_participant_id:
                raise InvalidInput(
                    "admin keys belong to the operator tenant only",
                    [FieldProblem("body.role", "admin is only allowed for the operator tenant")],
                )
            secret = generate_api_key_secret()
            key = ApiKey(
                id=new_id("key"),
                tenant_id=tenant_id,
                role=role,
                name=name,
                prefix=display_prefix(secret),
                secret_hash=hash_secret(secret),
                created_at=now,
                expires_at=expires_at,
            )
            await uow.api_keys.add(key)
        return IssuedKey(key, secret)

    async def list_keys(self, tenant_id: str, page: PageRequest) -> Page[ApiKey]:
        async with self.store.read() as uow:
            if await uow.tenants.get(tenant_id) is None:
                raise NotFound("tenant", tenant_id)
            return await uow.api_keys.list_for_tenant(tenant_id, page)

    async def revoke_key(self, tenant_id: str, key_id: str) -> ApiKey:
        async with self.store.transaction() as uow:
            key = await uow.api_keys.get(key_id)
            if key is None or key.tenant_id != tenant_id:
                raise NotFound("API key", key_id)
            await uow.api_keys.revoke(key_id, self.clock())
            revoked = await uow.api_keys.get(key_id)
        assert revoked is not None
        self.on_key_revoked(key_id)
        return revoked

    async def register_bootstrap_key(self, secret: str) -> bool:
        """Make an operator-supplied admin key usable; True if it was new. Idempotent."""
        digest = hash_secret(secret)
        async with self.store.transaction() as uow:
            if await uow.api_keys.find_by_hash(digest) is not None:
                return False
        operator = await self.operator()
        async with self.store.transaction() as uow:
            if await uow.api_keys.find_by_hash(digest) is not None:
                return False
            key = ApiKey(
                id=new_id("key"),
                tenant_id=operator.id,
                role=Role.ADMIN,
                name=BOOTSTRAP_KEY_NAME,
                prefix=display_prefix(secret),
                secret_hash=digest,
                created_at=self.clock(),
            )
            await uow.api_keys.add(key)
        return True

    async def init_admin_key(self) -> IssuedKey | None:
        """For `provider init`: an admin key when no usable one exists yet, else None."""
        operator = await self.operator()
        async with self.store.read() as uow:
            if await uow.api_keys.count_usable_admin_keys(self.clock()) > 0:
                return None
        return await self.issue_key(operator.id, Role.ADMIN, "initial admin key")
