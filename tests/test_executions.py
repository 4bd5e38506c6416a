"""Executions end to end on the local backend: the sidecar, the worker, states, logs, outputs."""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import shutil
import tarfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from provider.app import build_compute
from provider.backends.compute.local import LocalCompute
from provider.config import Settings
from tests.conftest import ADMIN_KEY, REPO, WAIT_SECONDS, Api, live_api, poll_until

SCRIPT_ASSETS: dict[str, dict[str, Any]] = {
    "fail": {"code": "import sys; print('about to fail'); sys.exit(7)"},
    "sleepy": {"code": "import time; print('sleeping', flush=True); time.sleep(600)", "max_run_seconds": 600},
    "deadline": {"code": "import time; time.sleep(30)", "max_run_seconds": 1},
    "nooutput": {"code": "print('forgot to write the result')"},
    "tree": {
        "code": (
            "import os, shutil, sys; src = sys.argv[1]; dst = sys.argv[2]; "
            "shutil.copytree(src, os.path.join(dst, 'tree'));"
            "print(sorted(os.listdir(src)))"
        ),
        "args": ["{input:data}", "{result_dir}"],
        "inputs": [{"name": "data", "kind": "archive", "mount_path": "/data"}],
        "outputs": [{"name": "tree", "path": "tree", "kind": "directory"}],
    },
}


def script_asset(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": name,
        "version": "1.0.0",
        "title": name,
        "image": "python:3.12-slim",
        "inputs": spec.get("inputs", []),
        "outputs": spec.get("outputs", [{"name": "result", "path": "result.txt"}]),
        "max_run_seconds": spec.get("max_run_seconds", 120),
        "local": {"command": ["{python}", "-c", spec["code"], *spec.get("args", [])]},
    }


@pytest.fixture
def exec_settings(settings: Settings, tmp_path: Path) -> Settings:
    assets = tmp_path / "assets"
    assets.mkdir()
    shutil.copy(REPO / "config" / "assets" / "dummy.yaml", assets)
    for name, spec in SCRIPT_ASSETS.items():
        (assets / f"{name}.yaml").write_text(yaml.safe_dump(script_asset(name, spec)))
    compute = settings.compute.model_copy(
        update={
            "local": settings.compute.local.model_copy(
                update={"max_concurrent": 2, "cancel_grace_seconds": 2}
            )
        }
    )
    # Long-polls may wait far longer than a test does: an answer within the test's wait is a wake.
    executions = settings.executions.model_copy(update={"max_wait_seconds": 300})
    return settings.model_copy(
        update={
            "assets": settings.assets.model_copy(update={"directory": assets}),
            "compute": compute,
            "executions": executions,
        }
    )


def local_compute(settings: Settings) -> LocalCompute:
    """The local backend, built here so that tests can ask it which executions it holds back."""
    compute = build_compute(settings, CollectorRegistry())
    assert isinstance(compute, LocalCompute)
    return compute


@pytest.fixture
def local(exec_settings: Settings) -> LocalCompute:
    return local_compute(exec_settings)


@pytest.fixture
async def live(exec_settings: Settings, contract, local: LocalCompute) -> AsyncIterator[Api]:  # type: ignore[no-untyped-def]
    api, close = await live_api(exec_settings, contract, compute=local)
    yield api
    await close()


async def setup(api: Api, participant: str = "did:web:runner") -> tuple[str, str]:
    tenant = await api.json(
        "POST", "/api/v1/tenants", 201, key=ADMIN_KEY, json={"participant_id": participant}
    )
    key = (await api.json("POST", f"/api/v1/tenants/{tenant['id']}/api-keys", 201, key=ADMIN_KEY, json={}))[
        "key"
    ]
    ws = await api.json("POST", "/api/v1/workspaces", 201, key=key, json={})
    return key, ws["id"]


async def run(api: Api, key: str, ws: str, asset: str, **body: Any) -> dict[str, Any]:
    return dict(
        await api.json(
            "POST", "/api/v1/executions", 201, key=key, json={"asset_id": asset, "workspace_id": ws, **body}
        )
    )


