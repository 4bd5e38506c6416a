"""The whole service with Kubernetes compute, against the fake API server.

The pod is run for real by a stand-in kubelet: it reads the Job the service created, resolves
the Secret references, and runs stage-in (the real sidecar), the worker command and stage-out
as local processes with the pod's mounts mapped to a directory, reporting container states
through the fake. So the bytes go through the same sidecar, credentials and manifest as in a
cluster.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import os
import re
import shutil
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry

from provider.api.context import CONTEXT
from provider.app import build_compute, create_app
from provider.backends.compute.kubernetes import KubernetesCompute
from provider.backends.compute.kubernetes.manifests import ATTEMPT, SELECTOR, job_name
from provider.backends.sql import SqlStore
from provider.config import Settings
from tests.conftest import (
    POSTGRES_URL,
    WAIT_SECONDS,
    Api,
    free_port,
    live_api,
    poll_until,
    postgres_enabled,
)
from tests.fake_kube import KubeError
from tests.fake_kube.fixtures import fake_kube  # noqa: F401
from tests.fake_kube.server import FakeKube
from tests.test_executions import REPO, run, setup, until

NS = "default"


@pytest.fixture
def k8s_settings(settings: Settings, tmp_path: Path, fake_kube: FakeKube) -> Settings:  # noqa: F811
    assets = tmp_path / "assets"
    assets.mkdir()
    shutil.copy(REPO / "config" / "assets" / "dummy.yaml", assets)
    kubernetes = settings.compute.kubernetes.model_copy(
        update={
            "kubeconfig": fake_kube.write_kubeconfig(tmp_path / "kubeconfig"),
            "lease_seconds": 2.0,
            "renew_seconds": 0.3,
            "reconcile_seconds": 3600,
            "image_pull_grace_seconds": 1.0,
        }
    )
    compute = settings.compute.model_copy(update={"backend": "kubernetes", "kubernetes": kubernetes})
    return settings.model_copy(
        update={"assets": settings.assets.model_copy(update={"directory": assets}), "compute": compute}
    )


@pytest.fixture
async def live(k8s_settings: Settings, contract) -> AsyncIterator[Api]:  # type: ignore[no-untyped-def]
    api, close = await live_api(k8s_settings, contract)
    yield api
    await close()


class ProcessKubelet:
    """Runs a Job's pod as local processes, container by container, as kubelet would."""

    def __init__(self, fake: FakeKube, root: Path) -> None:
        self.fake = fake
        self.root = root

    def _env(self, container: dict[str, Any], mounts: dict[str, Path]) -> dict[str, str]:
        env = {"PATH": os.environ.get("PATH", os.defpath), "PYTHONUNBUFFERED": "1"}
        for item in container.get("env", []):
            if "value" in item:
                env[item["name"]] = self._map(item["value"], mounts)
                continue
            ref = item["valueFrom"]["secretKeyRef"]
            secret = self.fake.get("secrets", NS, ref["name"])
            assert secret is not None, f"pod refers to a missing Secret {ref['name']}"
            env[item["name"]] = base64.b64decode(secret["data"][ref["key"]]).decode()
        return env

    @staticmethod
    def _map(value: str, mounts: dict[str, Path]) -> str:
        for mount in sorted(mounts, key=len, reverse=True):
            if value == mount or value.startswith(mount + "/"):
                return str(mounts[mount]) + value[len(mount) :]
        return value

    async def run(self, execution_id: str) -> str:
        pod = self.fake.create_job_pod(NS, job_name(execution_id))
        name = pod["metadata"]["name"]
        spec = pod["spec"]
        scratch = self.root / name
        (scratch / "tmp").mkdir(parents=True)
        containers = [*spec["initContainers"], *spec["containers"]]
        for container in containers:
            mounts = {
                m["mountPath"]: (scratch / m["subPath"]) if "subPath" in m else scratch
                for m in container.get("volumeMounts", [])
                if m["name"] == "scratch"
            }
            mounts["/tmp"] = scratch / "tmp"
            if container["name"] == "worker":
                command = [sys.executable if c == "python" else c for c in container["command"]]
            else:
                command = [sys.executable, "-m", "provider.sidecar"]
            argv = [*command, *(self._map(a, mounts) for a in container.get("args", []))]
            self.fake.set_container_state(NS, name, container["name"], "running")
            process = await asyncio.create_subprocess_exec(
                *argv,
                env=self._env(container, mounts),
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
            )
            output, _ = await process.communicate()
            if container["name"] == "worker":
                self.fake.write_log(NS, name, "worker", output.decode())
            code = process.returncode
            assert code is not None
            self.fake.set_container_state(
                NS,
                name,
                container["name"],
                "terminated",
                exit_code=code,
                message=output.decode()[-500:] if code else None,
            )
            if code != 0:
                self.fake.set_pod_phase(NS, name, "Failed")
                self.fake.set_job_condition(
                    NS, job_name(execution_id), "Failed", reason="BackoffLimitExceeded"
                )
                return name
        self.fake.set_pod_phase(NS, name, "Succeeded")
        self.fake.set_job_condition(NS, job_name(execution_id), "Complete")
        return name


