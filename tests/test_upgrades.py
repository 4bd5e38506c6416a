"""Rolling upgrades: the previous release's own code (taken from git) keeps working on a database
this release migrated, and a replica starts on a newer schema only when that schema admits it."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

from provider.backends.sql import migrate
from provider.backends.sql.store import SqlStore
from tests.conftest import ADMIN_KEY, REPO, free_port

# The last release before migration 0014 (schema 0013).
PREVIOUS_RELEASE = "d78ea0d"

# A program of its own, run with the previous release on its path.
OLD_SERVICE = r"""
import asyncio, sys, time
from pathlib import Path

import provider
assert provider.__file__.startswith(sys.argv[1]), provider.__file__  # the previous release's code
from provider.backends.sql.store import SqlStore

async def already_running(self, migrate):  # a replica started before the new release migrated
    return None

SqlStore.prepare = already_running
from aiohttp.test_utils import TestClient, TestServer
from provider.app import create_app
from provider.config import Settings

async def main(data, port, key):
    settings = Settings(
        data_dir=Path(data),
        auth={"bootstrap_admin_key": key},
        assets={"directory": Path(sys.argv[1]) / "config" / "assets"},
        server={"port": port, "public_url": f"http://127.0.0.1:{port}"},
    )
    client = TestClient(TestServer(create_app(settings), port=port))
    await client.start_server()
    admin = {"Authorization": f"Bearer {key}"}
    try:
        made = await client.post("/api/v1/tenants", json={"participant_id": "did:web:old"}, headers=admin)
        tenant = await made.json()
        made = await client.post(f"/api/v1/tenants/{tenant['id']}/api-keys", json={}, headers=admin)
        issued = await made.json()
        me = {"Authorization": f"Bearer {issued['key']}"}
        ws = await (await client.post("/api/v1/workspaces", json={}, headers=me)).json()
        put = await client.put(f"/api/v1/workspaces/{ws['id']}/objects/in.txt", data=b"old code", headers=me)
        assert put.status == 201, await put.text()
        body = {"asset_id": "dummy", "workspace_id": ws["id"], "inputs": {"source": "in.txt"}}
        body["env"] = {"SLEEP_SECONDS": "0"}
        execution = await (await client.post("/api/v1/executions", json=body, headers=me)).json()
        deadline = time.monotonic() + 60
        while execution["state"] not in ("COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR"):
            assert time.monotonic() < deadline, execution
            await asyncio.sleep(0.1)
            execution = await (await client.get(f"/api/v1/executions/{execution['id']}", headers=me)).json()
        assert execution["state"] == "COMPLETE", execution
        listed = await (await client.get("/api/v1/executions", headers=me)).json()
        assert [e["id"] for e in listed["items"]] == [execution["id"]]
        print(execution["id"])
    finally:
        await client.close()

asyncio.run(main(sys.argv[2], int(sys.argv[3]), sys.argv[4]))
"""


def previous_release(tmp_path: Path) -> Path:
    known = subprocess.run(["git", "-C", str(REPO), "cat-file", "-e", PREVIOUS_RELEASE], check=False)
    assert known.returncode == 0, f"the previous release {PREVIOUS_RELEASE} is not in this clone's history"
    tree = tmp_path / "previous"
    tree.mkdir()
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", PREVIOUS_RELEASE, "provider", "config/assets", "contracts"],
        check=True,
        capture_output=True,
    )
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive.stdout, check=True)
    return tree


async def test_the_previous_release_runs_on_a_schema_this_release_migrated(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    store = SqlStore(f"sqlite+aiosqlite:///{data / 'provider.db'}")
    await store.prepare(migrate=True)
    assert await migrate.current_revision(store) == migrate.HEAD
    await store.close()

    tree = previous_release(tmp_path)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        OLD_SERVICE,
        str(tree),
        str(data),
        str(free_port()),
        ADMIN_KEY,
        cwd=tmp_path,
        env={"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin"},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    assert process.returncode == 0, err.decode()[-4000:]
    execution_id = out.decode().split()[-1]

    # What the previous release wrote reads back here, and this release works on beside it.
    store = SqlStore(f"sqlite+aiosqlite:///{data / 'provider.db'}")
    try:
        await store.prepare(migrate=False)
        async with store.read() as uow:
            execution = await uow.executions.get(execution_id)
        assert execution is not None and execution.state.value == "COMPLETE"
        assert execution.program is None and execution.steps == ()
    finally:
        await store.close()


async def test_a_replica_starts_on_a_newer_schema_only_when_it_admits_this_code(tmp_path: Path) -> None:
    store = SqlStore(f"sqlite+aiosqlite:///{tmp_path / 'provider.db'}")
    try:
        await store.prepare(migrate=True)
        newer = f"{int(migrate.HEAD) + 1:04d}"
        async with store.engine.begin() as conn:
            await conn.execute(sa.text("UPDATE alembic_version SET version_num = :v"), {"v": newer})
            await conn.execute(
                sa.text("UPDATE schema_compatibility SET oldest_code = :v"), {"v": migrate.HEAD}
            )
        await store.prepare(migrate=False)  # admitted: starts, as in a rolling upgrade
        await store.prepare(migrate=True)  # and does not try to migrate "back"
        async with store.engine.begin() as conn:
            await conn.execute(sa.text("UPDATE schema_compatibility SET oldest_code = :v"), {"v": newer})
        for migrate_on_start in (False, True):
            with pytest.raises(
                migrate.NewerSchema, match=f"schema is at {newer}, which code at {migrate.HEAD}"
            ):
                await store.prepare(migrate=migrate_on_start)
    finally:
        await store.close()
