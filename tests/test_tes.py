"""GA4GH TES 1.1 end to end on the local backend, driven by the py-tes client and by raw HTTP.

Every response is checked against the vendored TES 1.1 OpenAPI (tests/tes_contract.py, through
the Api client's contract check; py-tes's own calls are checked by the service's answers to the
same requests made through Api as well).
"""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import requests
import tes
import yaml
from aiohttp import web
from aiohttp.test_utils import TestServer

from provider.config import Settings
from tests.conftest import ADMIN_KEY, REPO, WAIT_SECONDS, Api, live_api
from tests.test_executions import local_compute, setup

BASE = "/ga4gh/tes/v1"
SHELL_IMAGE = "debian:12-slim"
FINAL = {"COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR", "CANCELED", "PREEMPTED"}

SHELL = {
    "id": "shell",
    "version": "1.0.0",
    "title": "A shell for workflow steps",
    "image": SHELL_IMAGE,
    "consumer_command": True,
    "resources": {"cpu": "2", "memory": "2Gi", "ephemeral_storage": "4Gi"},
    "max_run_seconds": 120,
}


@pytest.fixture
def tes_settings(settings: Settings, tmp_path: Path) -> Settings:
    assets = tmp_path / "assets"
    assets.mkdir()
    shutil.copy(REPO / "config" / "assets" / "dummy.yaml", assets)
    (assets / "shell.yaml").write_text(yaml.safe_dump(SHELL))
    imports = settings.imports.model_copy(update={"allowed_networks": ["127.0.0.0/8"], "max_attempts": 1})
    return settings.model_copy(
        update={"assets": settings.assets.model_copy(update={"directory": assets}), "imports": imports}
    )


@pytest.fixture
async def live(tes_settings: Settings, contract: Any) -> AsyncIterator[Api]:
    api, close = await live_api(tes_settings, contract, compute=local_compute(tes_settings))
    yield api
    await close()


async def consumer(api: Api, participant: str = "did:web:tes.example") -> tuple[str, str]:
    """A tenant's key and a workspace of it."""
    return await setup(api, participant)


def client(api: Api, key: str) -> tes.HTTPClient:
    return tes.HTTPClient(str(api.client.make_url("/")).rstrip("/"), token=key, timeout=30)


async def finished(api: Api, key: str, task_id: str, limit: float = WAIT_SECONDS) -> dict[str, Any]:
    """The task in its FULL view once it reached a final state (polled, as TES clients do; each
    poll waits on the execution's long-poll so that it does not spin)."""
    deadline = time.monotonic() + limit
    while True:
        task = await api.json("GET", f"{BASE}/tasks/{task_id}?view=FULL", 200, key=key)
        if task["state"] in FINAL:
            return dict(task)
        assert time.monotonic() < deadline, task
        execution = await api.json("GET", f"/api/v1/executions/{task_id}", 200, key=key)
        await api.request(
            "GET", f"/api/v1/executions/{task_id}?wait=2&version={execution['version']}", key=key
        )


async def test_service_info_tells_what_is_supported(live: Api) -> None:
    info = await live.json("GET", f"{BASE}/service-info", 200)
    assert info["type"] == {"group": "org.ga4gh", "artifact": "tes", "version": "1.1.0"}
    assert info["storage"][0].startswith("workspace://")
    assert not any(s.startswith("s3://") for s in info["storage"])  # file system storage here
    assert set(info["tesResources_backend_parameters"]) == {"workspace", "asset_version"}
    described = await asyncio.to_thread(client(live, "").get_service_info)
    assert described.type["artifact"] == "tes" and described.storage == info["storage"]


