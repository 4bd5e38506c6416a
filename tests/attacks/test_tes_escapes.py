"""A TES task on the local backend, of an asset that lets consumers run their own commands, tries
to leave its file system: the service's database, another tenant's workspace, the service's
processes and their environment, the host's devices, the host's directories. Each must fail.

The service's data lies outside /tmp here (/var/tmp), so that what hides it is the hiding, not
the task's private /tmp.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from provider.config import Settings
from tests.conftest import Api, live_api
from tests.test_executions import local_compute
from tests.test_tes import BASE, SHELL, consumer, finished

PROBE = r"""
try() { if "$@" >/dev/null 2>&1; then echo "ESCAPED: $*"; else echo "refused: $1 $2"; fi; }
try cat "$DB"
try cat "$VICTIM"
try ls "$DATA/workspaces"
try cat /proc/$SERVICE_PID/environ
try touch /usr/escaped
try touch /var/tmp/escaped
try dd if=/dev/sda of=/dev/null bs=1 count=1
try umount /proc
try mount -o remount,rw,bind /usr
try python3 -c 'import os; os.chroot("/tmp")'
try cat "$ROOT_ONLY"
try grep -q not-for-tasks "$CONFIG"
try touch "$SUBMOUNT/escaped"
echo "processes: $(for p in /proc/[0-9]*; do tr '\0' ' ' < $p/cmdline; echo -n '|'; done)"
echo "devices: $(ls /dev | tr '\n' ' ')"
"""


@pytest.fixture
def data_dir(migrated_sqlite: Path) -> Iterator[Path]:
    data = Path("/var/tmp") / f"provider-test-{uuid.uuid4().hex[:8]}"
    data.mkdir(parents=True)
    shutil.copyfile(migrated_sqlite, data / "provider.db")
    # A file system mounted below a host directory the task sees (as /run/lock or a separate
    # /var/tmp would be): read-only to the task too.
    submount = Path(f"{data}-mnt")
    submount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "none", str(submount)], check=True)
    yield data
    subprocess.run(["umount", str(submount)], check=False)
    submount.rmdir()
    shutil.rmtree(data, ignore_errors=True)
    Path(f"{data}-private.txt").unlink(missing_ok=True)
    Path(f"{data}-provider.yaml").unlink(missing_ok=True)


@pytest.fixture
async def live(settings: Settings, data_dir: Path, tmp_path: Path, contract: Any) -> AsyncIterator[Api]:
    assets = tmp_path / "assets"
    assets.mkdir()
    (assets / "shell.yaml").write_text(yaml.safe_dump(SHELL))
    moved = settings.model_copy(
        update={"data_dir": data_dir, "assets": settings.assets.model_copy(update={"directory": assets})}
    )
    # As `provider serve --config FILE` reads it: a file of secrets, world-readable here.
    config = data_dir.parent / f"{data_dir.name}-provider.yaml"
    config.write_text("auth: {bootstrap_admin_key: not-for-tasks}\n")
    moved._source_path = config
    api, close = await live_api(moved, contract, compute=local_compute(moved))
    yield api
    await close()


async def test_a_task_cannot_read_the_service_or_other_workspaces_or_touch_the_host(
    live: Api, data_dir: Path
) -> None:
    key, ws = await consumer(live)
    victim_key, victim_ws = await consumer(live, "did:web:victim.example")
    await live.json(
        "PUT", f"/api/v1/workspaces/{victim_ws}/objects/secret.txt", 201, key=victim_key, data=b"victim data"
    )
    victim = next((data_dir / "workspaces").rglob("secret.txt"))
    # A file of the service's user that no one else may read, outside anything hidden.
    root_only = data_dir.parent / f"{data_dir.name}-private.txt"
    root_only.write_text("private")
    root_only.chmod(0o600)
    assert victim.read_bytes() == b"victim data"  # it is there, on this host
    body = {
        "resources": {"backend_parameters": {"workspace": ws}},
        "executors": [
            {
                "image": SHELL["image"],
                "command": ["/bin/sh", "-c", PROBE],
                "env": {
                    "DB": str(data_dir / "provider.db"),
                    "VICTIM": str(victim),
                    "DATA": str(data_dir),
                    "SERVICE_PID": str(os.getpid()),
                    "ROOT_ONLY": str(root_only),
                    "CONFIG": str(data_dir.parent / f"{data_dir.name}-provider.yaml"),
                    "SUBMOUNT": f"{data_dir}-mnt",
                },
            }
        ],
    }
    created = await live.json("POST", f"{BASE}/tasks", 200, key=key, json=body)
    done = await finished(live, key, created["id"])
    assert done["state"] == "COMPLETE", done
    said = done["logs"][-1]["logs"][0]["stdout"]
    assert not [line for line in said.splitlines() if line.startswith("ESCAPED")], said
    assert sum(line.startswith("refused: ") for line in said.splitlines()) == 13, said
    processes = said.split("\nprocesses: ")[1].split("\ndevices: ")[0]  # their command lines
    assert "pytest" not in processes and "local_program" in processes, processes  # its own alone
    devices = said.split("\ndevices: ")[1].split()
    assert set(devices) <= {
        "null",
        "zero",
        "full",
        "random",
        "urandom",
        "tty",
        "fd",
        "stdin",
        "stdout",
        "stderr",
        "shm",
    }
    assert not await asyncio.to_thread(Path("/usr/escaped").exists)
    assert not await asyncio.to_thread(Path("/var/tmp/escaped").exists)
    assert not await asyncio.to_thread(Path(f"{data_dir}-mnt/escaped").exists)