async def until(
    api: Api, key: str, execution: dict[str, Any], states: set[str], limit: float = WAIT_SECONDS
) -> dict[str, Any]:
    """Follow with long-polls until the execution reaches one of `states`."""
    deadline = time.monotonic() + limit
    current = execution
    while current["state"] not in states:
        assert time.monotonic() < deadline, current
        response = await api.request(
            "GET", f"/api/v1/executions/{current['id']}?wait=5&version={current['version']}", key=key
        )
        if response.status == 200:
            current = await response.json()
    return current


async def held_back(compute: LocalCompute, execution_id: str) -> None:
    """The local backend holds the execution back for a free slot: it has had its chance to start."""
    await poll_until(lambda: execution_id in compute.waiting(), f"{execution_id} waiting for a slot")


async def test_dummy_end_to_end_is_binary_safe(live: Api) -> None:
    key, ws = await setup(live)
    data = os.urandom(1_500_000) + bytes(range(256))
    await live.json("PUT", f"/api/v1/workspaces/{ws}/objects/in/blob.bin", 201, key=key, data=data)
    created = await run(
        live,
        key,
        ws,
        "dummy",
        inputs={"source": "in/blob.bin"},
        env={"SLEEP_SECONDS": "0"},
        labels={"study": "x"},
    )
    assert (
        created["state"] == "QUEUED" and created["version"] == 1 and created["env"] == {"SLEEP_SECONDS": "0"}
    )
    done = await until(live, key, created, {"COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR"})
    assert done["state"] == "COMPLETE", done
    assert [h["state"] for h in done["history"]] == [
        "QUEUED",
        "INITIALIZING",
        "RUNNING",
        "FINALIZING",
        "COMPLETE",
    ]
    assert done["exit_code"] == 0 and done["version"] >= 5
    [output] = done["outputs"]
    assert output == {
        "name": "output",
        "key": f"executions/{done['id']}/outputs/output",
        "size": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
    }
    got = await live.request("GET", f"/api/v1/workspaces/{ws}/objects/{output['key']}", key=key)
    assert await got.read() == data  # random bytes in, identical bytes out
    listing = await live.json("GET", f"/api/v1/executions/{done['id']}/outputs", 200, key=key)
    assert listing["outputs"][0]["sha256"] == output["sha256"] and listing["outputs"][0]["presigned"] is False
    manifest = await live.request(
        "GET", f"/api/v1/workspaces/{ws}/objects/executions/{done['id']}/outputs/manifest.json", key=key
    )
    assert manifest.status == 200

    async def logs_kept() -> dict[str, Any] | None:  # right after the final state
        final = await live.json("GET", f"/api/v1/executions/{done['id']}", 200, key=key)
        return dict(final) if final["logs_key"] else None

    final = await poll_until(logs_kept, "the logs kept in the workspace")
    assert final["logs_key"] == f"executions/{done['id']}/logs/worker.log"
    logs = await (await live.request("GET", f"/api/v1/executions/{done['id']}/logs", key=key)).text()
    assert "dummy: copied" in logs
    stored = await live.request("GET", f"/api/v1/workspaces/{ws}/objects/{final['logs_key']}", key=key)
    assert "dummy: copied" in await stored.text()
    tail = await (await live.request("GET", f"/api/v1/executions/{done['id']}/logs?tail=1", key=key)).text()
    assert tail.count("\n") <= 1 and "copied" in tail


async def test_worker_failure_is_executor_error_with_exit_code_and_logs(live: Api) -> None:
    key, ws = await setup(live)
    done = await until(
        live, key, await run(live, key, ws, "fail"), {"EXECUTOR_ERROR", "COMPLETE", "SYSTEM_ERROR"}
    )
    assert done["state"] == "EXECUTOR_ERROR" and done["exit_code"] == 7 and done["reason"] == "ExitCode"
    logs = await (await live.request("GET", f"/api/v1/executions/{done['id']}/logs", key=key)).text()
    assert "about to fail" in logs


async def test_deadline_is_executor_error_deadline_exceeded(live: Api) -> None:
    key, ws = await setup(live)
    done = await until(
        live, key, await run(live, key, ws, "deadline"), {"EXECUTOR_ERROR", "COMPLETE", "SYSTEM_ERROR"}
    )
    assert done["state"] == "EXECUTOR_ERROR" and done["reason"] == "DeadlineExceeded"