async def test_a_task_with_two_executors_runs_in_its_workspace_and_reads_back_in_each_view(live: Api) -> None:
    key, ws = await consumer(live)
    await live.json(
        "PUT", f"/api/v1/workspaces/{ws}/objects/data/numbers.txt", 201, key=key, data=b"3\n1\n2\n"
    )
    task = tes.Task(
        name="sort-numbers",
        tags={"workflow": "w1", "step": "sort"},
        inputs=[
            tes.Input(url=f"workspace://{ws}/data/numbers.txt", path="/data/numbers.txt"),
            tes.Input(content='#!/bin/sh\nsort -n "$1" > /work/sorted.txt\n', path="/scripts/sort.sh"),
        ],
        outputs=[tes.Output(url=f"workspace://{ws}/results/sorted.txt", path="/out/sorted.txt")],
        volumes=["/work"],
        executors=[
            tes.Executor(image=SHELL_IMAGE, command=["/bin/sh", "/scripts/sort.sh", "/data/numbers.txt"]),
            tes.Executor(
                image=SHELL_IMAGE,
                command=["/bin/sh", "-c", "cp /work/sorted.txt /out/sorted.txt; echo copied; echo oops >&2"],
                workdir="/work",
            ),
        ],
        resources=tes.Resources(cpu_cores=1, ram_gb=0.5),
    )
    tes_client = client(live, key)
    task_id = await asyncio.to_thread(tes_client.create_task, task)
    done = await finished(live, key, task_id)
    assert done["state"] == "COMPLETE", done

    sorted_bytes = await live.request("GET", f"/api/v1/workspaces/{ws}/objects/results/sorted.txt", key=key)
    assert await sorted_bytes.read() == b"1\n2\n3\n"

    log = done["logs"][-1]
    assert [e["exit_code"] for e in log["logs"]] == [0, 0]
    assert log["logs"][1]["stdout"] == "copied\n" and log["logs"][1]["stderr"] == "oops\n"
    assert all(e["start_time"] <= e["end_time"] for e in log["logs"])
    assert log["outputs"] == [
        {"url": f"workspace://{ws}/results/sorted.txt", "path": "/out/sorted.txt", "size_bytes": "6"}
    ]
    assert log["start_time"] <= log["end_time"]
    assert any("COMPLETE" in line for line in log["system_logs"])
    assert done["inputs"][1]["content"].startswith("#!/bin/sh")
    assert done["tags"] == {"workflow": "w1", "step": "sort"}

    minimal = await live.json("GET", f"{BASE}/tasks/{task_id}", 200, key=key)
    assert minimal == {"id": task_id, "state": "COMPLETE"}  # MINIMAL is the default view
    basic = await live.json("GET", f"{BASE}/tasks/{task_id}?view=BASIC", 200, key=key)
    assert "content" not in basic["inputs"][1]
    assert "system_logs" not in basic["logs"][-1]
    assert all("stdout" not in e and "stderr" not in e for e in basic["logs"][-1]["logs"])
    assert basic["executors"][1]["workdir"] == "/work" and basic["name"] == "sort-numbers"
    # py-tes reads every view back into its models.
    full = await asyncio.to_thread(tes_client.get_task, task_id, "FULL")
    assert full.state == "COMPLETE" and full.logs[-1].logs[1].exit_code == 0
    # The task is an execution like any other: the rest of the API sees it.
    execution = await live.json("GET", f"/api/v1/executions/{task_id}", 200, key=key)
    assert execution["asset"]["id"] == "shell" and execution["workspace_id"] == ws


async def test_an_executor_error_stops_the_task_unless_it_is_ignored(live: Api) -> None:
    key, ws = await consumer(live, "did:web:errors.example")
    tes_client = client(live, key)
    stop = tes.Task(
        executors=[
            tes.Executor(image=SHELL_IMAGE, command=["/bin/sh", "-c", "echo failing; exit 3"]),
            tes.Executor(image=SHELL_IMAGE, command=["/bin/sh", "-c", "echo never"]),
        ],
        resources=tes.Resources(backend_parameters={"workspace": ws}),
    )
    stopped = await finished(live, key, await asyncio.to_thread(tes_client.create_task, stop))
    assert stopped["state"] == "EXECUTOR_ERROR"
    assert [e["exit_code"] for e in stopped["logs"][-1]["logs"]] == [3]
    assert stopped["logs"][-1]["logs"][0]["stdout"] == "failing\n"

    go_on = tes.Task(
        executors=[
            tes.Executor(image=SHELL_IMAGE, command=["/bin/sh", "-c", "exit 3"], ignore_error=True),
            tes.Executor(image=SHELL_IMAGE, command=["/bin/sh", "-c", "echo after"]),
        ],
        resources=tes.Resources(backend_parameters={"workspace": ws}),
    )
    went_on = await finished(live, key, await asyncio.to_thread(tes_client.create_task, go_on))
    assert went_on["state"] == "COMPLETE"
    assert [e["exit_code"] for e in went_on["logs"][-1]["logs"]] == [3, 0]