class Running(NamedTuple):
    key: str  # the new tenant's API key
    workspace: str
    created: dict[str, Any]  # the execution as created
    pod: str
    execution: dict[str, Any]  # the execution, RUNNING


async def a_running_execution(api: Api, fake: FakeKube) -> Running:
    """A new tenant's execution of the dummy asset whose pod staged in and runs the worker."""
    key, ws = await setup(api)
    await api.json("PUT", f"/api/v1/workspaces/{ws}/objects/in.bin", 201, key=key, data=b"x")
    created = await run(api, key, ws, "dummy", inputs={"source": "in.bin"})
    pod = fake.create_job_pod(NS, job_name(created["id"]))["metadata"]["name"]
    fake.set_container_state(NS, pod, "stage-in", "terminated", exit_code=0)
    fake.set_container_state(NS, pod, "worker", "running")
    return Running(key, ws, created, pod, await until(api, key, created, {"RUNNING"}))


async def test_execution_end_to_end_through_a_job(
    live: Api,
    fake_kube: FakeKube,  # noqa: F811
    tmp_path: Path,
) -> None:
    key, ws = await setup(live)
    data = os.urandom(300_000) + bytes(range(256))
    await live.json("PUT", f"/api/v1/workspaces/{ws}/objects/in/blob.bin", 201, key=key, data=data)
    created = await run(live, key, ws, "dummy", inputs={"source": "in/blob.bin"}, env={"SLEEP_SECONDS": "0"})
    assert created["state"] == "QUEUED"
    job = fake_kube.get("jobs", NS, job_name(created["id"]))
    assert job is not None  # created while the request was served
    assert job["metadata"]["labels"]["provider/tenant"] == created["tenant_id"]

    await ProcessKubelet(fake_kube, tmp_path / "node").run(created["id"])
    done = await until(live, key, created, {"COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR"})
    assert done["state"] == "COMPLETE", done
    assert [h["state"] for h in done["history"]][-1] == "COMPLETE"
    [output] = done["outputs"]  # read from the sidecar's manifest in the workspace
    assert output["size"] == len(data) and output["sha256"] == hashlib.sha256(data).hexdigest()
    got = await live.request("GET", f"/api/v1/workspaces/{ws}/objects/{output['key']}", key=key)
    assert await got.read() == data

    async def cleaned_up() -> dict[str, Any] | None:  # the worker's log is kept, then the Job deleted
        final = await live.json("GET", f"/api/v1/executions/{done['id']}", 200, key=key)
        gone = fake_kube.get("jobs", NS, job_name(created["id"])) is None
        return dict(final) if final["logs_key"] and gone else None

    final = await poll_until(cleaned_up, "the log kept and the Job deleted")
    assert final["logs_key"] == f"executions/{done['id']}/logs/worker.log"
    logs = await (await live.request("GET", f"/api/v1/executions/{done['id']}/logs", key=key)).text()
    assert "dummy: copied" in logs
    assert fake_kube.get("jobs", NS, job_name(created["id"])) is None
    assert not [
        p
        for p in fake_kube.objects("pods", NS)
        if p["metadata"]["labels"].get("provider/execution") == done["id"]
    ]
    # The Secret with the job's credentials went with it.
    assert not [
        s for s in fake_kube.objects("secrets", NS) if s["metadata"]["name"].startswith(job_name(done["id"]))
    ]


