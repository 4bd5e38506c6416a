"""Tenants (data space participants), API keys and the authenticated principal."""

from __future__ import annotations

import enum
import hashlib
import secrets
from dataclasses import dataclass, field
from datetime import datetime

API_KEY_PREFIX = "pk."


class Role(enum.StrEnum):
    """`admin` operates the service (all tenants); `consumer` acts for its own tenant only."""

    ADMIN = "admin"
    CONSUMER = "consumer"


class CredentialKind(enum.StrEnum):
    API_KEY = "api_key"
    WORKSPACE_TOKEN = "workspace_token"  # noqa: S105 - a kind name, not a secret


@dataclass(frozen=True)
class Tenant:
    id: str
    participant_id: str
    display_name: str
    created_at: datetime
    allowed_assets: frozenset[str] | None = None  # set by the operator; None: the whole catalog


@dataclass(frozen=True)
class ApiKey:
    """A stored API key: only the SHA-256 of the secret is kept, never the secret itself."""

    id: str
    tenant_id: str
    role: Role
    name: str
    prefix: str
    secret_hash: str
    created_at: datetime
    expires_at: datetime | None = None
    revoked_at: datetime | None = None

    def is_usable(self, now: datetime) -> bool:
        if self.revoked_at is not None:
            return False
        return self.expires_at is None or now < self.expires_at


def generate_api_key_secret() -> str:
    """A new key as handed to its owner once: `pk.` and 43 URL-safe characters (256 bits)."""
    return API_KEY_PREFIX + secrets.token_urlsafe(32)


def hash_secret(secret: str) -> str:
    """Keys are high-entropy random strings, so a plain SHA-256 is a safe lookup hash."""
    return hashlib.sha256(secret.encode()).hexdigest()


def display_prefix(secret: str) -> str:
    """Enough of the key to recognise it in a list, far too little to use it."""
    return secret[:10]


@dataclass(frozen=True)
class Principal:
    """Who is calling: the tenant, the role, and for workspace tokens the workspace and scopes."""

    tenant_id: str
    role: Role
    kind: CredentialKind
    credential_id: str
    workspace_id: str | None = None
    scopes: frozenset[str] = field(default_factory=frozenset)
    sidecar: bool = False  # a job's data sidecar: the service's own, let into a suspended workspace

    @property
    def is_admin(self) -> bool:
        return self.role is Role.ADMIN

    def may_see_tenant(self, tenant_id: str) -> bool:
        """Admins see every tenant's resources; everyone else only their own."""
        return self.is_admin or self.tenant_id == tenant_id