async def test_the_catalog_rules_refuse_what_the_asset_does_not_allow(live: Api) -> None:
    key, ws = await consumer(live)
    other_key, other_ws = await consumer(live, "did:web:other.example")
    await live.json("PUT", f"/api/v1/workspaces/{ws}/objects/in.txt", 201, key=key, data=b"x")
    dummy = yaml.safe_load((REPO / "config" / "assets" / "dummy.yaml").read_text())
    where = {"resources": {"backend_parameters": {"workspace": ws}}}

    async def refused(body: dict[str, Any], field: str, words: str, status: int = 400) -> None:
        problem = await live.json("POST", f"{BASE}/tasks", status, key=key, json=body)
        assert problem["status_code"] == status and problem["msg"]
        messages = {e["field"]: e["message"] for e in problem.get("errors", [])}
        assert field in messages, problem
        assert words in messages[field], messages

    def executor(**changes: Any) -> dict[str, Any]:
        return {"image": dummy["image"], "command": dummy["command"], **changes}

    # An image that is no catalog asset's.
    await refused(
        {**where, "executors": [{"image": "alpine:3", "command": ["sh"]}]},
        "body.executors[0].image",
        "not the image of any catalog asset",
    )
    # The dummy asset runs its own command only.
    await refused(
        {**where, "executors": [executor(command=["sh", "-c", "cat /etc/passwd"])]},
        "body.executors[0].command",
        "consumer_command rule is off",
    )
    await refused(
        {**where, "executors": [executor(env={"LD_PRELOAD": "/x.so"})]},
        "body.executors[0].env.LD_PRELOAD",
        "not a variable asset dummy lets consumers set",
    )
    await refused(
        {**where, "executors": [executor(env={"SLEEP_SECONDS": "forever"})]},
        "body.executors[0].env.SLEEP_SECONDS",
        "must be a value matching",
    )
    # Another tenant's workspace, by URL: neither read nor written.
    await refused(
        {
            **where,
            "executors": [{"image": SHELL_IMAGE, "command": ["true"]}],
            "inputs": [{"url": f"workspace://{other_ws}/in.txt", "path": "/in.txt"}],
        },
        "body.inputs[0].url",
        "its own workspace",
    )
    # ...and as the task's workspace: it is not found for this caller.
    problem = await live.json(
        "POST",
        f"{BASE}/tasks",
        404,
        key=key,
        json={
            "executors": [{"image": SHELL_IMAGE, "command": ["true"]}],
            "resources": {"backend_parameters": {"workspace": other_ws}},
        },
    )
    assert problem["status_code"] == 404
    # Paths on the client's disk, missing objects, wildcards, more than the asset's resources.
    await refused(
        {
            **where,
            "executors": [{"image": SHELL_IMAGE, "command": ["true"]}],
            "inputs": [{"url": "file:///etc/passwd", "path": "/x"}],
        },
        "body.inputs[0].url",
        "client's disk",
    )
    await refused(
        {
            **where,
            "executors": [{"image": SHELL_IMAGE, "command": ["true"]}],
            "inputs": [{"url": f"workspace://{ws}/nope", "path": "/x/y"}],
        },
        "body.inputs[0].url",
        "no object 'nope'",
    )
    await refused(
        {
            **where,
            "executors": [{"image": SHELL_IMAGE, "command": ["true"]}],
            "outputs": [{"url": f"workspace://{ws}/o/", "path": "/out/*.txt"}],
        },
        "body.outputs[0].path",
        "wildcard",
    )
    await refused(
        {
            "executors": [{"image": SHELL_IMAGE, "command": ["true"]}],
            "resources": {"ram_gb": 64, "backend_parameters": {"workspace": ws}},
        },
        "body.resources.ram_gb",
        "more than asset shell allows",
    )
    await refused(
        {
            "executors": [{"image": SHELL_IMAGE, "command": ["true"]}],
            "resources": {
                "backend_parameters": {"workspace": ws, "VmSize": "huge"},
                "backend_parameters_strict": True,
            },
        },
        "body.resources.backend_parameters.vmsize",
        "not supported",
    )
    await refused(
        {"executors": [{"image": SHELL_IMAGE, "command": ["true"]}]},
        "body.resources.backend_parameters.workspace",
        "a task runs in one workspace",
    )
    # Malformed documents: the same problem shape, with GA4GH's members.
    bad = await live.json("POST", f"{BASE}/tasks", 422, key=key, json={"executors": []})
    assert bad["status_code"] == 422 and bad["errors"][0]["field"].startswith("body.executors")
    relative = await live.json(
        "POST",
        f"{BASE}/tasks",
        422,
        key=key,
        json={**where, "executors": [{"image": SHELL_IMAGE, "command": ["true"], "workdir": "tmp"}]},
    )
    assert "absolute path" in relative["errors"][0]["message"]
    # py-tes surfaces the refusal as an HTTP error carrying the rule.
    with pytest.raises(requests.HTTPError) as raised:
        await asyncio.to_thread(
            client(live, key).create_task,
            tes.Task(
                executors=[tes.Executor(image="alpine:3", command=["sh"])],
                resources=tes.Resources(backend_parameters={"workspace": ws}),
            ),
        )
    assert raised.value.response.status_code == 400
    assert "catalog asset" in raised.value.response.json()["errors"][0]["message"]
    # Paths that collide, names no environment takes, URLs that are no URLs, keys that are prefixes.
    shell = {"image": SHELL_IMAGE, "command": ["true"]}
    await refused(
        {
            **where,
            "executors": [shell],
            "volumes": ["/work"],
            "outputs": [{"url": f"workspace://{ws}/w", "path": "/work", "type": "DIRECTORY"}],
        },
        "body.outputs[0].path",
        "is also body.volumes[0]",
    )
    await refused(
        {
            **where,
            "executors": [shell],
            "inputs": [{"url": f"workspace://{ws}/in.txt", "path": "/work/in.txt"}],
            "outputs": [{"url": f"workspace://{ws}/w", "path": "/work", "type": "DIRECTORY"}],
        },
        "body.inputs[0].path",
        "inside output directory /work",
    )
    await refused(
        {**where, "executors": [shell], "outputs": [{"url": f"workspace://{ws}/dir/", "path": "/out/x"}]},
        "body.outputs[0].url",
        "not a prefix",
    )
    await refused(
        {**where, "executors": [shell], "inputs": [{"url": "http://[::1/x", "path": "/in/x"}]},
        "body.inputs[0].url",
        "not a URL",
    )
    await refused(
        {"executors": [shell], "resources": {"ram_gb": 0.000001, "backend_parameters": {"workspace": ws}}},
        "body.resources.ram_gb",
        "less than this service runs with",
    )
    bad_env = await live.json(
        "POST", f"{BASE}/tasks", 422, key=key, json={**where, "executors": [{**shell, "env": {"A=B": "1"}}]}
    )
    assert "not valid environment variable names" in bad_env["errors"][0]["message"]
    await live.json(
        "POST", f"{BASE}/tasks", 422, key=key, json={**where, "executors": [{**shell, "workdir": "//x"}]}
    )
    # An asset that runs its own command takes files only where it reads and writes them.
    await refused(
        {
            **where,
            "executors": [executor()],
            "inputs": [{"url": f"workspace://{ws}/in.txt", "path": "/usr/bin/python3"}],
        },
        "body.inputs[0].path",
        "inputs go to its input paths (/data/source)",
    )
    await refused({**where, "executors": [executor()], "volumes": ["/etc"]}, "body.volumes[0]", "no volumes")
    await refused(
        {**where, "executors": [executor(workdir="/tmp")]}, "body.executors[0].workdir", "no workdir"
    )
    await refused(
        {
            **where,
            "executors": [executor()],
            "outputs": [{"url": f"workspace://{ws}/o", "path": "/etc/passwd"}],
        },
        "body.outputs[0].path",
        "outputs come from /results",
    )
    # A workspace token does with the task what its scopes let it do with the objects, no more.
    run_only = await live.json(
        "POST",
        f"/api/v1/workspaces/{ws}/tokens",
        201,
        key=key,
        json={"scopes": ["executions:run", "executions:read"]},
    )
    for body in (
        {
            "executors": [shell],
            "outputs": [{"url": f"workspace://{ws}/executions/x/outputs/manifest.json", "path": "/o/m"}],
        },
        {"executors": [shell], "inputs": [{"content": "x", "path": "/i/x"}]},
        {"executors": [shell], "inputs": [{"url": f"workspace://{ws}/in.txt", "path": "/i/x"}]},
    ):
        problem = await live.json("POST", f"{BASE}/tasks", 403, key=run_only["token"], json=body)
        assert "lacks the scopes" in problem["detail"] and problem["status_code"] == 403
    # Nothing was started by any of these.
    assert (await live.json("GET", "/api/v1/executions", 200, key=key))["items"] == []
    del other_key


