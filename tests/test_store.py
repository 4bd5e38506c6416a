"""The store on SQLite and PostgreSQL: repositories, transactions, migrations."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from provider.backends.asset_files import read_asset_file
from provider.backends.sql import SqlStore
from provider.backends.sql import migrate as migrations
from provider.backends.sql.tables import metadata
from provider.domain.errors import Conflict
from provider.domain.executions import Execution, State, Transition
from provider.domain.ids import new_id
from provider.domain.pagination import PageRequest
from provider.domain.tenants import ApiKey, Role, Tenant, hash_secret
from provider.domain.workspaces import Quota, Usage, Workspace, WorkspaceState
from tests.conftest import POSTGRES_URL, REPO, postgres_enabled

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


def tenant(participant: str) -> Tenant:
    return Tenant(new_id("ten"), participant, participant.upper(), NOW)


def key(tenant_id: str, secret: str, role: Role = Role.CONSUMER, expires: datetime | None = None) -> ApiKey:
    return ApiKey(new_id("key"), tenant_id, role, "k", secret[:10], hash_secret(secret), NOW, expires)


async def test_schema_matches_table_definitions(store: SqlStore) -> None:
    assert await migrations.current_revision(store) == migrations.head_revision()
    async with store.engine.connect() as conn:
        diff = await conn.run_sync(lambda sync: compare_metadata(MigrationContext.configure(sync), metadata))
    assert diff == []


async def test_migrate_twice_is_harmless(store: SqlStore) -> None:
    await migrations.upgrade(store)
    assert await migrations.current_revision(store) == migrations.head_revision()


@pytest.mark.postgres
async def test_replicas_migrating_an_empty_database_at_once_take_turns() -> None:
    if not postgres_enabled():
        pytest.skip("PROVIDER_TEST_POSTGRES_URL is off")
    schema = f"test_{uuid.uuid4().hex[:16]}"
    admin = await asyncpg.connect(POSTGRES_URL.replace("postgresql+asyncpg", "postgresql"))
    stores = [SqlStore(POSTGRES_URL, schema=schema, pool_size=2) for _ in range(3)]
    try:
        await admin.execute(f'CREATE SCHEMA "{schema}"')
        # Without turns they collide on the same tables (errors, or waits on each other's locks).
        await asyncio.wait_for(asyncio.gather(*(migrations.upgrade(s) for s in stores)), 60)
        for s in stores:
            assert await migrations.current_revision(s) == migrations.head_revision()
    finally:
        for s in stores:
            await s.close()
        await admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await admin.close()


async def test_tenant_round_trip_keeps_utc_times(store: SqlStore) -> None:
    t = tenant("did:web:a.example")
    async with store.transaction() as uow:
        await uow.tenants.add(t)
    async with store.read() as uow:
        assert await uow.tenants.get(t.id) == t
        assert await uow.tenants.get_by_participant("did:web:a.example") == t
        assert await uow.tenants.get("ten_missing") is None
    assert t.created_at.tzinfo is not None


async def test_duplicate_participant_is_a_conflict_and_the_transaction_stays_usable(store: SqlStore) -> None:
    async with store.transaction() as uow:
        await uow.tenants.add(tenant("p1"))
    async with store.transaction() as uow:
        with pytest.raises(Conflict):
            await uow.tenants.add(tenant("p1"))
        await uow.tenants.add(tenant("p2"))  # the savepoint kept the outer transaction alive
    async with store.read() as uow:
        page = await uow.tenants.list(PageRequest(10))
    assert sorted(x.participant_id for x in page.items) == ["p1", "p2"]


async def test_failed_transaction_writes_nothing(store: SqlStore) -> None:
    with pytest.raises(RuntimeError):
        async with store.transaction() as uow:
            await uow.tenants.add(tenant("half"))
            raise RuntimeError("boom")
    async with store.read() as uow:
        assert await uow.tenants.get_by_participant("half") is None


async def test_tenant_pagination_visits_each_once_in_creation_order(store: SqlStore) -> None:
    created = [tenant(f"p{i:02d}") for i in range(7)]
    async with store.transaction() as uow:
        for t in created:
            await uow.tenants.add(t)
    seen, after = [], None
    while True:
        async with store.read() as uow:
            page = await uow.tenants.list(PageRequest(3, after))
        seen.extend(page.items)
        if page.next_after is None:
            break
        after = page.next_after
    assert [t.id for t in seen] == [t.id for t in created]


async def test_api_keys_find_revoke_and_count(store: SqlStore) -> None:
    operator = tenant("operator")
    async with store.transaction() as uow:
        await uow.tenants.add(operator)
        admin = key(operator.id, "secret-admin", Role.ADMIN)
        expired = key(operator.id, "secret-old", Role.ADMIN, expires=NOW - timedelta(days=1))
        consumer = key(operator.id, "secret-consumer")
        for k in (admin, expired, consumer):
            await uow.api_keys.add(k)
    async with store.read() as uow:
        assert await uow.api_keys.find_by_hash(hash_secret("secret-admin")) == admin
        assert await uow.api_keys.find_by_hash(hash_secret("nope")) is None
        assert await uow.api_keys.count_usable_admin_keys(NOW) == 1
    async with store.transaction() as uow:
        await uow.api_keys.revoke(admin.id, NOW)
        await uow.api_keys.revoke(admin.id, NOW + timedelta(hours=1))  # keeps the first time
    async with store.read() as uow:
        revoked = await uow.api_keys.get(admin.id)
        assert revoked is not None and revoked.revoked_at == NOW
        assert not revoked.is_usable(NOW)
        assert await uow.api_keys.count_usable_admin_keys(NOW) == 0
        page = await uow.api_keys.list_for_tenant(operator.id, PageRequest(2))
        assert len(page.items) == 2 and page.next_after is not None


async def test_api_key_needs_an_existing_tenant(store: SqlStore) -> None:
    with pytest.raises(Exception):  # noqa: B017 - the driver's own IntegrityError subclass
        async with store.transaction() as uow:
            await uow.api_keys.add(key("ten_nobody", "s"))


async def test_assets_upsert_list_filter_and_delete(store: SqlStore) -> None:
    dummy = read_asset_file(REPO / "config" / "assets" / "dummy.yaml")
    v1 = dummy.model_copy(update={"created_at": NOW, "updated_at": NOW})
    v2 = dummy.model_copy(
        update={"version": "1.10.0", "title": "Dummy two", "created_at": NOW, "updated_at": NOW}
    )
    other = dummy.model_copy(
        update={"id": "other", "description": "Fourier transforms", "created_at": NOW, "updated_at": NOW}
    )
    async with store.transaction() as uow:
        assert await uow.assets.upsert(v1) is True
        assert await uow.assets.upsert(v2) is True
        assert await uow.assets.upsert(other) is True
        assert await uow.assets.upsert(v1.model_copy(update={"title": "Renamed"})) is False
    async with store.read() as uow:
        got = await uow.assets.get("dummy", "1.0.0")
        assert got is not None and got.title == "Renamed" and got.inputs == dummy.inputs
        assert {a.version for a in await uow.assets.versions("dummy")} == {"1.0.0", "1.10.0"}
        first = await uow.assets.list(PageRequest(2), None, None)
        assert [(a.id, a.version) for a in first.items] == [("dummy", "1.0.0"), ("dummy", "1.10.0")]
        rest = await uow.assets.list(PageRequest(2, first.next_after), None, None)
        assert [(a.id, a.version) for a in rest.items] == [("other", "1.0.0")] and rest.next_after is None
        found = await uow.assets.list(PageRequest(10), None, "FOURIER")
        assert [a.id for a in found.items] == ["other"]
        assert (await uow.assets.list(PageRequest(10), None, "100%")).items == []
        assert len((await uow.assets.list(PageRequest(10), "dummy", None)).items) == 2
    async with store.transaction() as uow:
        assert await uow.assets.delete("dummy", "1.0.0") == 1
        assert await uow.assets.delete("dummy", None) == 1
        assert await uow.assets.delete("dummy", None) == 0


async def test_a_write_lock_held_too_long_is_reported_as_unavailable(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import sqlite3

    from provider.backends.sql import default_sqlite_url
    from provider.domain.errors import Unavailable

    store = SqlStore(default_sqlite_url(tmp_path), busy_timeout_ms=100)
    await migrations.upgrade(store)
    blocker = sqlite3.connect(tmp_path / "provider.db", isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # another writer holds the lock
    try:
        with pytest.raises(Unavailable, match="busy"):
            async with store.transaction() as uow:
                await uow.tenants.add(tenant("blocked"))
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    async with store.transaction() as uow:  # free again: the same write goes through
        await uow.tenants.add(tenant("blocked"))
    await store.close()


async def test_many_first_sights_of_a_participant_make_one_tenant(store: SqlStore) -> None:
    """Concurrent provisionings or data flows of one new consumer: each finds the same tenant
    (on PostgreSQL the losers of the insert race read the winner's row instead of failing)."""
    from provider.services.tenants import TenantService

    tenants = TenantService(store, lambda: datetime.now(UTC), "did:web:operator", "Operator")
    found = await asyncio.gather(*(tenants.find_or_create("did:web:new-consumer", "New") for _ in range(20)))
    assert len({t.id for t in found}) == 1
    async with store.read() as uow:
        assert (await uow.tenants.get_by_participant("did:web:new-consumer")) is not None


async def test_a_workspace_s_activity_counts_active_executions_and_the_last_end(store: SqlStore) -> None:
    """What a data flow's self-completion reads (signaling.complete_after_idle_seconds)."""
    owner = tenant("did:web:activity")
    ws = Workspace(
        new_id("wsp"), owner.id, "w", {}, "loc", Quota(10, 10), Usage(), WorkspaceState.ACTIVE, NOW, NOW
    )

    def run(state: State, ended: datetime) -> Execution:
        return Execution(
            new_id("exe"),
            owner.id,
            ws.id,
            "dummy",
            "1",
            {},
            {},
            {},
            state,
            1,
            NOW,
            ended,
            (Transition(state, NOW),),
        )

    async with store.transaction() as uow:
        await uow.tenants.add(owner)
        await uow.workspaces.add(ws)
        assert await uow.executions.workspace_activity(ws.id) == (0, None)
        await uow.executions.add(run(State.COMPLETE, NOW + timedelta(minutes=1)))
        await uow.executions.add(run(State.CANCELED, NOW + timedelta(minutes=3)))
        await uow.executions.add(run(State.RUNNING, NOW + timedelta(minutes=9)))
        await uow.executions.add(run(State.QUEUED, NOW + timedelta(minutes=9)))
    async with store.read() as uow:
        assert await uow.executions.workspace_activity(ws.id) == (2, NOW + timedelta(minutes=3))


def test_the_head_start_up_knows_without_alembic_is_alembic_s_head() -> None:
    """A restart with a current schema skips Alembic: it must find the head Alembic would."""
    assert migrations.head_revision() == migrations.HEAD
    numbers = sorted(p.name[:4] for p in (migrations.MIGRATIONS / "versions").glob("[0-9]*_*.py"))
    assert numbers == [f"{n:04d}" for n in range(1, len(numbers) + 1)]  # one line of history
