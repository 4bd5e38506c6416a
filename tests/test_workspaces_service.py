"""The workspace service over in-memory fakes (tests/fakes.py): quotas, usage, who sees what,
and deletion, without HTTP or a disk, so that each case costs milliseconds. The same rules are
exercised over HTTP and real storage in tests/test_api_workspaces.py."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest

from provider.domain.errors import (
    Conflict,
    Forbidden,
    InvalidInput,
    NotFound,
    PayloadTooLarge,
    Unauthenticated,
)
from provider.domain.pagination import PageRequest
from provider.domain.tenants import CredentialKind, Principal, Role
from provider.domain.workspaces import Quota, Scope, WorkspaceState
from provider.services.ports import PutLimits
from tests.conftest import ServiceWorld


async def body(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


def consumer_of(tenant_id: str) -> Principal:
    return Principal(tenant_id, Role.CONSUMER, CredentialKind.API_KEY, "key_test")


@pytest.fixture
def small_quota(services: ServiceWorld) -> Quota:
    quota = Quota(max_bytes=100, max_objects=3)
    workspaces = services.components.workspaces
    workspaces.policy = replace(workspaces.policy, quota=quota)  # for workspaces made from now on
    return quota


async def test_usage_follows_puts_replacements_and_deletes(services: ServiceWorld) -> None:
    workspaces, admin = services.components.workspaces, services.admin
    ws = await workspaces.create(admin.tenant_id, "w", {})
    await workspaces.put_object(admin, ws.id, "a", body(b"x" * 10))
    await workspaces.put_object(admin, ws.id, "b", body(b"y" * 5))
    await workspaces.put_object(admin, ws.id, "a", body(b"z" * 3))  # replaces 10 bytes with 3
    usage = (await workspaces.get(admin, ws.id)).usage
    assert (usage.bytes, usage.objects) == (8, 2)
    await workspaces.delete_object(admin, ws.id, "b")
    usage = (await workspaces.get(admin, ws.id)).usage
    assert (usage.bytes, usage.objects) == (3, 1)
    with pytest.raises(NotFound):
        await workspaces.delete_object(admin, ws.id, "b")
    # Writes that bypass the service (S3 credentials) are counted from the storage itself.
    await services.storage.put(ws.location, "direct", body(b"d" * 7), PutLimits())
    refreshed = await workspaces.refresh_usage(admin, ws.id)
    assert (refreshed.usage.bytes, refreshed.usage.objects) == (10, 2)


async def test_quotas_refuse_before_and_while_storing_and_keep_nothing(
    services: ServiceWorld, small_quota: Quota
) -> None:
    workspaces, admin, storage = services.components.workspaces, services.admin, services.storage
    ws = await workspaces.create(admin.tenant_id, "w", {})
    await workspaces.put_object(admin, ws.id, "a", body(b"a" * 60))
    with pytest.raises(PayloadTooLarge):  # declared too large: refused before a byte is read
        await workspaces.put_object(admin, ws.id, "b", body(b"b" * 41), declared_size=41)
    with pytest.raises(PayloadTooLarge):  # undeclared: refused once the stream passes the room
        await workspaces.put_object(admin, ws.id, "b", body(b"b" * 30, b"b" * 11))
    assert await storage.head(ws.location, "b") is None
    await workspaces.put_object(admin, ws.id, "a", body(b"a" * 100))  # a replacement may use its own room
    await workspaces.put_object(admin, ws.id, "a", body(b"a"))
    await workspaces.put_object(admin, ws.id, "b", body(b"b"))
    await workspaces.put_object(admin, ws.id, "c", body(b"c"))
    with pytest.raises(PayloadTooLarge, match="3 objects"):
        await workspaces.put_object(admin, ws.id, "d", body(b"d"))
    usage = (await workspaces.get(admin, ws.id)).usage
    assert (usage.bytes, usage.objects) == (3, 3)


async def test_two_uploads_racing_for_the_last_room_leave_one(
    services: ServiceWorld, small_quota: Quota
) -> None:
    """Both pass the room check before either has stored a byte; the one that commits second
    finds the quota used up and its object is removed again."""
    workspaces, admin, storage = services.components.workspaces, services.admin, services.storage
    ws = await workspaces.create(admin.tenant_id, "w", {})
    gate, both_streaming = asyncio.Event(), asyncio.Event()
    started = 0

    async def held(data: bytes) -> AsyncIterator[bytes]:
        nonlocal started
        started += 1
        if started == 2:
            both_streaming.set()
        await gate.wait()
        yield data

    first = asyncio.create_task(workspaces.put_object(admin, ws.id, "one", held(b"1" * 70)))
    second = asyncio.create_task(workspaces.put_object(admin, ws.id, "two", held(b"2" * 70)))
    await both_streaming.wait()  # both are past the room check
    gate.set()
    results = await asyncio.gather(first, second, return_exceptions=True)
    assert sum(isinstance(r, PayloadTooLarge) for r in results) == 1
    kept = [o.key for o in (await storage.list(ws.location, "", PageRequest(10))).items]
    assert len(kept) == 1
    usage = (await workspaces.get(admin, ws.id)).usage
    assert (usage.bytes, usage.objects) == (70, 1)


async def test_other_tenants_and_other_workspaces_see_nothing(services: ServiceWorld) -> None:
    components, admin = services.components, services.admin
    workspaces = components.workspaces
    mine = await components.tenants.create("urn:participant:mine", "Mine")
    theirs = await components.tenants.create("urn:participant:theirs", "Theirs")
    ws = await workspaces.create(mine.id, "w", {})
    other = await workspaces.create(mine.id, "other", {})
    await workspaces.put_object(admin, ws.id, "secret", body(b"s"))
    intruder = consumer_of(theirs.id)
    for attempt in (
        workspaces.get(intruder, ws.id),
        workspaces.open_object(intruder, ws.id, "secret", None),
        workspaces.list_objects(intruder, ws.id, "", PageRequest(10)),
        workspaces.put_object(intruder, ws.id, "planted", body(b"p")),
        workspaces.delete(intruder, ws.id),
    ):
        with pytest.raises(NotFound):  # not Forbidden: existence does not leak
            await attempt
    assert (await workspaces.list(intruder, PageRequest(10))).items == []
    # A token of one workspace opens that one only, even within its own tenant.
    issued = await workspaces.issue_token(consumer_of(mine.id), other.id, {Scope.OBJECTS_READ}, None, "t")
    holder = await components.auth.authenticate(f"Bearer {issued.token}")
    with pytest.raises(NotFound):
        await workspaces.open_object(holder, ws.id, "secret", None)
    assert [w.id for w in (await workspaces.list(holder, PageRequest(10))).items] == [other.id]
    with pytest.raises(Forbidden):
        await workspaces.issue_token(holder, other.id, {Scope.OBJECTS_READ}, None, "escalate")
    assert await services.storage.head(ws.location, "planted") is None


async def test_deletion_revokes_tokens_runs_hooks_and_removes_the_data(services: ServiceWorld) -> None:
    components, admin, storage = services.components, services.admin, services.storage
    workspaces = components.workspaces
    ws = await workspaces.create(admin.tenant_id, "w", {})
    await workspaces.put_object(admin, ws.id, "k", body(b"data"))
    issued = await workspaces.issue_token(admin, ws.id, {Scope.OBJECTS_READ}, None, "reader")
    holder = await components.auth.authenticate(f"Bearer {issued.token}")
    with pytest.raises(Forbidden):
        await workspaces.delete(holder, ws.id)  # a token cannot delete its workspace
    stopped: list[str] = []
    workspaces.before_delete.append(stopped.append)
    await workspaces.delete(admin, ws.id)
    assert stopped == [ws.id]
    assert ws.location not in storage.locations
    with pytest.raises(Unauthenticated):
        await components.auth.authenticate(f"Bearer {issued.token}")
    with pytest.raises(NotFound):
        await workspaces.get(admin, ws.id)
    async with components.store.read() as uow:
        stored = await uow.workspaces.get(ws.id)
    assert stored is not None and stored.state is WorkspaceState.DELETED and stored.usage.bytes == 0
    await workspaces.delete_system(ws.id)  # idempotent


async def test_a_workspace_whose_row_cannot_be_written_leaves_no_storage_behind(
    services: ServiceWorld,
) -> None:
    with pytest.raises(NotFound):
        await services.components.workspaces.create("ten_unknown", "w", {})
    assert services.storage.locations == {}


async def test_a_workspace_being_deleted_takes_no_more_objects(services: ServiceWorld) -> None:
    workspaces, admin = services.components.workspaces, services.admin
    ws = await workspaces.create(admin.tenant_id, "w", {})
    entered, release = asyncio.Event(), asyncio.Event()

    async def slow_hook(workspace_id: str) -> None:
        entered.set()
        await release.wait()

    workspaces.before_delete.append(slow_hook)
    deletion = asyncio.create_task(workspaces.delete(admin, ws.id))
    await entered.wait()  # DELETING is committed; the data is not removed yet
    with pytest.raises(Conflict, match="being deleted"):
        await workspaces.put_object(admin, ws.id, "late", body(b"x"))
    release.set()
    await deletion


async def test_revoking_a_consumer_s_access_spares_the_sidecars_of_running_jobs(
    services: ServiceWorld,
) -> None:
    """A suspended data flow: whoever held the workspace is out at once, the jobs under way finish."""
    components, admin = services.components, services.admin
    workspaces = components.workspaces
    ws = await workspaces.create(admin.tenant_id, "w", {})
    consumer = await workspaces.issue_token(admin, ws.id, {Scope.OBJECTS_READ}, None, "consumer")
    job = await workspaces.issue_job_token(ws.id, 600)
    await workspaces.revoke_access_tokens(ws.id)
    with pytest.raises(Unauthenticated):
        await components.auth.authenticate(f"Bearer {consumer.token}")
    sidecar = await components.auth.authenticate(f"Bearer {job.token}")
    assert sidecar.workspace_id == ws.id
    with pytest.raises(InvalidInput):  # nobody else may name a token so as to be spared
        await workspaces.issue_token(admin, ws.id, {Scope.OBJECTS_READ}, None, "job")
    await workspaces.revoke_all_tokens(ws.id)  # deletion and deprovisioning take every token
    with pytest.raises(Unauthenticated):
        await components.auth.authenticate(f"Bearer {job.token}")


async def test_a_participant_first_seen_by_many_requests_at_once_is_created_with_one_write(
    services: ServiceWorld,
) -> None:
    """A burst of transfers for a new participant: one request creates its tenant, the others
    wait for it instead of each queueing for the database's writer."""
    tenants = services.components.tenants
    store, writes = tenants.store, []

    class Counting:
        def __getattr__(self, name: str) -> object:
            return getattr(store, name)

        def transaction(self) -> object:
            writes.append(1)
            return store.transaction()

    tenants.store = Counting()  # type: ignore[assignment]
    try:
        found = await asyncio.gather(
            *(tenants.find_or_create("did:web:new.example", "new") for _ in range(50))
        )
    finally:
        tenants.store = store
    assert len({t.id for t in found}) == 1 and len(writes) == 1