async def test_the_dummy_asset_runs_as_a_task_with_its_own_command_and_variables(live: Api) -> None:
    key, ws = await consumer(live)
    await live.json("PUT", f"/api/v1/workspaces/{ws}/objects/in.bin", 201, key=key, data=bytes(range(256)))
    dummy = yaml.safe_load((REPO / "config" / "assets" / "dummy.yaml").read_text())
    created = await live.json(
        "POST",
        f"{BASE}/tasks",
        200,
        key=key,
        json={
            "inputs": [{"url": f"workspace://{ws}/in.bin", "path": "/data/source"}],
            "outputs": [{"url": f"workspace://{ws}/out/copy.bin", "path": "/results/output"}],
            "executors": [
                {"image": "asset:dummy", "command": dummy["command"], "env": {"SLEEP_SECONDS": "0"}}
            ],
        },
    )
    done = await finished(live, key, created["id"])
    assert done["state"] == "COMPLETE", done
    copy = await live.request("GET", f"/api/v1/workspaces/{ws}/objects/out/copy.bin", key=key)
    assert await copy.read() == bytes(range(256))


async def test_list_filters_by_name_state_and_tags_and_pages_with_tokens(live: Api) -> None:
    key, ws = await consumer(live)
    other_key, other_ws = await consumer(live, "did:web:lister.example")
    where = {"resources": {"backend_parameters": {"workspace": ws}}}
    ids = {}
    for name, tags, code in (
        ("align-1", {"foo": "bar"}, 0),
        ("align-2", {"foo": "bar", "baz": "bat"}, 0),
        ("call-1", {"foo": ""}, 1),
        ("call-2", {}, 0),
    ):
        body = {
            **where,
            "name": name,
            "tags": tags,
            "executors": [{"image": SHELL_IMAGE, "command": ["/bin/sh", "-c", f"exit {code}"]}],
        }
        ids[name] = (await live.json("POST", f"{BASE}/tasks", 200, key=key, json=body))["id"]
    for task_id in ids.values():
        await finished(live, key, task_id)
    await live.json(
        "POST",
        f"{BASE}/tasks",
        200,
        key=other_key,
        json={
            "name": "align-3",
            "resources": {"backend_parameters": {"workspace": other_ws}},
            "executors": [{"image": SHELL_IMAGE, "command": ["true"]}],
        },
    )

    async def names(query: str, who: str = key) -> list[str]:
        found = await live.json("GET", f"{BASE}/tasks?view=BASIC&{query}", 200, key=who)
        return sorted(t["name"] for t in found["tasks"])

    assert await names("") == ["align-1", "align-2", "call-1", "call-2"]  # never another tenant's
    assert await names("name_prefix=align") == ["align-1", "align-2"]
    assert await names("state=EXECUTOR_ERROR") == ["call-1"]
    assert await names("state=COMPLETE&name_prefix=call") == ["call-2"]
    assert await names("state=PAUSED") == []
    # TES 1.1's table: an empty value matches any value of the key; every pair must match.
    assert await names("tag_key=foo&tag_value=bar") == ["align-1", "align-2"]
    assert await names("tag_key=foo") == ["align-1", "align-2", "call-1"]
    assert await names("tag_key=foo&tag_value=bar&tag_key=baz&tag_value=bat") == ["align-2"]
    assert await names("tag_key=foo&tag_value=bat") == []
    assert await names("", other_key) == ["align-3"]
    assert await names("name_prefix=ALIGN") == []  # prefixes match exactly, case included
    assert await names("tag_key=foo&tag_value=bat&tag_key=foo&tag_value=bar") == [
        "align-1",
        "align-2",
    ]  # last wins
    # Pages of one, newest first, by next_page_token until there is none.
    seen, token = [], None
    while True:
        query = f"{BASE}/tasks?page_size=1" + (f"&page_token={token}" if token else "")
        page = await live.json("GET", query, 200, key=key)
        assert len(page["tasks"]) <= 1 and set(page["tasks"][0]) == {"id", "state"} if page["tasks"] else True
        seen += [t["id"] for t in page["tasks"]]
        token = page.get("next_page_token")
        if not token:
            break
    assert seen == sorted(ids.values(), reverse=True)
    listed = await asyncio.to_thread(client(live, key).list_tasks, "MINIMAL", 2)
    assert len(listed.tasks) == 2 and listed.next_page_token
    # Bad queries are refused, not ignored.
    await live.json("GET", f"{BASE}/tasks?state=DONE", 400, key=key)
    await live.json("GET", f"{BASE}/tasks?tag_value=x", 400, key=key)
    await live.json("GET", f"{BASE}/tasks?page_size=2048", 400, key=key)
    await live.json("GET", f"{BASE}/tasks?page_token=garbage!", 400, key=key)
    # A workspace token sees its workspace's tasks only.
    token_body = await live.json(
        "POST",
        f"/api/v1/workspaces/{other_ws}/tokens",
        201,
        key=other_key,
        json={"scopes": ["executions:read"]},
    )
    assert await names("", token_body["token"]) == ["align-3"]