async def test_cancel_and_worker_failure_through_the_api(
    live: Api,
    fake_kube: FakeKube,  # noqa: F811
) -> None:
    key, ws, created, pod, running = await a_running_execution(live, fake_kube)
    canceled = await live.json("POST", f"/api/v1/executions/{created['id']}/cancel", 202, key=key)
    assert canceled["state"] in ("CANCELING", "CANCELED")
    final = await until(live, key, running, {"CANCELED", "SYSTEM_ERROR"})
    assert final["state"] == "CANCELED"
    assert fake_kube.get("jobs", NS, job_name(created["id"])) is None

    failing = await run(live, key, ws, "dummy", inputs={"source": "in.bin"})
    pod = fake_kube.create_job_pod(NS, job_name(failing["id"]))["metadata"]["name"]
    fake_kube.set_container_state(NS, pod, "stage-in", "terminated", exit_code=0)
    fake_kube.set_container_state(NS, pod, "worker", "terminated", exit_code=9, message="boom")
    failed = await until(live, key, failing, {"EXECUTOR_ERROR", "SYSTEM_ERROR", "COMPLETE"})
    assert (failed["state"], failed["exit_code"], failed["reason"]) == ("EXECUTOR_ERROR", 9, "ExitCode")


async def test_restart_reconciles_lost_executions_and_orphaned_jobs(
    k8s_settings: Settings,
    contract,  # type: ignore[no-untyped-def]
    fake_kube: FakeKube,  # noqa: F811
) -> None:
    api, close = await live_api(k8s_settings, contract)
    key, ws = await setup(api)
    await api.json("PUT", f"/api/v1/workspaces/{ws}/objects/in.bin", 201, key=key, data=b"x")
    created = await run(api, key, ws, "dummy", inputs={"source": "in.bin"})
    pod = fake_kube.create_job_pod(NS, job_name(created["id"]))["metadata"]["name"]
    fake_kube.set_container_state(NS, pod, "stage-in", "running")
    await until(api, key, created, {"INITIALIZING"})
    await close()

    # While the service is away, someone deletes the Job, and a stray Job of ours appears.
    fake_kube.delete_job(NS, job_name(created["id"]))
    stray = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": "provider-exe-stray",
            "labels": dict(pair.split("=") for pair in SELECTOR.split(","))
            | {"provider/execution": "exe_stray"},
        },
        "spec": {
            "template": {
                "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}
            }
        },
    }
    fake_kube.create_object("jobs", NS, stray)

    no_retries = k8s_settings.model_copy(  # retries of lost executions: tests/test_retries.py
        update={"executions": k8s_settings.executions.model_validate({"retry": {"max_attempts": 1}})}
    )
    api, close = await live_api(no_retries, contract)
    try:
        lost = await until(api, key, created, {"SYSTEM_ERROR", "COMPLETE"})
        assert lost["state"] == "SYSTEM_ERROR" and lost["reason"] == "Lost"
        await poll_until(
            lambda: fake_kube.get("jobs", NS, "provider-exe-stray") is None, "the stray Job deleted"
        )
    finally:
        await close()


