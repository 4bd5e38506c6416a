"""Authentication: turn a bearer credential into a Principal.

Each credential kind (API keys, workspace JWTs) is one `CredentialVerifier`; the Authenticator
asks each in turn whether the credential is its kind, so adding a kind touches nothing else.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from typing import Protocol

from provider.aio import SingleFlight
from provider.domain.errors import Forbidden, Unauthenticated
from provider.domain.tenants import CredentialKind, Principal, Role, hash_secret
from provider.domain.tokens import TokenClaims
from provider.domain.workspaces import JOB_SIDECAR, WorkspaceState
from provider.services.ports import Clock, Store, TokenCodec


class CredentialVerifier(Protocol):
    def recognises(self, credential: str) -> bool:
        """True if the credential has this verifier's shape (so no other verifier should try)."""

    async def verify(self, credential: str) -> Principal:
        """The principal behind the credential; raises Unauthenticated if it is not valid now."""


class PrincipalCache:
    """Remembers verified principals briefly, so hot polling does not hit the store each time.

    A revocation made through this process drops entries at once (`forget`); other replicas
    see it within `seconds`. Each key is read from the store once however many requests present
    it at that moment (`load`), and a hot entry is read again in the background in the second
    half of its life, so that it does not expire under load.
    """

    def __init__(
        self, seconds: float, size: int = 4096, monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        self.seconds = seconds
        self.size = size
        self.monotonic = monotonic
        # key -> (stored at, expires at, principal), monotonic times
        self._entries: OrderedDict[str, tuple[float, float, Principal]] = OrderedDict()
        # Loads are shared by key and generation. The generation rises with every drop and
        # forget: a load that began before one stores nothing, and a request that comes after
        # one starts a load of its own instead of joining a read that saw the key still valid.
        self._loads: SingleFlight[tuple[str, int], Principal | None] = SingleFlight()
        self._generation = 0

    async def load(
        self, key: str, read: Callable[[], Awaitable[tuple[Principal, float] | None]]
    ) -> Principal | None:
        """The cached principal, or the one `read` finds (with its remaining lifetime in seconds;
        None: not valid), read once for all who ask at the same time."""
        entry = self._entries.get(key)
        now = self.monotonic()
        if entry is not None and entry[1] > now:
            if now - entry[0] > self.seconds / 2:
                self._loads.start((key, self._generation), lambda: self._read(key, read))
            return entry[2]
        return await self._loads.do((key, self._generation), lambda: self._read(key, read))

    async def _read(
        self, key: str, read: Callable[[], Awaitable[tuple[Principal, float] | None]]
    ) -> Principal | None:
        generation = self._generation
        found = await read()
        if generation != self._generation:
            return found[0] if found else None  # for these callers; cached by the next load
        if found is None:
            self._entries.pop(key, None)
            return None
        self.put(key, *found)
        return found[0]

    def put(self, key: str, principal: Principal, lifetime: float) -> None:
        ttl = min(self.seconds, lifetime)
        if ttl <= 0:
            return
        now = self.monotonic()
        self._entries[key] = (now, now + ttl, principal)
        self._entries.move_to_end(key)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)

    def keys(self) -> list[str]:
        return list(self._entries)

    def drop(self, key: str) -> None:
        self._generation += 1
        self._entries.pop(key, None)

    def forget(self, credential_ids: Iterable[str]) -> None:
        self._generation += 1
        ids = set(credential_ids)
        for key in [k for k, (_, _, p) in self._entries.items() if p.credential_id in ids]:
            del self._entries[key]


class ApiKeyVerifier:
    """API keys, looked up by the SHA-256 of the presented secret."""

    def __init__(self, store: Store, clock: Clock, cache: PrincipalCache) -> None:
        self.store = store
        self.clock = clock
        self.cache = cache

    def recognises(self, credential: str) -> bool:
        # Operator-supplied bootstrap keys may have any shape, so API keys are the fallback kind.
        return True

    async def verify(self, credential: str) -> Principal:
        digest = hash_secret(credential)
        principal = await self.cache.load(digest, lambda: self._read(digest))
        if principal is None:
            raise Unauthenticated("the API key is unknown, expired or revoked")
        return principal

    async def _read(self, digest: str) -> tuple[Principal, float] | None:
        async with self.store.read() as uow:
            key = await uow.api_keys.find_by_hash(digest)
        now = self.clock()
        if key is None or not key.is_usable(now):
            return None
        principal = Principal(
            tenant_id=key.tenant_id, role=key.role, kind=CredentialKind.API_KEY, credential_id=key.id
        )
        lifetime = (key.expires_at - now).total_seconds() if key.expires_at else float("inf")
        return principal, lifetime


class WorkspaceTokenVerifier:
    """Workspace JWTs: the signature proves who issued them, the store whether they are revoked."""

    def __init__(self, store: Store, codec: TokenCodec, clock: Clock, cache: PrincipalCache) -> None:
        self.store = store
        self.codec = codec
        self.clock = clock
        self.cache = cache

    def recognises(self, credential: str) -> bool:
        return self.codec.looks_like_token(credential)

    async def verify(self, credential: str) -> Principal:
        claims = self.codec.decode(credential)
        principal = await self.cache.load(claims.token_id, lambda: self._read(claims))
        if principal is None:
            raise Unauthenticated("the workspace token is revoked, expired or unknown")
        return principal

    async def _read(self, claims: TokenClaims) -> tuple[Principal, float] | None:
        async with self.store.read() as uow:
            record = await uow.tokens.get(claims.token_id)
            workspace = await uow.workspaces.get(claims.workspace_id)
        now = self.clock()
        if (
            record is None
            or not record.is_usable(now)
            or record.workspace_id != claims.workspace_id
            or workspace is None
            or not (
                workspace.state is WorkspaceState.ACTIVE
                or (workspace.state is WorkspaceState.SUSPENDED and record.name == JOB_SIDECAR)
            )
        ):
            return None
        principal = Principal(
            tenant_id=record.tenant_id,
            role=Role.CONSUMER,
            kind=CredentialKind.WORKSPACE_TOKEN,
            credential_id=record.id,
            workspace_id=record.workspace_id,
            scopes=frozenset(s.value for s in record.scopes),
            sidecar=record.name == JOB_SIDECAR,
        )
        return principal, (record.expires_at - now).total_seconds()


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


def require_token_scope(principal: Principal, scope: str | None) -> None:
    """API keys carry their role's full power; workspace tokens only the scopes they name.

    `scope` None: the operation does not accept workspace tokens at all; "any": any scope.
    """
    if principal.kind is not CredentialKind.WORKSPACE_TOKEN:
        return
    if scope is None:
        raise Forbidden("this operation needs an API key, not a workspace token")
    if scope != "any" and scope not in principal.scopes:
        raise Forbidden(f"the workspace token lacks the scope {scope!r}")