async def test_cancel_stops_a_running_task_and_is_harmless_on_an_ended_one(live: Api) -> None:
    key, ws = await consumer(live)
    tes_client = client(live, key)
    task = tes.Task(
        executors=[tes.Executor(image=SHELL_IMAGE, command=["/bin/sh", "-c", "echo started; sleep 600"])],
        resources=tes.Resources(backend_parameters={"workspace": ws}),
    )
    task_id = await asyncio.to_thread(tes_client.create_task, task)
    deadline = time.monotonic() + WAIT_SECONDS
    while (await live.json("GET", f"{BASE}/tasks/{task_id}", 200, key=key))["state"] != "RUNNING":
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    await asyncio.to_thread(tes_client.cancel_task, task_id)
    done = await finished(live, key, task_id)
    assert done["state"] == "CANCELED"
    assert await live.json("POST", f"{BASE}/tasks/{task_id}:cancel", 200, key=key) == {}
    plain = await live.json(
        "POST", "/api/v1/executions", 201, key=key, json={"asset_id": "shell", "workspace_id": ws}
    )
    await live.json("POST", f"{BASE}/tasks/{plain['id']}:cancel", 404, key=key)  # not a task
    await live.json("GET", f"{BASE}/tasks/{plain['id']}", 404, key=key)
    other_key, _ = await consumer(live, "did:web:canceler.example")
    await live.json("POST", f"{BASE}/tasks/{task_id}:cancel", 404, key=other_key)
    await live.json("GET", f"{BASE}/tasks/{task_id}", 404, key=other_key)


