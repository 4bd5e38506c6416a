"""A real workflow engine through the TES API: Snakemake with its TES executor plugin.

Snakemake (tests/services/snakemake.sh) runs a two-step workflow against the service, whose
workspaces live on the radosgw. Its default storage is the workspace itself (s3://, with the
workspace's temporary credentials), so the second step reads the first's output inside the same
workspace, and only the workflow's sources and its tasks' documents ever leave the engine. The
result must be byte for byte what a local run of the same workflow makes.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from provider.config import Settings
from tests.conftest import ADMIN_KEY, REPO, Api, live_api, s3_settings
from tests.test_executions import local_compute

SNAKEMAKE_VENV = REPO / ".venv-snakemake"
IMAGE = "snakemake/snakemake:v9.27.1"
SNAKEFILE = """
rule all:
    input: "results/summary.txt"

rule shout:
    input: "data/words.txt"
    output: "results/shouted.txt"
    shell: "tr a-z A-Z < {input} > {output}"

rule summarize:
    input: "results/shouted.txt"
    output: "results/summary.txt"
    shell: "wc -l < {input} > {output}; sort {input} >> {output}"
"""
WORDS = b"data\nstays\nwhere\nit\nis\n"

pytestmark = pytest.mark.s3


@pytest.fixture(scope="session")
def snakemake() -> Path:
    if os.environ.get("PROVIDER_TEST_SNAKEMAKE", "").lower() == "off":
        pytest.skip("PROVIDER_TEST_SNAKEMAKE=off")
    subprocess.run(["bash", str(REPO / "tests" / "services" / "snakemake.sh")], check=True, timeout=900)
    return SNAKEMAKE_VENV / "bin" / "snakemake"


@pytest.fixture
def workflow_settings(settings: Settings, tmp_path: Path, radosgw: str) -> Settings:
    assets = tmp_path / "assets"
    assets.mkdir()
    bin_dir = SNAKEMAKE_VENV / "bin"
    asset = {
        "id": "snakemake",
        "version": "9.27.1",
        "title": "Snakemake workflow steps",
        "image": IMAGE,
        "consumer_command": True,
        "resources": {"cpu": "2", "memory": "2Gi", "ephemeral_storage": "4Gi"},
        "max_run_seconds": 600,
        # The local backend runs the image's software from the host: here, Snakemake's venv.
        "local": {"command": ["true"], "env": {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": "/tmp"}},
    }
    (assets / "snakemake.yaml").write_text(yaml.safe_dump(asset))
    return settings.model_copy(
        update={
            "assets": settings.assets.model_copy(update={"directory": assets}),
            "storage": settings.storage.model_validate(s3_settings(radosgw)),
        }
    )


@pytest.fixture
async def live(workflow_settings: Settings, contract: Any) -> AsyncIterator[Api]:
    api, close = await live_api(workflow_settings, contract, compute=local_compute(workflow_settings))
    yield api
    await close()


async def run(command: list[str], cwd: Path, env: dict[str, str]) -> str:
    process = await asyncio.create_subprocess_exec(
        *command, cwd=cwd, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    output, _ = await process.communicate()
    text = output.decode(errors="replace")
    assert process.returncode == 0, f"{' '.join(command[:3])} failed:\n{text[-6000:]}"
    return text


async def test_snakemake_runs_a_two_step_workflow_in_the_workspace(
    live: Api, snakemake: Path, tmp_path: Path
) -> None:
    tenant = await live.json(
        "POST", "/api/v1/tenants", 201, key=ADMIN_KEY, json={"participant_id": "did:web:lab"}
    )
    key = (await live.json("POST", f"/api/v1/tenants/{tenant['id']}/api-keys", 201, key=ADMIN_KEY, json={}))[
        "key"
    ]
    ws = (await live.json("POST", "/api/v1/workspaces", 201, key=key, json={}))["id"]
    await live.json("PUT", f"/api/v1/workspaces/{ws}/objects/data/words.txt", 201, key=key, data=WORDS)
    token = await live.json(
        "POST",
        f"/api/v1/workspaces/{ws}/tokens",
        201,
        key=key,
        json={"scopes": ["executions:run", "executions:read", "objects:read", "objects:write"]},
    )
    s3 = await live.json("POST", f"/api/v1/workspaces/{ws}/credentials", 201, key=key)

    # The engine's side: the Snakefile, nothing of the data.
    remote_dir = tmp_path / "remote"
    remote_dir.mkdir()
    (remote_dir / "Snakefile").write_text(SNAKEFILE)
    env = {"PATH": f"{snakemake.parent}:/usr/bin:/bin", "HOME": str(tmp_path), "LANG": "C.UTF-8"}
    output = await run(
        [
            str(snakemake),
            "--executor",
            "tes",
            "--tes-url",
            # py-tes 0.4, which the plugin uses, appends /v1/tasks to what it is given.
            str(live.client.make_url("/ga4gh/tes")),
            "--tes-token",
            token["token"],
            "--jobs",
            "2",
            "--container-image",
            IMAGE,
            "--default-storage-provider",
            "s3",
            "--default-storage-prefix",
            f"s3://{s3['bucket']}/{s3['prefix']}".rstrip("/"),
            "--storage-s3-endpoint-url",
            s3["endpoint_url"],
            "--storage-s3-access-key",
            s3["access_key_id"],
            "--storage-s3-secret-key",
            s3["secret_access_key"],
            "--storage-s3-token",
            s3["session_token"],
            "--latency-wait",
            "5",
        ],
        remote_dir,
        env,
    )
    assert "3 of 3 steps (100%) done" in output, output[-3000:]

    # Both steps ran as tasks in this workspace, in order, and read each other's data there.
    tasks = (await live.json("GET", "/ga4gh/tes/v1/tasks?view=BASIC", 200, key=key))["tasks"]
    by_rule = {rule: t for t in tasks for rule in ("shout", "summarize") if f".{rule}." in t["name"]}
    assert len(tasks) == 2 and set(by_rule) == {"shout", "summarize"}, [t["name"] for t in tasks]
    assert all(t["state"] == "COMPLETE" for t in tasks), tasks
    assert by_rule["shout"]["logs"][-1]["end_time"] <= by_rule["summarize"]["logs"][-1]["start_time"]
    assert {t["executors"][0]["image"] for t in tasks} == {IMAGE}
    shouted = await live.request("GET", f"/api/v1/workspaces/{ws}/objects/results/shouted.txt", key=key)
    assert await shouted.read() == WORDS.upper()  # the first step's output, in the workspace
    remote = await live.request("GET", f"/api/v1/workspaces/{ws}/objects/results/summary.txt", key=key)
    assert remote.status == 200

    # The same workflow, run locally on a copy of the data.
    local_dir = tmp_path / "local"
    (local_dir / "data").mkdir(parents=True)
    (local_dir / "Snakefile").write_text(SNAKEFILE)
    (local_dir / "data" / "words.txt").write_bytes(WORDS)
    await run([str(snakemake), "--cores", "1"], local_dir, env)
    assert await remote.read() == (local_dir / "results" / "summary.txt").read_bytes()
    shutil.rmtree(local_dir)


async def test_a_task_reads_and_writes_its_workspace_by_s3_urls(live: Api) -> None:
    """On S3 storage a task may name its workspace's objects as the workspace's temporary
    credentials see them: s3://<bucket>/<prefix><key>; another bucket is refused."""
    info = await live.json("GET", "/ga4gh/tes/v1/service-info", 200)
    assert any(s.startswith("s3://") for s in info["storage"])
    tenant = await live.json(
        "POST", "/api/v1/tenants", 201, key=ADMIN_KEY, json={"participant_id": "did:web:s3"}
    )
    key = (await live.json("POST", f"/api/v1/tenants/{tenant['id']}/api-keys", 201, key=ADMIN_KEY, json={}))[
        "key"
    ]
    ws = (await live.json("POST", "/api/v1/workspaces", 201, key=key, json={}))["id"]
    await live.json("PUT", f"/api/v1/workspaces/{ws}/objects/data/words.txt", 201, key=key, data=WORDS)
    s3 = await live.json("POST", f"/api/v1/workspaces/{ws}/credentials", 201, key=key)
    base = f"s3://{s3['bucket']}/{s3['prefix']}"
    body = {
        "inputs": [{"url": f"{base}data/words.txt", "path": "/in/words.txt"}],
        "outputs": [{"url": f"{base}results/sorted.txt", "path": "/out/sorted.txt"}],
        "executors": [{"image": IMAGE, "command": ["/bin/sh", "-c", "sort /in/words.txt > /out/sorted.txt"]}],
    }
    created = await live.json("POST", "/ga4gh/tes/v1/tasks", 200, key=key, json=body)
    deadline = asyncio.get_running_loop().time() + 120
    while (task := await live.json("GET", f"/ga4gh/tes/v1/tasks/{created['id']}?view=BASIC", 200, key=key))[
        "state"
    ] not in ("COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR"):
        assert asyncio.get_running_loop().time() < deadline, task
        await asyncio.sleep(0.2)
    assert task["state"] == "COMPLETE", task
    assert task["logs"][-1]["outputs"][0]["url"] == f"{base}results/sorted.txt"
    sorted_words = await live.request("GET", f"/api/v1/workspaces/{ws}/objects/results/sorted.txt", key=key)
    assert await sorted_words.read() == b"".join(sorted(WORDS.splitlines(keepends=True)))
    other = {**body, "inputs": [{"url": "s3://someone-elses-bucket/data/words.txt", "path": "/in/words.txt"}]}
    problem = await live.json("POST", "/ga4gh/tes/v1/tasks", 400, key=key, json=other)
    assert "must name the task's workspace" in problem["errors"][0]["message"]
