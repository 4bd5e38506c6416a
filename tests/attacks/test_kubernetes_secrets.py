"""Attack: an execution's credentials Secret outlives its Job on a hardened cluster.

The API server here runs the admission plugin OwnerReferencesPermissionEnforcement (OpenShift
enables it) for a requester holding exactly the Role in deploy/kubernetes/role.yaml. An owner
reference the plugin refuses leaves the Secret, with its workspace token or S3 credentials, to
live on after the Job; so each test ends by removing the Job the way something other than the
service would (the TTL controller, `kubectl delete job`) and checks that the garbage collector
took the Secret along.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from provider.backends.compute.kubernetes import backend as kubernetes_backend
from provider.backends.compute.kubernetes.manifests import job_name, owner_reference, secret_name
from provider.domain.executions import State
from tests.fake_kube.fixtures import fake_kube  # noqa: F401
from tests.fake_kube.rbac import load_role
from tests.fake_kube.server import FakeKube
from tests.test_kubernetes_backend import (  # noqa: F401
    NS,
    REPO,
    Backend,
    Kubelet,
    job_spec,
    kubeconfig,
    kubelet,
    leader,
    start_backend,
    until,
)

SHIPPED_ROLE = REPO / "deploy" / "kubernetes" / "role.yaml"


@pytest.fixture(autouse=True)
def hardened(fake_kube: FakeKube) -> None:  # noqa: F811
    fake_kube.owner_references_role = load_role(SHIPPED_ROLE)


def owners(fake: FakeKube, execution_id: str) -> list[dict[str, object]] | None:
    """The owner references of the execution's Secret; None when there is no Secret."""
    secret = fake.get("secrets", NS, secret_name(execution_id))
    return None if secret is None else list(secret["metadata"].get("ownerReferences") or [])


def job_uid(fake: FakeKube, execution_id: str) -> str | None:
    job = fake.get("jobs", NS, job_name(execution_id))
    return None if job is None else str(job["metadata"]["uid"])


async def job_removed_by_someone_else(fake: FakeKube, execution_id: str) -> None:
    if fake.get("jobs", NS, job_name(execution_id)) is not None:
        fake.delete_job(NS, job_name(execution_id))  # as the TTL controller or kubectl would
    await fake.settle()


async def test_the_secret_is_owned_by_its_job_and_goes_with_it(
    start_backend: Callable[..., Awaitable[Backend]],  # noqa: F811
    fake_kube: FakeKube,  # noqa: F811
) -> None:
    backend, recorder = await start_backend()
    spec = job_spec()
    await backend.submit(spec)
    assert recorder.events == []  # submitted without a refusal
    uid = job_uid(fake_kube, spec.execution_id)
    assert uid is not None
    assert owners(fake_kube, spec.execution_id) == [
        {"apiVersion": "batch/v1", "kind": "Job", "name": job_name(spec.execution_id), "uid": uid}
    ]
    await job_removed_by_someone_else(fake_kube, spec.execution_id)
    assert fake_kube.get("secrets", NS, secret_name(spec.execution_id)) is None