async def test_missing_output_names_it(live: Api) -> None:
    key, ws = await setup(live)
    done = await until(
        live, key, await run(live, key, ws, "nooutput"), {"EXECUTOR_ERROR", "COMPLETE", "SYSTEM_ERROR"}
    )
    assert done["state"] == "EXECUTOR_ERROR" and done["reason"] == "MissingOutput"
    assert "result" in done["message"]


async def test_archive_input_and_directory_output(live: Api) -> None:
    key, ws = await setup(live)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, content in (("a.txt", b"alpha"), ("sub/b.bin", os.urandom(1000))):
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    await live.json("PUT", f"/api/v1/workspaces/{ws}/objects/data.tgz", 201, key=key, data=buffer.getvalue())
    done = await until(
        live,
        key,
        await run(live, key, ws, "tree", inputs={"data": "data.tgz"}),
        {"COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR"},
    )
    assert done["state"] == "COMPLETE", done
    assert sorted(o["key"].split("/outputs/")[1] for o in done["outputs"]) == ["tree/a.txt", "tree/sub/b.bin"]


async def test_cancel_running_then_finished_is_409(live: Api) -> None:
    key, ws = await setup(live)
    running = await until(live, key, await run(live, key, ws, "sleepy"), {"RUNNING"})
    canceling = await live.json("POST", f"/api/v1/executions/{running['id']}/cancel", 202, key=key)
    assert canceling["state"] in ("CANCELING", "CANCELED")
    done = await until(live, key, canceling, {"CANCELED"})
    assert done["history"][-2]["state"] == "CANCELING"
    problem = await live.json("POST", f"/api/v1/executions/{running['id']}/cancel", 409, key=key)
    assert "CANCELED" in problem["detail"]


async def test_concurrency_limit_keeps_excess_queued_and_queued_cancel_is_immediate(
    live: Api, local: LocalCompute
) -> None:
    key, ws = await setup(live)
    first = await run(live, key, ws, "sleepy")
    second = await run(live, key, ws, "sleepy")
    third = await run(live, key, ws, "sleepy")  # max_concurrent is 2
    await until(live, key, first, {"RUNNING"})
    await until(live, key, second, {"RUNNING"})
    await held_back(local, third["id"])
    waiting = await live.json("GET", f"/api/v1/executions/{third['id']}", 200, key=key)
    assert waiting["state"] == "QUEUED"
    canceled = await live.json("POST", f"/api/v1/executions/{third['id']}/cancel", 202, key=key)
    assert canceled["state"] == "CANCELED"
    for execution in (first, second):
        await live.json("POST", f"/api/v1/executions/{execution['id']}/cancel", 202, key=key)


async def test_validation_lists_every_problem(live: Api) -> None:
    key, ws = await setup(live)
    problem = await live.json(
        "POST",
        "/api/v1/executions",
        422,
        key=key,
        json={
            "asset_id": "dummy",
            "workspace_id": ws,
            "inputs": {"source": "nope.bin", "extra": "x"},
            "env": {"SLEEP_SECONDS": "forever", "PATH": "/evil"},
        },
    )
    fields = {e["field"]: e["message"] for e in problem["errors"]}
    assert "nope.bin" in fields["body.inputs.source"] and "does not exist" in fields["body.inputs.source"]
    assert "no input 'extra'" in fields["body.inputs.extra"]
    assert "must be a value matching" in fields["body.env.SLEEP_SECONDS"]
    assert "not a variable" in fields["body.env.PATH"]
    missing = await live.json(
        "POST", "/api/v1/executions", 422, key=key, json={"asset_id": "dummy", "workspace_id": ws}
    )
    assert missing["errors"] == [{"field": "body.inputs.source", "message": "required input is missing"}]
    await live.json(
        "POST", "/api/v1/executions", 404, key=key, json={"asset_id": "nothing", "workspace_id": ws}
    )
    await live.json(
        "POST",
        "/api/v1/executions",
        404,
        key=key,
        json={"asset_id": "dummy", "asset_version": "9.9", "workspace_id": ws},
    )
    await live.json(
        "POST", "/api/v1/executions", 404, key=key, json={"asset_id": "dummy", "workspace_id": "ws_x"}
    )
    assert (await live.json("GET", "/api/v1/executions", 200, key=key))["items"] == []


