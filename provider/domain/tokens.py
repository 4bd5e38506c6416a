"""Workspace tokens: bearer JWTs that open one workspace within their scopes until they expire."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from provider.domain.workspaces import Scope


@dataclass(frozen=True)
class WorkspaceToken:
    """The stored record of an issued token (the JWT itself is never stored)."""

    id: str  # the JWT's `jti`
    workspace_id: str
    tenant_id: str
    scopes: frozenset[Scope]
    name: str
    created_at: datetime
    expires_at: datetime
    revoked_at: datetime | None = None

    def is_usable(self, now: datetime) -> bool:
        return self.revoked_at is None and now < self.expires_at


@dataclass(frozen=True)
class TokenClaims:
    """What a verified JWT says; the store still has to confirm it is not revoked."""

    token_id: str
    workspace_id: str
    tenant_id: str
    scopes: frozenset[Scope]
    expires_at: datetime
