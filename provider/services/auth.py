"""Authentication: turn a bearer credential into a Principal.

Each credential kind (API keys now, workspace JWTs next) is one `CredentialVerifier`; the
Authenticator asks each in turn whether the credential is its kind, so adding a kind touches
nothing else.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Protocol

from provider.domain.errors import Forbidden, Unauthenticated
from provider.domain.tenants import CredentialKind, Principal, Role, hash_secret
from provider.services.ports import Clock, Store


class CredentialVerifier(Protocol):
    def recognises(self, credential: str) -> bool:
        """True if the credential has this verifier's shape (so no other verifier should try)."""

    async def verify(self, credential: str) -> Principal:
        """The principal behind the credential; raises Unauthenticated if it is not valid now."""


class ApiKeyVerifier:
    """API keys, looked up by the SHA-256 of the presented secret.

    Successful look-ups are cached for `cache_seconds` so that hot polling does not hit the
    store for every request; a revocation made through this process drops the entry at once,
    other replicas see it within `cache_seconds`.
    """

    def __init__(
        self, store: Store, clock: Clock, cache_seconds: float = 5.0, cache_size: int = 4096
    ) -> None:
        self.store = store
        self.clock = clock
        self.cache_seconds = cache_seconds
        self.cache_size = cache_size
        self._cache: OrderedDict[str, tuple[float, Principal]] = OrderedDict()

    def recognises(self, credential: str) -> bool:
        # Operator-supplied bootstrap keys may have any shape, so API keys are the fallback kind.
        return True

    async def verify(self, credential: str) -> Principal:
        digest = hash_secret(credential)
        cached = self._cache.get(digest)
        if cached and cached[0] > time.monotonic():
            return cached[1]
        async with self.store.read() as uow:
            key = await uow.api_keys.find_by_hash(digest)
        if key is None or not key.is_usable(self.clock()):
            self._cache.pop(digest, None)
            raise Unauthenticated("the API key is unknown, expired or revoked")
        principal = Principal(
            tenant_id=key.tenant_id, role=key.role, kind=CredentialKind.API_KEY, credential_id=key.id
        )
        ttl = self.cache_seconds
        if key.expires_at is not None:
            ttl = min(ttl, (key.expires_at - self.clock()).total_seconds())
        if ttl > 0:
            self._cache[digest] = (time.monotonic() + ttl, principal)
            self._cache.move_to_end(digest)
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return principal

    def forget(self, key_id: str) -> None:
        """Drop cached entries of a key (called on revocation)."""
        for digest in [d for d, (_, p) in self._cache.items() if p.credential_id == key_id]:
            del self._cache[digest]


class Authenticator:
    def __init__(self, verifiers: list[CredentialVerifier]) -> None:
        self.verifiers = verifiers

    async def authenticate(self, authorization: str | None) -> Principal:
        """Parse an `Authorization` header value and verify its bearer credential."""
        if not authorization:
            raise Unauthenticated("missing Authorization header (expected 'Bearer <credential>')")
        scheme, _, credential = authorization.partition(" ")
        credential = credential.strip()
        if scheme.lower() != "bearer" or not credential:
            raise Unauthenticated("the Authorization header must be 'Bearer <credential>'")
        for verifier in self.verifiers:
            if verifier.recognises(credential):
                return await verifier.verify(credential)
        raise Unauthenticated("unrecognised credential")


def require_admin(principal: Principal) -> None:
    if principal.role is not Role.ADMIN:
        raise Forbidden("this operation needs an admin key")