async def test_a_refused_owner_reference_fails_the_submission_and_leaves_nothing(
    start_backend: Callable[..., Awaitable[Backend]],  # noqa: F811
    fake_kube: FakeKube,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Were the reference to block its owner's deletion, the plugin would refuse the Secret.
    def blocking(job: dict[str, Any]) -> dict[str, Any]:
        return {**owner_reference(job), "blockOwnerDeletion": True}

    monkeypatch.setattr(kubernetes_backend, "owner_reference", blocking)
    backend, recorder = await start_backend()
    spec = job_spec()
    await backend.submit(spec)
    refused = recorder.last(spec.execution_id)
    assert refused.state is State.SYSTEM_ERROR and refused.reason == "Forbidden"
    assert "can't set finalizers on" in (refused.message or "")
    assert fake_kube.get("secrets", NS, secret_name(spec.execution_id)) is None
    assert fake_kube.get("jobs", NS, job_name(spec.execution_id)) is None  # no pod waits for it


async def test_a_release_whose_secret_delete_fails_still_removes_the_secret(
    start_backend: Callable[..., Awaitable[Backend]],  # noqa: F811
    fake_kube: FakeKube,  # noqa: F811
) -> None:
    backend, _ = await start_backend()
    spec = job_spec()
    await backend.submit(spec)
    # The execution ended; its Job is deleted, then the API server fails the Secret's delete.
    fake_kube.inject_fault(method="DELETE", path=r"/secrets/", status=503)
    await backend.release(spec.execution_id)
    await fake_kube.settle()
    assert fake_kube.get("jobs", NS, job_name(spec.execution_id)) is None
    assert fake_kube.get("secrets", NS, secret_name(spec.execution_id)) is None


# Each write a submission makes, and the moment a crash just before it is answered would leave.
CRASH_POINTS = [
    ("POST", r"/jobs$"),
    ("POST", r"/secrets$"),
    ("PATCH", r"/secrets/"),
]


@pytest.mark.parametrize(("method", "path"), CRASH_POINTS, ids=[f"{m} {p}" for m, p in CRASH_POINTS])
async def test_a_crash_during_submission_leaves_no_secret_without_its_job(
    start_backend: Callable[..., Awaitable[Backend]],  # noqa: F811
    fake_kube: FakeKube,  # noqa: F811
    method: str,
    path: str,
) -> None:
    backend, _ = await start_backend()
    spec = job_spec()
    # The request reaches the server and hangs there; the replica dies before it is answered.
    stalled = fake_kube.inject_fault(method=method, path=path, status=None, delay=60)
    submission = asyncio.create_task(backend.submit(spec))
    await until(lambda: stalled.hits == 1 or submission.done(), what="the submission to reach the write")
    submission.cancel()
    await asyncio.gather(submission, return_exceptions=True)
    await backend.stop()
    fake_kube.clear_faults()

    refs = owners(fake_kube, spec.execution_id)
    if refs is not None:  # a Secret was written: it belongs to the Job that exists
        assert [r["uid"] for r in refs] == [job_uid(fake_kube, spec.execution_id)]
    await job_removed_by_someone_else(fake_kube, spec.execution_id)
    assert fake_kube.get("secrets", NS, secret_name(spec.execution_id)) is None


async def test_a_job_whose_secret_never_came_ends_and_is_deleted(
    start_backend: Callable[..., Awaitable[Backend]],  # noqa: F811
    fake_kube: FakeKube,  # noqa: F811
    kubelet: Kubelet,  # noqa: F811
) -> None:
    first, _ = await start_backend()
    spec = job_spec()
    stalled = fake_kube.inject_fault(method="POST", path=r"/secrets$", status=None, delay=60)
    submission = asyncio.create_task(first.submit(spec))
    await until(lambda: stalled.hits == 1, what="the Secret's creation to reach the server")
    submission.cancel()
    await asyncio.gather(submission, return_exceptions=True)
    await first.stop()  # the replica died between the Job and its Secret
    fake_kube.clear_faults()
    assert job_uid(fake_kube, spec.execution_id) is not None
    assert owners(fake_kube, spec.execution_id) is None

    # The pod cannot start without its Secret; once the grace is over the execution ends.
    _, recorder = await leader(start_backend)
    pod = kubelet.start_pod(spec.execution_id)
    message = f'secret "{secret_name(spec.execution_id)}" not found'
    kubelet.state(pod, "stage-in", "waiting", reason="CreateContainerConfigError", message=message)
    ended = await recorder.wait_for(spec.execution_id, State.SYSTEM_ERROR)
    assert ended.reason == "ContainerConfig" and message in (ended.message or "")
    await until(lambda: job_uid(fake_kube, spec.execution_id) is None, what="the Job deleted")