@pytest.fixture
async def source() -> AsyncIterator[str]:
    """An HTTP server with one file, as another provider's data plane would serve it."""

    async def numbers(_: web.Request) -> web.Response:
        return web.Response(body=b"remote bytes\n")

    app = web.Application()
    app.router.add_get("/numbers.txt", numbers)
    server = TestServer(app)
    await server.start_server()
    yield str(server.make_url(""))
    await server.close()


async def test_http_inputs_are_fetched_into_the_workspace_before_the_task_runs(
    live: Api, source: str
) -> None:
    key, ws = await consumer(live)
    body = {
        "resources": {"backend_parameters": {"workspace": ws}},
        "inputs": [{"url": f"{source}/numbers.txt", "path": "/in/numbers.txt"}],
        "outputs": [{"url": f"workspace://{ws}/copied.txt", "path": "/out/copied.txt"}],
        "executors": [{"image": SHELL_IMAGE, "command": ["cp", "/in/numbers.txt", "/out/copied.txt"]}],
    }
    created = await live.json("POST", f"{BASE}/tasks", 200, key=key, json=body)
    done = await finished(live, key, created["id"])
    assert done["state"] == "COMPLETE", done
    copied = await live.request("GET", f"/api/v1/workspaces/{ws}/objects/copied.txt", key=key)
    assert await copied.read() == b"remote bytes\n"
    # A source that answers 404: the task ends SYSTEM_ERROR, saying which input and why.
    missing = {**body, "inputs": [{"url": f"{source}/missing.txt", "path": "/in/numbers.txt"}]}
    failed = await finished(
        live, key, (await live.json("POST", f"{BASE}/tasks", 200, key=key, json=missing))["id"]
    )
    assert failed["state"] == "SYSTEM_ERROR"
    assert any("missing.txt" in line for line in failed["logs"][-1]["system_logs"])