def with_kubernetes(settings: Settings, **changes: Any) -> Settings:
    kubernetes = settings.compute.kubernetes.model_copy(update=changes)
    return settings.model_copy(
        update={"compute": settings.compute.model_copy(update={"kubernetes": kubernetes})}
    )


async def follow(
    api: Api, key: str, execution: dict[str, Any], done: Any, limit: float = WAIT_SECONDS
) -> dict[str, Any]:
    """Long-poll the execution until `done(execution)` holds."""
    current = execution
    async with asyncio.timeout(limit):
        while not done(current):
            path = f"/api/v1/executions/{current['id']}?wait=5&version={current['version']}"
            response = await api.request("GET", path, key=key)
            if response.status == 200:
                current = await response.json()
    return current


def refuse(fake: FakeKube, execution_id: str, problem: str) -> None:
    """The cluster refuses the Job's pod; the Job controller tries and records FailedCreate."""
    fake.refuse_pods(NS, job_name(execution_id), problem)
    with pytest.raises(KubeError):
        fake.create_job_pod(NS, job_name(execution_id))


async def test_a_pod_the_cluster_refuses_shows_why_and_never_blames_the_worker(
    k8s_settings: Settings,
    contract,  # type: ignore[no-untyped-def]
    fake_kube: FakeKube,  # noqa: F811
) -> None:
    quota = "exceeded quota: pods, requested: pods=1, used: pods=4, limited: pods=4"
    api, close = await live_api(with_kubernetes(k8s_settings, pod_create_grace_seconds=3600), contract)
    try:
        key, ws = await setup(api)
        await api.json("PUT", f"/api/v1/workspaces/{ws}/objects/in.bin", 201, key=key, data=b"x")
        created = await run(api, key, ws, "dummy", inputs={"source": "in.bin"})
        refuse(fake_kube, created["id"], quota)
        queued = await follow(api, key, created, lambda e: e["reason"] is not None)
        assert (queued["state"], queued["reason"]) == ("QUEUED", "QuotaExceeded")
        assert queued["message"].startswith("Error creating: pods ") and queued["message"].endswith(quota)
        # The Job controller gives up at the Job's deadline; no pod was ever made.
        fake_kube.set_job_condition(NS, job_name(created["id"]), "Failed", reason="DeadlineExceeded")
        ended = await until(api, key, queued, {"SYSTEM_ERROR", "EXECUTOR_ERROR", "COMPLETE"})
        assert (ended["state"], ended["reason"]) == ("SYSTEM_ERROR", "QuotaExceeded")
        assert ended["message"] == queued["message"]
    finally:
        await close()


async def test_a_pod_refused_past_the_grace_ends_the_execution_and_its_job(
    k8s_settings: Settings,
    contract,  # type: ignore[no-untyped-def]
    fake_kube: FakeKube,  # noqa: F811
) -> None:
    api, close = await live_api(with_kubernetes(k8s_settings, pod_create_grace_seconds=1), contract)
    try:
        key, ws = await setup(api)
        await api.json("PUT", f"/api/v1/workspaces/{ws}/objects/in.bin", 201, key=key, data=b"x")
        created = await run(api, key, ws, "dummy", inputs={"source": "in.bin"})
        refuse(fake_kube, created["id"], 'pod rejected: RuntimeClass "gvisor" not found')
        ended = await until(api, key, created, {"SYSTEM_ERROR", "EXECUTOR_ERROR", "COMPLETE"})
        assert (ended["state"], ended["reason"]) == ("SYSTEM_ERROR", "PodCreateRefused")
        assert ended["message"].endswith('is forbidden: pod rejected: RuntimeClass "gvisor" not found')
        assert [h["state"] for h in ended["history"]] == ["QUEUED", "SYSTEM_ERROR"]
        await fake_kube.wait_until(lambda: fake_kube.get("jobs", NS, job_name(created["id"])) is None)
    finally:
        await close()