async def test_idempotency_key_makes_retries_safe(live: Api) -> None:
    key, ws = await setup(live)
    await live.json("PUT", f"/api/v1/workspaces/{ws}/objects/in.txt", 201, key=key, data=b"x")
    body = {
        "asset_id": "dummy",
        "workspace_id": ws,
        "inputs": {"source": "in.txt"},
        "env": {"SLEEP_SECONDS": "0"},
    }
    headers = {"Idempotency-Key": "retry-1"}
    first = await live.json("POST", "/api/v1/executions", 201, key=key, json=body, headers=headers)
    again = await live.json("POST", "/api/v1/executions", 200, key=key, json=body, headers=headers)
    assert again["id"] == first["id"]
    problem = await live.json(
        "POST", "/api/v1/executions", 422, key=key, json={**body, "labels": {"x": "y"}}, headers=headers
    )
    assert problem["errors"][0]["field"] == "header.Idempotency-Key"
    page = await live.json("GET", "/api/v1/executions", 200, key=key)
    assert [e["id"] for e in page["items"]] == [first["id"]]
    await until(live, key, first, {"COMPLETE"})


async def test_long_poll_answers_on_change_or_304(live: Api) -> None:
    key, ws = await setup(live)
    sleeper = await until(live, key, await run(live, key, ws, "sleepy"), {"RUNNING"})
    started = time.monotonic()
    response = await live.request(
        "GET", f"/api/v1/executions/{sleeper['id']}?wait=0.5&version={sleeper['version']}", key=key
    )
    assert response.status == 304 and time.monotonic() - started >= 0.45
    etag = (await live.request("GET", f"/api/v1/executions/{sleeper['id']}", key=key)).headers["ETag"]
    cached = await live.request(
        "GET", f"/api/v1/executions/{sleeper['id']}", key=key, headers={"If-None-Match": etag}
    )
    assert cached.status == 304

    from provider.api.context import CONTEXT

    executions = live.app[CONTEXT].executions
    # Waits of 300 s, answered within the test's far shorter wait: only the change can answer.
    waiting = asyncio.create_task(
        live.json(
            "GET", f"/api/v1/executions/{sleeper['id']}?wait=300&version={sleeper['version']}", 200, key=key
        )
    )
    await poll_until(lambda: executions.reads._waited.get(sleeper["id"]), "the long-poll waiting")
    await live.json("POST", f"/api/v1/executions/{sleeper['id']}/cancel", 202, key=key)
    changed = await asyncio.wait_for(waiting, WAIT_SECONDS)
    assert changed["version"] > sleeper["version"]


async def test_list_filters_and_tenant_isolation(live: Api) -> None:
    key, ws = await setup(live)
    other_key, other_ws = await setup(live, "did:web:other")
    a = await until(live, key, await run(live, key, ws, "fail", labels={"team": "a"}), {"EXECUTOR_ERROR"})
    b = await until(live, key, await run(live, key, ws, "nooutput", labels={"team": "b"}), {"EXECUTOR_ERROR"})
    await until(live, other_key, await run(live, other_key, other_ws, "fail"), {"EXECUTOR_ERROR"})
    mine = await live.json("GET", "/api/v1/executions", 200, key=key)
    assert [e["id"] for e in mine["items"]] == [b["id"], a["id"]]  # newest first, own tenant only
    by_label = await live.json("GET", "/api/v1/executions?label=team=a", 200, key=key)
    assert [e["id"] for e in by_label["items"]] == [a["id"]]
    by_asset = await live.json(
        "GET", "/api/v1/executions?asset_id=nooutput&state=EXECUTOR_ERROR", 200, key=key
    )
    assert [e["id"] for e in by_asset["items"]] == [b["id"]]
    page = await live.json("GET", "/api/v1/executions?page_size=1", 200, key=key)
    rest = await live.json(
        "GET", f"/api/v1/executions?page_size=1&page_token={page['next_page_token']}", 200, key=key
    )
    assert [e["id"] for e in page["items"] + rest["items"]] == [b["id"], a["id"]]
    await live.json("GET", f"/api/v1/executions/{a['id']}", 404, key=other_key)
    await live.json("GET", f"/api/v1/executions/{a['id']}/logs", 404, key=other_key)
    await live.json("POST", f"/api/v1/executions/{a['id']}/cancel", 404, key=other_key)
    everything = await live.json("GET", "/api/v1/executions", 200, key=ADMIN_KEY)
    assert len(everything["items"]) == 3
    await live.json("GET", "/api/v1/executions?state=BOGUS", 400, key=key)


