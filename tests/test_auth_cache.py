"""The credential cache under load: a key is read from the store once however many requests
present it at once, a hot entry is read again before it expires, and a revocation is never undone
by a read that began before it (provider/services/auth.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest

from provider.domain.errors import Unauthenticated
from provider.domain.tenants import Role
from provider.services.auth import ApiKeyVerifier, PrincipalCache
from tests.conftest import WAIT_SECONDS, ServiceWorld, poll_until


class CountingStore:
    """The service's store, counting reads; `gate` (when set) holds each read, once done, until it
    opens: what it read is then older than what happened meanwhile."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.reads = 0
        self.gate: asyncio.Event | None = None
        self.parked = asyncio.Event()  # a read is done and held at the gate

    @asynccontextmanager
    async def read(self) -> AsyncIterator[Any]:
        self.reads += 1
        async with self.store.read() as uow:
            yield uow
        if self.gate is not None:
            self.parked.set()
            await self.gate.wait()


class Ticks:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def key(services: ServiceWorld) -> tuple[str, str]:
    tenants = services.components.tenants
    tenant = await tenants.create("did:web:cache.example", "cache")
    issued = await tenants.issue_key(tenant.id, Role.CONSUMER, "k")
    return issued.secret, issued.key.id


def verifier(services: ServiceWorld, ticks: Callable[[], float]) -> tuple[ApiKeyVerifier, CountingStore]:
    store = CountingStore(services.components.store)
    return ApiKeyVerifier(store, services.clock, PrincipalCache(5.0, monotonic=ticks)), store  # type: ignore[arg-type]


async def test_a_key_presented_by_many_at_once_is_read_once(
    services: ServiceWorld, key: tuple[str, str]
) -> None:
    secret, key_id = key
    check, store = verifier(services, Ticks())
    store.gate = asyncio.Event()
    requests = [asyncio.ensure_future(check.verify(secret)) for _ in range(64)]
    await asyncio.sleep(0)
    store.gate.set()
    principals = await asyncio.gather(*requests)
    assert store.reads == 1 and {p.credential_id for p in principals} == {key_id}
    refused = await asyncio.gather(*(check.verify("not-a-key") for _ in range(8)), return_exceptions=True)
    assert store.reads == 2 and all(isinstance(r, Unauthenticated) for r in refused)


async def test_a_hot_key_is_read_again_before_it_expires_and_then_refused_if_revoked(
    services: ServiceWorld, key: tuple[str, str]
) -> None:
    secret, key_id = key
    ticks = Ticks()
    check, store = verifier(services, ticks)
    await check.verify(secret)
    ticks.now += 2  # the first half of its 5 s: served from memory
    await check.verify(secret)
    assert store.reads == 1
    # Revoked by another replica: this process hears nothing, and its entry is still valid.
    async with services.components.store.transaction() as uow:
        await uow.api_keys.revoke(key_id, services.clock())
    ticks.now += 1  # the second half: answered from memory, read again in the background
    await check.verify(secret)
    await poll_until(lambda: store.reads == 2 and not check.cache.keys(), "the background read")
    with pytest.raises(Unauthenticated):  # before the entry's 5 s were over
        await check.verify(secret)


async def test_a_read_that_began_before_a_revocation_does_not_cache_the_key(
    services: ServiceWorld, key: tuple[str, str]
) -> None:
    secret, key_id = key
    check, store = verifier(services, Ticks())
    store.gate = asyncio.Event()
    reading = asyncio.ensure_future(check.verify(secret))  # reads the key while it is valid ...
    await store.parked.wait()
    async with services.components.store.transaction() as uow:
        await uow.api_keys.revoke(key_id, services.clock())
    check.cache.forget([key_id])  # ... and the revocation is heard here meanwhile
    store.gate.set()
    await reading  # it was valid when that request began
    store.gate = None
    with pytest.raises(Unauthenticated):
        await check.verify(secret)


async def test_a_request_after_a_revocation_does_not_join_a_read_from_before_it(
    services: ServiceWorld, key: tuple[str, str]
) -> None:
    """A hot key is being read again when it is revoked here: a request that comes after the
    revocation must be refused, not handed what that earlier read found."""
    secret, key_id = key
    check, store = verifier(services, Ticks())
    gate = store.gate = asyncio.Event()
    before = asyncio.ensure_future(check.verify(secret))  # a read under way ...
    await store.parked.wait()
    async with services.components.store.transaction() as uow:
        await uow.api_keys.revoke(key_id, services.clock())
    check.cache.forget([key_id])  # ... when the revocation is heard
    store.gate = None
    with pytest.raises(Unauthenticated):  # asked after the revocation: reads for itself (had it
        async with asyncio.timeout(WAIT_SECONDS):  # joined the read from before, it would wait)
            await check.verify(secret)
    gate.set()
    await before  # asked before it: answered by what its read found