async def stale_observations(api: Api) -> float:
    text = await (await api.request("GET", "/metrics", check=False)).text()
    found = re.search(r"^provider_kubernetes_stale_observations_total (\S+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


async def test_a_replaced_pod_behind_the_execution_changes_nothing_and_is_counted(
    live: Api,
    fake_kube: FakeKube,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="provider")
    key, _, created, pod, running = await a_running_execution(live, fake_kube)
    # The Job controller's replacement pod, pending and newer (creationTimestamp counts seconds):
    # the Job now looks QUEUED.
    started = pod_created(fake_kube, pod)
    await fake_kube.wait_until(lambda: now_stamp() > started, within=WAIT_SECONDS)
    fake_kube.create_job_pod(NS, job_name(created["id"]), node=None)

    async def counted_or_failed() -> bool:  # counted, or (before this was a known case) an error logged
        return await stale_observations(live) >= 1 or bool(errors(caplog))

    await poll_until(counted_or_failed, "the stale observation")
    assert errors(caplog) == []  # no traceback, no retry loop
    assert await stale_observations(live) == 1
    behind = [r for r in caplog.records if "behind the execution" in r.getMessage()]
    assert len(behind) == 1 and behind[0].levelno == logging.INFO and behind[0].exc_info is None
    now = await live.json("GET", f"/api/v1/executions/{created['id']}", 200, key=key)
    assert (now["state"], now["version"]) == ("RUNNING", running["version"])  # it keeps its state


HOLD = "example.com/hold"  # another controller's finalizer: keeps a deleted pod a while


async def test_an_evicted_attempt_runs_again_as_a_new_job_and_its_pod_s_late_end_moves_nothing(
    k8s_settings: Settings,
    contract,  # type: ignore[no-untyped-def]
    fake_kube: FakeKube,  # noqa: F811
    tmp_path: Path,
) -> None:
    retry = {"max_attempts": 2, "backoff_seconds": 0.05, "max_backoff_seconds": 0.2}
    settings = k8s_settings.model_copy(
        update={"executions": k8s_settings.executions.model_validate({"retry": retry})}
    )
    compute = build_compute(settings, CollectorRegistry())
    assert isinstance(compute, KubernetesCompute)
    api, close = await live_api(settings, contract, compute=compute)
    try:
        key, ws = await setup(api)
        await api.json("PUT", f"/api/v1/workspaces/{ws}/objects/in.bin", 201, key=key, data=b"x")
        created = await run(api, key, ws, "dummy", inputs={"source": "in.bin"})
        name = job_name(created["id"])
        evicted = fake_kube.create_job_pod(NS, name)["metadata"]["name"]
        fake_kube.add_finalizer("pods", NS, evicted, HOLD)
        fake_kube.set_container_state(NS, evicted, "stage-in", "terminated", exit_code=0)
        fake_kube.set_container_state(NS, evicted, "worker", "running")
        running = await until(api, key, created, {"RUNNING"})
        fake_kube.set_pod_phase(
            NS, evicted, "Failed", reason="Evicted", message="The node was low on memory."
        )
        retried = await follow(api, key, running, lambda e: e["attempt"] == 2)
        assert (retried["state"], retried["reason"]) == ("QUEUED", "Retry")
        assert [(a["attempt"], a["reason"]) for a in retried["attempts"]] == [(1, "Evicted")]

        def second_job() -> bool:
            job = fake_kube.get("jobs", NS, name)
            return job is not None and job["metadata"]["labels"][ATTEMPT] == "2"

        # The first Job went; the next took its name.
        await fake_kube.wait_until(second_job, within=WAIT_SECONDS)
        held = fake_kube.get("pods", NS, evicted)
        assert held is not None and held["metadata"]["deletionTimestamp"]  # held, being deleted

        # Its end comes late, once the second attempt's Job is there: as if the pod were lost.
        [pods] = [w for w in compute.watches if w.resource == "pods"]
        fake_kube.remove_finalizer("pods", NS, evicted, HOLD)
        gone = int(fake_kube.resource_version)
        await fake_kube.wait_until(lambda: int(pods.resource_version or 0) >= gone, within=WAIT_SECONDS)
        await ProcessKubelet(fake_kube, tmp_path / "node").run(created["id"])
        done = await until(api, key, retried, {"COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR"})
        assert (done["state"], done["attempt"]) == ("COMPLETE", 2), done
        assert [(a["attempt"], a["reason"]) for a in done["attempts"]] == [(1, "Evicted")]
    finally:
        await close()


def errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


def pod_created(fake: FakeKube, pod: str) -> str:
    found = fake.get("pods", NS, pod)
    assert found is not None
    return str(found["metadata"]["creationTimestamp"])


def now_stamp() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.fixture
async def shared_schema() -> AsyncIterator[str]:
    """A fresh PostgreSQL schema for two replicas (a SQLite database is one process's alone)."""
    if not postgres_enabled():
        pytest.skip("PROVIDER_TEST_POSTGRES_URL is off")
    schema = f"test_{uuid.uuid4().hex[:16]}"
    admin = await asyncpg.connect(POSTGRES_URL.replace("postgresql+asyncpg", "postgresql"))
    try:
        await admin.execute(f'CREATE SCHEMA "{schema}"')
        yield schema
    finally:
        await admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await admin.close()


async def replica(
    settings: Settings, contract: Any, schema: str, identity: str, **kubernetes: Any
) -> tuple[Api, Callable[[], Awaitable[None]]]:
    """One replica of the service: its own port and Lease identity, the shared database."""
    port = free_port()
    server = settings.server.model_copy(update={"port": port, "public_url": f"http://127.0.0.1:{port}"})
    app = create_app(
        with_kubernetes(settings, identity=identity, **kubernetes).model_copy(update={"server": server}),
        store=SqlStore(POSTGRES_URL, schema=schema, pool_size=5),
    )
    client = TestClient(TestServer(app, port=port))
    await client.start_server()
    return Api(client, contract, app), client.close


async def test_a_cancel_through_another_replica_ends_canceled_whoever_sees_the_job_go(
    k8s_settings: Settings,
    contract,  # type: ignore[no-untyped-def]
    fake_kube: FakeKube,  # noqa: F811
    shared_schema: str,
) -> None:
    # Both replicas share this process's event loop: a Lease of minutes, so that a stall of the
    # loaded machine cannot hand leadership over in the middle of the test.
    lease = {"lease_seconds": 120.0}
    first, close_first = await replica(k8s_settings, contract, shared_schema, "replica-a", **lease)
    try:
        leader = first.app[CONTEXT].executions.compute
        assert isinstance(leader, KubernetesCompute)
        await fake_kube.wait_until(lambda: leader.leading, within=WAIT_SECONDS)
        second, close_second = await replica(k8s_settings, contract, shared_schema, "replica-b", **lease)
        try:
            other = second.app[CONTEXT].executions.compute
            assert isinstance(other, KubernetesCompute) and not other.leading
            key, _, created, _, running = await a_running_execution(second, fake_kube)
            # The replica that cancels deletes the Job and hears back only later: the leader's
            # watch sees the Job go first.
            job = job_name(created["id"])
            fake_kube.inject_fault("DELETE", rf"/jobs/{job}$", status=None, late=3.0)
            canceled = await second.json("POST", f"/api/v1/executions/{created['id']}/cancel", 202, key=key)
            assert canceled["state"] == "CANCELING"
            for api in (first, second):
                final = await until(api, key, running, {"CANCELED", "SYSTEM_ERROR", "COMPLETE"})
                outcome = (final["state"], final["reason"], final["message"])
                assert outcome == ("CANCELED", "Canceled", "canceled on request"), final
            assert leader.leading and not other.leading
        finally:
            await close_second()
    finally:
        await close_first()