async def test_workspace_tokens_need_execution_scopes(live: Api) -> None:
    key, ws = await setup(live)
    reader = await live.json(
        "POST", f"/api/v1/workspaces/{ws}/tokens", 201, key=key, json={"scopes": ["executions:read"]}
    )
    runner = await live.json(
        "POST",
        f"/api/v1/workspaces/{ws}/tokens",
        201,
        key=key,
        json={"scopes": ["executions:run", "executions:read"]},
    )
    await live.json(
        "POST", "/api/v1/executions", 403, key=reader["token"], json={"asset_id": "fail", "workspace_id": ws}
    )
    started = await live.json(
        "POST", "/api/v1/executions", 201, key=runner["token"], json={"asset_id": "fail", "workspace_id": ws}
    )
    await live.json("GET", f"/api/v1/executions/{started['id']}", 200, key=reader["token"])
    _, other_ws = await setup(live, "did:web:third")
    await live.json(
        "POST",
        "/api/v1/executions",
        404,
        key=runner["token"],
        json={"asset_id": "fail", "workspace_id": other_ws},
    )
    await until(live, key, started, {"EXECUTOR_ERROR"})


async def test_unknown_execution_is_404_everywhere(live: Api) -> None:
    key, _ = await setup(live)
    for path in ("", "/logs", "/outputs"):
        await live.json("GET", f"/api/v1/executions/exe_missing{path}", 404, key=key)


async def test_restart_loses_running_local_executions_but_not_their_record(
    exec_settings: Settings, contract
) -> None:  # type: ignore[no-untyped-def]
    api, close = await live_api(exec_settings, contract)
    key, ws = await setup(api)
    running = await until(api, key, await run(api, key, ws, "sleepy"), {"RUNNING"})
    await close()  # the service stops; its worker processes die with it
    # With retries off, a lost execution ends SYSTEM_ERROR, reason Lost ...
    no_retries = exec_settings.model_copy(
        update={"executions": exec_settings.executions.model_validate({"retry": {"max_attempts": 1}})}
    )
    again, close_again = await live_api(no_retries, contract)
    try:
        lost = await again.json("GET", f"/api/v1/executions/{running['id']}", 200, key=key)
        assert lost["state"] == "SYSTEM_ERROR" and lost["reason"] == "Lost"
        assert "RUNNING" in lost["message"]
        running = await until(again, key, await run(again, key, ws, "sleepy"), {"RUNNING"})
    finally:
        await close_again()
    # ... and by default it runs again as its next attempt (tests/test_retries.py has the rest).
    third, close_third = await live_api(exec_settings, contract)
    try:
        retried = await third.json("GET", f"/api/v1/executions/{running['id']}", 200, key=key)
        assert retried["attempt"] == 2 and retried["state"] in ("QUEUED", "INITIALIZING", "RUNNING")
        assert retried["attempts"][0]["reason"] == "Lost" and "RUNNING" in retried["attempts"][0]["message"]
    finally:
        await close_third()


async def test_per_tenant_limit_keeps_a_busy_tenant_waiting_but_not_others(
    exec_settings: Settings,
    contract,  # type: ignore[no-untyped-def]
) -> None:
    limited = exec_settings.model_copy(
        update={"compute": exec_settings.compute.model_copy(update={"per_tenant_max_concurrent": 1})}
    )
    compute = local_compute(limited)
    api, close = await live_api(limited, contract, compute=compute)
    try:
        key, ws = await setup(api)
        other_key, other_ws = await setup(api, "did:web:neighbour")
        first = await until(api, key, await run(api, key, ws, "sleepy"), {"RUNNING"})
        second = await run(api, key, ws, "sleepy")
        neighbour = await until(api, other_key, await run(api, other_key, other_ws, "sleepy"), {"RUNNING"})
        await held_back(compute, second["id"])
        assert (await api.json("GET", f"/api/v1/executions/{second['id']}", 200, key=key))[
            "state"
        ] == "QUEUED"
        await api.json("POST", f"/api/v1/executions/{first['id']}/cancel", 202, key=key)
        await until(api, key, second, {"RUNNING"})
        for execution, owner in ((second, key), (neighbour, other_key)):
            await api.json("POST", f"/api/v1/executions/{execution['id']}/cancel", 202, key=owner)
    finally:
        await close()