async def test_http_inputs_keep_to_the_ssrf_guard(live: Api) -> None:
    key, ws = await consumer(live)
    problem = await live.json(
        "POST",
        f"{BASE}/tasks",
        400,
        key=key,
        json={
            "resources": {"backend_parameters": {"workspace": ws}},
            "inputs": [{"url": "http://169.254.169.254/latest/meta-data/", "path": "/in/x"}],
            "executors": [{"image": SHELL_IMAGE, "command": ["true"]}],
        },
    )
    assert problem["type"].endswith("forbidden-address") and problem["status_code"] == 400
    assert problem["errors"][0]["field"] == "body.inputs[0].url"
    assert (await live.json("GET", f"{BASE}/tasks", 200, key=key))["tasks"] == []  # nothing started


async def test_malformed_task_documents_get_a_problem_never_a_500(api: Api) -> None:
    for body, content_type, status in (
        (b"{", "application/json", 400),
        (b"[]", "application/json", 422),
        (b'{"executors": [{"image": "x", "command": ["a"]}]}', "text/plain", 415),
        (b"[" * 200 + b"]" * 200, "application/json", 400),
        (b'{"executors": [{"image": "x", "command": ["a"]}], "tags": {"k": 1}}', "application/json", 422),
        (b'{"executors": [{"image": "x", "command": ["\\u0000"]}]}', "application/json", 422),
    ):
        response = await api.request(
            "POST", f"{BASE}/tasks", key=ADMIN_KEY, data=body, headers={"Content-Type": content_type}
        )
        problem = await response.json(content_type=None)
        assert response.status == status, (body[:40], problem)
        assert problem["status_code"] == status and problem["msg"]
