"""The Kubernetes backend over real HTTP against the fake API server (tests/fake_kube).

The tests play kubelet and the Job controller through the fake's hooks and check what the
backend reports: states in order, without duplicates, through faults of the API server.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from provider.backends.compute.kubernetes import JobSettings, KubernetesCompute, KubernetesOptions
from provider.backends.compute.kubernetes import client as kube_client
from provider.backends.compute.kubernetes.manifests import job_name, secret_name
from provider.config import ConfigError
from provider.domain.assets import Asset
from provider.domain.executions import State
from provider.services.ports import ComputeEvent, JobSpec, Reported, StorageAccess
from tests.conftest import WAIT_SECONDS, free_port
from tests.fake_kube import KubeError
from tests.fake_kube.fixtures import fake_kube  # noqa: F401
from tests.fake_kube.server import FakeKube

NS = "default"
REPO = Path(__file__).parent.parent


class Recorder:
    """The execution service's side of the port: what the backend reported, in order."""

    def __init__(self) -> None:
        self.events: list[ComputeEvent] = []
        self.reconciles: list[float] = []
        self._changed = asyncio.Event()

    async def __call__(self, event: ComputeEvent) -> None:
        self.events.append(event)
        self._changed.set()

    async def reconcile(self, grace: float) -> None:
        self.reconciles.append(grace)

    def states(self, execution_id: str) -> list[State]:
        return [e.state for e in self.events if e.execution_id == execution_id]

    def last(self, execution_id: str) -> ComputeEvent:
        return [e for e in self.events if e.execution_id == execution_id][-1]

    async def wait_for(self, execution_id: str, state: State, within: float = WAIT_SECONDS) -> ComputeEvent:
        deadline = time.monotonic() + within
        while True:
            for event in self.events:
                if event.execution_id == execution_id and event.state is state:
                    return event
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"{execution_id}: no {state.value}; saw {self.states(execution_id)}"
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)


async def until(condition: Callable[[], bool], within: float = WAIT_SECONDS, what: str = "condition") -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


def options(kubeconfig: Path, **changes: Any) -> KubernetesOptions:
    values: dict[str, Any] = {
        "job": JobSettings(namespace=NS, sidecar_image="registry.example/provider-sidecar:test"),
        "kubeconfig": kubeconfig,
        "lease_seconds": 2.0,
        "renew_seconds": 0.3,
        "watch_timeout_seconds": 30,
        "reconcile_seconds": 3600,
        "request_timeout_seconds": 5,
        "image_pull_grace_seconds": 0.5,
        "queued_grace_seconds": 0,
        "max_retry_seconds": 0.3,
    }
    values.update(changes)
    return KubernetesOptions(**values)


def dummy_asset() -> Asset:
    return Asset.model_validate(yaml.safe_load((REPO / "config" / "assets" / "dummy.yaml").read_text()))


COUNTER = iter(range(1_000_000))


def job_spec(execution_id: str | None = None) -> JobSpec:
    execution_id = execution_id or f"exe_01test{next(COUNTER):020d}"
    return JobSpec(
        execution_id=execution_id,
        tenant_id="ten_1",
        asset=dummy_asset(),
        inputs={"source": "in.bin"},
        env={"SLEEP_SECONDS": "0"},
        access=StorageAccess(
            "api",
            secrets={"PROVIDER_WORKSPACE_TOKEN": "token-for-one-workspace"},
            settings={"PROVIDER_API_URL": "http://127.0.0.1:1", "PROVIDER_WORKSPACE_ID": "wsp_1"},
        ),
        version=1,
    )


Backend = tuple[KubernetesCompute, Recorder]


@pytest.fixture
async def kubeconfig(fake_kube: FakeKube, tmp_path: Path) -> Path:  # noqa: F811
    return fake_kube.write_kubeconfig(tmp_path / "kubeconfig")


@pytest.fixture
async def start_backend(kubeconfig: Path) -> AsyncIterator[Callable[..., Awaitable[Backend]]]:
    started: list[KubernetesCompute] = []

    async def start(**changes: Any) -> Backend:
        recorder = Recorder()
        backend = KubernetesCompute(options(kubeconfig, **changes))
        await backend.start(recorder, recorder.reconcile)
        started.append(backend)
        return backend, recorder

    yield start
    for backend in started:
        await backend.stop()


async def leader(start_backend: Callable[..., Awaitable[Backend]], **changes: Any) -> Backend:
    backend, recorder = await start_backend(**changes)
    await until(lambda: backend.leading, what="leadership")
    for watch in backend.watches:
        await asyncio.wait_for(watch.synced.wait(), WAIT_SECONDS)
    return backend, recorder


async def everything_observed(backend: KubernetesCompute, recorder: Recorder, kubelet: Kubelet) -> None:
    """Whatever the cluster did so far has reached the backend and been evaluated: the fake's
    controllers settle, then a Job and a pod made after that are reported. Each watch delivers in
    order, so every earlier change on it came before them."""
    await kubelet.fake.settle(within=WAIT_SECONDS)
    on_jobs, on_pods = job_spec(), job_spec()
    for spec in (on_jobs, on_pods):
        await backend.submit(spec)
    kubelet.fake.set_job_condition(
        NS, job_name(on_jobs.execution_id), "Failed", reason="BackoffLimitExceeded"
    )
    kubelet.start_pod(on_pods.execution_id)
    await recorder.wait_for(on_jobs.execution_id, State.SYSTEM_ERROR)
    await recorder.wait_for(on_pods.execution_id, State.INITIALIZING)


class StoppedClock:
    """A monotonic clock that moves only when told: how much time a lease elector thinks passed."""

    def __init__(self) -> None:
        self.now = time.monotonic()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def campaign_rounds(backend: KubernetesCompute, clock: StoppedClock) -> list[bool]:
    """Give the backend's lease elector `clock`; the list fills with the result of each of its
    rounds (whether it holds the Lease) from now on."""
    elector = backend.elector
    assert elector is not None
    elector.monotonic = clock
    rounds: list[bool] = []
    attempt = elector.try_acquire_or_renew

    async def counted() -> bool:
        held = await attempt()
        rounds.append(held)
        return held

    elector.try_acquire_or_renew = counted  # type: ignore[method-assign]
    return rounds


# --- the kubelet and the Job controller, played through the fake's hooks ----------------------


class Kubelet:
    def __init__(self, fake: FakeKube) -> None:
        self.fake = fake

    def start_pod(self, execution_id: str) -> str:
        pod = self.fake.create_job_pod(NS, job_name(execution_id))
        return str(pod["metadata"]["name"])

    def state(self, pod: str, container: str, state: str, **details: Any) -> None:
        self.fake.set_container_state(NS, pod, container, state, **details)

    def run_to(self, pod: str, stage: str, worker_exit: int = 0) -> None:
        """Move a pod through its containers up to `stage`."""
        steps = {
            "stage-in": [("stage-in", "running", {})],
            "worker": [("stage-in", "terminated", {"exit_code": 0}), ("worker", "running", {})],
            "stage-out": [("worker", "terminated", {"exit_code": worker_exit}), ("stage-out", "running", {})],
        }
        order = ["stage-in", "worker", "stage-out"]
        for name in order[: order.index(stage) + 1]:
            for container, state, details in steps[name]:
                self.state(pod, container, state, **details)

    def succeed(self, execution_id: str, pod: str, stage_out_exit: int = 0) -> None:
        self.state(pod, "stage-out", "terminated", exit_code=stage_out_exit)
        if stage_out_exit == 0:
            self.fake.set_pod_phase(NS, pod, "Succeeded")
            self.fake.set_job_condition(NS, job_name(execution_id), "Complete")
        else:
            self.fake.set_pod_phase(NS, pod, "Failed")
            self.fake.set_job_condition(NS, job_name(execution_id), "Failed", reason="BackoffLimitExceeded")


@pytest.fixture
def kubelet(fake_kube: FakeKube) -> Kubelet:  # noqa: F811
    return Kubelet(fake_kube)


# --- submission -------------------------------------------------------------------------------


async def test_submit_creates_a_valid_job_and_a_secret_owned_by_it(
    start_backend: Callable[..., Awaitable[Backend]],
    fake_kube: FakeKube,  # noqa: F811
) -> None:
    backend, recorder = await start_backend()
    spec = job_spec()
    await backend.submit(spec)
    job = fake_kube.get("jobs", NS, job_name(spec.execution_id))
    secret = fake_kube.get("secrets", NS, secret_name(spec.execution_id))
    assert job is not None and secret is not None
    assert secret["metadata"]["ownerReferences"][0]["uid"] == job["metadata"]["uid"]
    assert base64.b64decode(secret["data"]["PROVIDER_WORKSPACE_TOKEN"]) == b"token-for-one-workspace"
    # What the API server stored is still a valid Job (its defaults included).
    stored = {k: v for k, v in job.items() if k != "status"}
    kubernetes_validate.validate(stored, "1.34.0", strict=True)
    assert recorder.events == []  # nothing to report before anything happened
    # Submitting twice (a reconciliation elsewhere, say) is harmless.
    await backend.submit(spec)
    assert (
        len(
            [j for j in fake_kube.objects("jobs", NS) if j["metadata"]["name"] == job_name(spec.execution_id)]
        )
        == 1
    )


async def test_job_rejected_with_422_is_system_error_with_the_servers_message(
    start_backend: Callable[..., Awaitable[Backend]],
    fake_kube: FakeKube,  # noqa: F811
) -> None:
    backend, recorder = await start_backend()
    fake_kube.inject_fault(
        method="POST",
        path=r"/jobs$",
        status=422,
        reason="Invalid",
        message='Job.batch "x" is invalid: spec.foo',
    )
    spec = job_spec()
    await backend.submit(spec)
    event = recorder.last(spec.execution_id)
    assert event.state is State.SYSTEM_ERROR and "spec.foo" in (event.message or "")
    assert fake_kube.get("secrets", NS, secret_name(spec.execution_id)) is None  # nothing left behind


async def test_quota_keeps_it_queued_with_the_reason_then_retries(
    start_backend: Callable[..., Awaitable[Backend]],
    fake_kube: FakeKube,  # noqa: F811
) -> None:
    backend, recorder = await start_backend()
    fake_kube.inject_fault(
        method="POST",
        path=r"/jobs$",
        status=403,
        reason="Forbidden",
        message='jobs "x" is forbidden: exceeded quota: compute, requested: count/jobs.batch=1',
        count=2,
    )
    spec = job_spec()
    await backend.submit(spec)
    first = recorder.events[0]
    assert (
        first.state is State.QUEUED
        and first.reason == "QuotaExceeded"
        and "exceeded quota" in (first.message or "")
    )
    await until(
        lambda: fake_kube.get("jobs", NS, job_name(spec.execution_id)) is not None, what="the retried Job"
    )
    await until(lambda: recorder.last(spec.execution_id).reason is None, what="the reason cleared")
    assert {e.state for e in recorder.events} == {State.QUEUED}


async def test_a_withdrawn_job_goes_with_its_secret_and_a_waiting_submission_stops(
    start_backend: Callable[..., Awaitable[Backend]],
    fake_kube: FakeKube,  # noqa: F811
) -> None:
    """Holding a queued execution (its data flow suspended): its Job and Secret are deleted, and a
    submission still waiting for the quota never creates one later."""
    backend, _ = await start_backend()
    made, waiting = job_spec(), job_spec(execution_id="exe_waiting")
    await backend.submit(made)
    assert fake_kube.get("secrets", NS, secret_name(made.execution_id)) is not None
    await backend.withdraw(made.execution_id, made.attempt)  # the hold's own attempt: kept
    assert fake_kube.get("jobs", NS, job_name(made.execution_id)) is not None
    await backend.withdraw(made.execution_id, made.attempt + 1)
    assert fake_kube.get("jobs", NS, job_name(made.execution_id)) is None
    assert fake_kube.get("secrets", NS, secret_name(made.execution_id)) is None

    fake_kube.inject_fault(
        method="POST", path=r"/jobs$", status=403, reason="Forbidden", message="exceeded quota: compute"
    )
    await backend.submit(waiting)
    assert backend._retries.running(waiting.execution_id)  # it tries again after a backoff
    await backend.withdraw(waiting.execution_id, waiting.attempt + 1)
    assert not backend._retries.running(waiting.execution_id)  # and now never will
    assert fake_kube.get("jobs", NS, job_name(waiting.execution_id)) is None


async def test_api_server_errors_on_create_are_retried(
    start_backend: Callable[..., Awaitable[Backend]],
    fake_kube: FakeKube,  # noqa: F811
) -> None:
    backend, recorder = await start_backend()
    fake_kube.inject_fault(method="POST", path=r"/jobs$", status=503, count=2)
    spec = job_spec()
    await backend.submit(spec)
    assert recorder.events[0].reason == "ApiUnavailable"
    await until(lambda: fake_kube.get("jobs", NS, job_name(spec.execution_id)) is not None, what="the Job")


# --- observation ------------------------------------------------------------------------------


async def test_states_in_order_from_two_watches_whatever_the_number_of_jobs(
    start_backend: Callable[..., Awaitable[Backend]],
    fake_kube: FakeKube,  # noqa: F811
    kubelet: Kubelet,
) -> None:
    backend, recorder = await leader(start_backend)
    specs = [job_spec() for _ in range(12)]
    for spec in specs:
        await backend.submit(spec)
    pods = {s.execution_id: kubelet.start_pod(s.execution_id) for s in specs}
    for spec in specs:
        await recorder.wait_for(spec.execution_id, State.INITIALIZING)
        kubelet.run_to(pods[spec.execution_id], "worker")
        fake_kube.write_log(NS, pods[spec.execution_id], "worker", "line one\nline two\n")
    for spec in specs:
        await recorder.wait_for(spec.execution_id, State.RUNNING)
        kubelet.run_to(pods[spec.execution_id], "stage-out")
        await recorder.wait_for(spec.execution_id, State.FINALIZING)
        kubelet.succeed(spec.execution_id, pods[spec.execution_id])
    for spec in specs:
        done = await recorder.wait_for(spec.execution_id, State.COMPLETE)
        assert done.manifest_in_storage and done.exit_code == 0
        # Each transition once, in order.
        assert recorder.states(spec.execution_id) == [
            State.INITIALIZING,
            State.RUNNING,
            State.FINALIZING,
            State.COMPLETE,
        ]
    watches = [w for w in fake_kube.watch_requests if w.get("namespace", NS) == NS]
    # One for Jobs, one for Pods, one for the Job controller's FailedCreate Events: not one per execution.
    assert sorted(w.resource for w in watches) == ["events", "jobs", "pods"], watches
    [events] = [w for w in watches if w.resource == "events"]
    assert events["fieldSelector"] == "involvedObject.kind=Job,reason=FailedCreate"
    logs = b"".join([c async for c in backend.logs(specs[0].execution_id, None, False)])
    assert logs == b"line one\nline two\n"
    tail = b"".join([c async for c in backend.logs(specs[0].execution_id, 1, False)])
    assert tail == b"line two\n"
    await backend.release(specs[0].execution_id)
    await until(
        lambda: fake_kube.get("jobs", NS, job_name(specs[0].execution_id)) is None, what="Job deleted"
    )
    await until(lambda: fake_kube.get("pods", NS, pods[specs[0].execution_id]) is None, what="pod collected")
    assert fake_kube.get("secrets", NS, secret_name(specs[0].execution_id)) is None


FAILURES: list[tuple[str, Callable[[Kubelet, str, str], None], State, str, int | None]] = [
    (
        "exit code",
        lambda k, e, p: (k.run_to(p, "worker"), k.state(p, "worker", "terminated", exit_code=7)),  # type: ignore[func-returns-value]
        State.EXECUTOR_ERROR,
        "ExitCode",
        7,
    ),
    (
        "oom",
        lambda k, e, p: (  # type: ignore[func-returns-value]
            k.run_to(p, "worker"),
            k.state(p, "worker", "terminated", exit_code=137, reason="OOMKilled"),
        ),
        State.EXECUTOR_ERROR,
        "OOMKilled",
        137,
    ),
    (
        "stage-in",
        lambda k, e, p: k.state(p, "stage-in", "terminated", exit_code=1, message="sidecar: 403 Forbidden"),
        State.SYSTEM_ERROR,
        "StageIn",
        None,
    ),
    (
        "missing output",
        lambda k, e, p: (k.run_to(p, "stage-out"), k.succeed(e, p, stage_out_exit=3)),  # type: ignore[func-returns-value]
        State.EXECUTOR_ERROR,
        "MissingOutput",
        0,
    ),
    (
        "stage-out",
        lambda k, e, p: (k.run_to(p, "stage-out"), k.succeed(e, p, stage_out_exit=1)),  # type: ignore[func-returns-value]
        State.SYSTEM_ERROR,
        "StageOut",
        None,
    ),
    (
        "deadline",
        lambda k, e, p: (  # type: ignore[func-returns-value]
            k.run_to(p, "worker"),
            k.fake.set_job_condition(
                NS, job_name(e), "Failed", reason="DeadlineExceeded", message="too long"
            ),
            k.fake.delete_pod(NS, p),  # the Job controller kills the pod
        ),
        State.EXECUTOR_ERROR,
        "DeadlineExceeded",
        None,
    ),
    (
        "image pull",
        lambda k, e, p: (  # type: ignore[func-returns-value]
            k.state(p, "stage-in", "terminated", exit_code=0),
            k.state(p, "worker", "waiting", reason="ImagePullBackOff", message="Back-off pulling image"),
        ),
        State.SYSTEM_ERROR,
        "ImagePull",
        None,
    ),
    (
        "pod deleted",
        lambda k, e, p: (k.run_to(p, "worker"), k.fake.delete_pod(NS, p)),  # type: ignore[func-returns-value]
        State.SYSTEM_ERROR,
        "Lost",
        None,
    ),
    (
        "job deleted",
        lambda k, e, p: (k.run_to(p, "worker"), k.fake.delete_job(NS, job_name(e))),  # type: ignore[func-returns-value]
        State.SYSTEM_ERROR,
        "Lost",
        None,
    ),
]


@pytest.mark.parametrize(
    ("play", "state", "reason", "exit_code"), [f[1:] for f in FAILURES], ids=[f[0] for f in FAILURES]
)
async def test_failures_map_to_states_and_reasons(
    start_backend: Callable[..., Awaitable[Backend]],
    kubelet: Kubelet,
    play: Callable[[Kubelet, str, str], None],
    state: State,
    reason: str,
    exit_code: int | None,
) -> None:
    backend, recorder = await leader(start_backend)
    spec = job_spec()
    await backend.submit(spec)
    pod = kubelet.start_pod(spec.execution_id)
    await recorder.wait_for(spec.execution_id, State.INITIALIZING)
    play(kubelet, spec.execution_id, pod)
    event = await recorder.wait_for(spec.execution_id, state)
    assert (event.reason, event.exit_code) == (reason, exit_code), event
    await everything_observed(backend, recorder, kubelet)
    finals = [s for s in recorder.states(spec.execution_id) if s.final]
    assert finals == [state]  # one final state, reported once


async def test_unschedulable_is_visible_while_queued(
    start_backend: Callable[..., Awaitable[Backend]],
    fake_kube: FakeKube,  # noqa: F811
    kubelet: Kubelet,
) -> None:
    backend, recorder = await leader(start_backend)
    spec = job_spec()
    await backend.submit(spec)
    pod = kubelet.start_pod(spec.execution_id)
    fake_kube.set_pod_unschedulable(NS, pod, "0/3 nodes are available: 3 Insufficient nvidia.com/gpu.")
    await until(lambda: any(e.reason == "Unschedulable" for e in recorder.events), what="Unschedulable")
    event = next(e for e in recorder.events if e.reason == "Unschedulable")
    assert event.state is State.QUEUED and "Insufficient" in (event.message or "")


QUOTA = "exceeded quota: pods, requested: pods=1, used: pods=4, limited: pods=4"


def refuse(fake: FakeKube, execution_id: str, problem: str) -> None:
    """The cluster refuses the Job's pod; the Job controller tries (and records FailedCreate)."""
    fake.refuse_pods(NS, job_name(execution_id), problem)
    with pytest.raises(KubeError):
        fake.create_job_pod(NS, job_name(execution_id))


async def test_a_refused_pod_keeps_it_queued_with_the_clusters_words_and_never_blames_the_worker(
    start_backend: Callable[..., Awaitable[Backend]],
    fake_kube: FakeKube,  # noqa: F811
) -> None:
    backend, recorder = await leader(start_backend, pod_create_grace_seconds=3600)
    spec = job_spec()
    await backend.submit(spec)
    refuse(fake_kube, spec.execution_id, QUOTA)
    queued = await recorder.wait_for(spec.execution_id, State.QUEUED)
    assert queued.reason == "QuotaExceeded"
    assert (queued.message or "").startswith(f'Error creating: pods "{job_name(spec.execution_id)}-')
    assert (queued.message or "").endswith(f'" is forbidden: {QUOTA}')
    # The controller tries again (another pod name, another message): still QUEUED, latest words.
    refuse(fake_kube, spec.execution_id, QUOTA)
    await until(lambda: len(recorder.states(spec.execution_id)) == 2, what="the second refusal")
    assert recorder.states(spec.execution_id) == [State.QUEUED, State.QUEUED]
    # The Job's deadline passes with no pod ever made: the cluster's fault, not the worker's.
    fake_kube.set_job_condition(NS, job_name(spec.execution_id), "Failed", reason="DeadlineExceeded")
    ended = await recorder.wait_for(spec.execution_id, State.SYSTEM_ERROR)
    assert ended.reason == "QuotaExceeded" and QUOTA in (ended.message or "")
    await until(lambda: fake_kube.get("jobs", NS, job_name(spec.execution_id)) is None, what="Job deleted")
    assert State.EXECUTOR_ERROR not in recorder.states(spec.execution_id)


async def test_a_pod_refused_past_the_grace_is_a_system_error_and_the_job_is_deleted(
    start_backend: Callable[..., Awaitable[Backend]],
    fake_kube: FakeKube,  # noqa: F811
) -> None:
    backend, recorder = await leader(start_backend, pod_create_grace_seconds=1.0)
    spec = job_spec()
    await backend.submit(spec)
    refuse(fake_kube, spec.execution_id, 'pod rejected: RuntimeClass "gvisor" not found')
    ended = await recorder.wait_for(spec.execution_id, State.SYSTEM_ERROR)
    assert ended.reason == "PodCreateRefused"
    assert (ended.message or "").endswith('is forbidden: pod rejected: RuntimeClass "gvisor" not found')
    await until(lambda: fake_kube.get("jobs", NS, job_name(spec.execution_id)) is None, what="Job deleted")
    assert [s for s in recorder.states(spec.execution_id) if s.final] == [State.SYSTEM_ERROR]


async def test_a_pod_admitted_after_a_refusal_clears_the_reason(
    start_backend: Callable[..., Awaitable[Backend]],
    fake_kube: FakeKube,  # noqa: F811
    kubelet: Kubelet,
) -> None:
    backend, recorder = await leader(start_backend, pod_create_grace_seconds=3600)
    spec, other = job_spec(), job_spec()
    for submitted in (spec, other):
        await backend.submit(submitted)
    refuse(fake_kube, spec.execution_id, QUOTA)
    await recorder.wait_for(spec.execution_id, State.QUEUED)
    fake_kube.refuse_pods(NS, job_name(spec.execution_id), None)  # capacity freed
    pod = fake_kube.create_job_pod(NS, job_name(spec.execution_id), node=None)["metadata"]["name"]
    await until(lambda: recorder.last(spec.execution_id).reason is None, what="the reason cleared")
    assert recorder.last(spec.execution_id).state is State.QUEUED
    kubelet.run_to(pod, "worker")
    await recorder.wait_for(spec.execution_id, State.RUNNING)
    assert recorder.states(other.execution_id) == []  # the refusal was about one Job only


async def replace_pod(fake: FakeKube, execution_id: str, pod: str) -> str:
    """The Job controller's replacement for `pod`, not yet scheduled, created a second later (pods
    are told apart by their creationTimestamp, which counts whole seconds)."""
    created = fake.get("pods", NS, pod)["metadata"]["creationTimestamp"]  # type: ignore[index]
    await until(lambda: datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") > created, what="the next second")
    return str(fake.create_job_pod(NS, job_name(execution_id), node=None)["metadata"]["name"])


class StaleRecorder(Recorder):
    """The execution service's answer: an observation behind the last recorded state is STALE."""

    FORWARD = [State.QUEUED, State.INITIALIZING, State.RUNNING, State.FINALIZING]

    def __init__(self) -> None:
        super().__init__()
        self.recorded: dict[str, State] = {}

    async def __call__(self, event: ComputeEvent) -> Reported:  # type: ignore[override]
        await super().__call__(event)
        seen = self.recorded.get(event.execution_id, State.QUEUED)
        forward = self.FORWARD
        if seen in forward and event.state in forward and forward.index(event.state) < forward.index(seen):
            return Reported.STALE
        self.recorded[event.execution_id] = event.state
        return Reported.RECORDED


class Counted:
    def __init__(self) -> None:
        self.stale = 0

    def stale_observation(self) -> None:
        self.stale += 1


async def test_a_replaced_pod_behind_the_execution_is_counted_once_and_not_sent_again(
    kubeconfig: Path,
    fake_kube: FakeKube,  # noqa: F811
    kubelet: Kubelet,
) -> None:
    recorder, counted = StaleRecorder(), Counted()
    backend = KubernetesCompute(options(kubeconfig), counted)
    await backend.start(recorder, recorder.reconcile)
    try:
        await until(lambda: backend.leading, what="leadership")
        spec = job_spec()
        await backend.submit(spec)
        pod = kubelet.start_pod(spec.execution_id)
        kubelet.run_to(pod, "worker")
        await recorder.wait_for(spec.execution_id, State.RUNNING)
        # The Job controller's replacement pod, not yet scheduled: newer, and QUEUED.
        replacement = await replace_pod(fake_kube, spec.execution_id, pod)
        await until(lambda: counted.stale == 1, what="the stale observation counted")
        # It starts, still behind; then it catches up. Each observation is sent once.
        kubelet.state(replacement, "stage-in", "running")
        await until(lambda: counted.stale == 2, what="the second stale observation counted")
        kubelet.run_to(replacement, "worker")
        await until(lambda: recorder.states(spec.execution_id).count(State.RUNNING) == 2, what="RUNNING")
        states = recorder.states(spec.execution_id)
        assert states[states.index(State.RUNNING) :] == [
            State.RUNNING,
            State.QUEUED,
            State.INITIALIZING,
            State.RUNNING,
        ]
        assert counted.stale == 2
    finally:
        await backend.stop()


async def test_cancel_deletes_the_job_and_reports_canceled(
    start_backend: Callable[..., Awaitable[Backend]],
    fake_kube: FakeKube,  # noqa: F811
    kubelet: Kubelet,
) -> None:
    backend, recorder = await leader(start_backend)
    spec = job_spec()
    await backend.submit(spec)
    pod = kubelet.start_pod(spec.execution_id)
    kubelet.run_to(pod, "worker")
    await recorder.wait_for(spec.execution_id, State.RUNNING)
    await backend.cancel(spec.execution_id)
    await recorder.wait_for(spec.execution_id, State.CANCELED)
    await until(lambda: fake_kube.get("pods", NS, pod) is None, what="the pod collected")
    await everything_observed(backend, recorder, kubelet)
    assert [s for s in recorder.states(spec.execution_id) if s.final] == [State.CANCELED]  # not Lost


# --- faults of the API server --------------------------------------------------------------------


async def test_dropped_watches_and_expired_versions_lose_and_double_nothing(
    start_backend: Callable[..., Awaitable[Backend]],
    fake_kube: FakeKube,  # noqa: F811
    kubelet: Kubelet,
) -> None:
    backend, recorder = await leader(start_backend)
    specs = [job_spec() for _ in range(4)]
    for spec in specs:
        await backend.submit(spec)
    pods = [kubelet.start_pod(s.execution_id) for s in specs]
    for spec in specs:
        await recorder.wait_for(spec.execution_id, State.INITIALIZING)
    relists = sum(w.relists for w in backend.watches)
    # Connections drop; meanwhile things happen, and the server forgets the versions we had.
    fake_kube.inject_fault(path=r"watch=", status=500, count=2)
    fake_kube.drop_watches()
    kubelet.run_to(pods[0], "worker")
    kubelet.run_to(pods[1], "stage-out")
    fake_kube.delete_pod(NS, pods[2])  # deleted while nobody watched
    fake_kube.compact()
    await recorder.wait_for(specs[0].execution_id, State.RUNNING)
    await recorder.wait_for(specs[1].execution_id, State.FINALIZING)
    lost = await recorder.wait_for(specs[2].execution_id, State.SYSTEM_ERROR)
    assert lost.reason == "Lost"
    assert sum(w.relists for w in backend.watches) > relists  # 410 Gone: listed again
    kubelet.succeed(specs[1].execution_id, pods[1])
    await recorder.wait_for(specs[1].execution_id, State.COMPLETE)
    assert recorder.states(specs[0].execution_id) == [State.INITIALIZING, State.RUNNING]
    # Its RUNNING happened while nobody watched and the relist shows only where it is now (the
    # execution service records the skipped state); nothing is reported twice.
    assert recorder.states(specs[1].execution_id) == [State.INITIALIZING, State.FINALIZING, State.COMPLETE]
    assert recorder.states(specs[3].execution_id) == [State.INITIALIZING]


async def test_slow_api_server_still_reports_everything(
    start_backend: Callable[..., Awaitable[Backend]],
    fake_kube: FakeKube,  # noqa: F811
    kubelet: Kubelet,
) -> None:
    backend, recorder = await leader(start_backend)
    spec = job_spec()
    fake_kube.set_latency(0.2)
    await backend.submit(spec)
    pod = kubelet.start_pod(spec.execution_id)
    kubelet.run_to(pod, "stage-out")
    kubelet.succeed(spec.execution_id, pod)
    await recorder.wait_for(spec.execution_id, State.COMPLETE)
    fake_kube.set_latency(0)


# --- reconciliation and leadership ------------------------------------------------------------------


async def test_known_lists_jobs_and_reconcile_runs_on_leadership(
    start_backend: Callable[..., Awaitable[Backend]],
    fake_kube: FakeKube,  # noqa: F811
) -> None:
    backend, recorder = await leader(start_backend, queued_grace_seconds=30)
    spec = job_spec()
    await backend.submit(spec)
    assert spec.execution_id in await backend.known()
    await until(lambda: recorder.reconciles == [30], what="a reconciliation after becoming leader")
    # An API server that cannot answer must not be taken for "no jobs".
    fake_kube.inject_fault(method="GET", path=r"/jobs$", status=500, count=1)
    with pytest.raises(Exception, match="500"):
        await backend.known()


async def test_one_leader_and_takeover_after_the_lease_expires(
    start_backend: Callable[..., Awaitable[Backend]],
    fake_kube: FakeKube,  # noqa: F811
    kubelet: Kubelet,
) -> None:
    first, first_events = await leader(start_backend, identity="replica-a", lease_seconds=30)
    second, second_events = await start_backend(identity="replica-b", lease_seconds=30)
    second_clock = StoppedClock()  # the lease lapses for replica-b when this clock says so
    rounds = campaign_rounds(second, second_clock)
    spec = job_spec()
    await second.submit(spec)  # any replica creates Jobs
    pod = kubelet.start_pod(spec.execution_id)
    await first_events.wait_for(spec.execution_id, State.INITIALIZING)  # only the leader observes
    await until(lambda: len(rounds) >= 2, what="replica-b campaigning")
    assert first.leading and not second.leading and not any(rounds)
    assert second_events.events == []
    lease = fake_kube.get("leases", NS, "provider-leader")
    assert lease is not None and lease["spec"]["holderIdentity"] == "replica-a"
    kubernetes_validate.validate(lease, "1.34.0", strict=True)  # the Lease the backend wrote

    # replica-a dies without handing the Lease back.
    assert first.elector is not None

    async def crash() -> None:
        return None

    first.elector.release = crash  # type: ignore[method-assign]
    await first.stop()
    seen = len(rounds)
    await until(lambda: len(rounds) >= seen + 2, what="replica-b looking at the abandoned Lease")
    assert not second.leading  # not before the lease lapsed
    second_clock.advance(30)
    await until(lambda: second.leading, what="takeover")
    lease = fake_kube.get("leases", NS, "provider-leader")
    assert lease is not None and lease["spec"]["holderIdentity"] == "replica-b"
    assert lease["spec"]["leaseTransitions"] >= 1
    kubelet.run_to(pod, "worker")
    await second_events.wait_for(spec.execution_id, State.RUNNING)


async def test_clean_stop_hands_the_lease_over_at_once(
    start_backend: Callable[..., Awaitable[Backend]],
) -> None:
    first, _ = await leader(start_backend, identity="replica-a", lease_seconds=30, renew_seconds=0.3)
    second, _ = await start_backend(identity="replica-b", lease_seconds=30, renew_seconds=0.3)
    rounds = campaign_rounds(second, StoppedClock())  # by its clock the lease never lapses
    await until(lambda: len(rounds) >= 2, what="replica-b campaigning")
    assert not second.leading
    await first.stop()
    await until(lambda: second.leading, what="the handed-over Lease taken")


# --- RBAC ---------------------------------------------------------------------------------------


def granted_verbs() -> dict[tuple[str, str], set[str]]:
    role = yaml.safe_load((REPO / "deploy" / "kubernetes" / "role.yaml").read_text())
    granted: dict[tuple[str, str], set[str]] = {}
    for rule in role["rules"]:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                granted.setdefault((group, resource), set()).update(rule["verbs"])
    return granted


def verb_of(method: str, path: str, query: dict[str, str]) -> tuple[str, str, str]:
    """(apiGroup, resource, verb) of a request, as the API server's authorizer sees it."""
    parts = path.strip("/").split("/")
    group = "" if parts[0] == "api" else parts[1]
    rest = parts[2:] if parts[0] == "api" else parts[3:]
    assert rest[0] == "namespaces" and rest[1] == NS, path  # never outside its namespace
    resource = rest[2]
    named = len(rest) > 3
    if len(rest) > 4:
        resource += "/" + rest[4]
    verb = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}.get(method)
    if verb is None:
        verb = "get" if named else ("watch" if query.get("watch") in ("true", "True", "1") else "list")
    return group, resource, verb


def lease_writes(fake: FakeKube) -> list[Any]:
    return [r for r in fake.requests if r.method == "PUT" and "/leases/" in r.path]


async def test_the_role_in_deploy_grants_exactly_what_the_backend_uses(
    start_backend: Callable[..., Awaitable[Backend]],
    fake_kube: FakeKube,  # noqa: F811
    kubelet: Kubelet,
) -> None:
    backend, recorder = await leader(start_backend)
    done, canceled = job_spec(), job_spec()
    for spec in (done, canceled, done):  # submitted twice: the Job is found, its Secret patched
        await backend.submit(spec)
    pod = kubelet.start_pod(done.execution_id)
    kubelet.run_to(pod, "stage-out")
    kubelet.succeed(done.execution_id, pod)
    await recorder.wait_for(done.execution_id, State.COMPLETE)
    assert b"".join([c async for c in backend.logs(done.execution_id, None, False)]) == b""  # none written
    await backend.cancel(canceled.execution_id)
    await backend.release(done.execution_id)
    await backend.known()
    renewals = len(lease_writes(fake_kube))
    await until(lambda: len(lease_writes(fake_kube)) > renewals, what="the Lease renewed")
    used: dict[tuple[str, str], set[str]] = {}
    for request in fake_kube.requests:
        if not request.path.startswith(("/api/v1/namespaces", "/apis/")):
            continue  # discovery and /version need no grant
        group, resource, verb = verb_of(request.method, request.path, request.query)
        used.setdefault((group, resource), set()).add(verb)
    assert used == granted_verbs()


async def test_cancel_while_the_api_server_fails_is_finished_later(
    start_backend: Callable[..., Awaitable[Backend]],
    fake_kube: FakeKube,  # noqa: F811
) -> None:
    backend, recorder = await leader(start_backend)
    spec = job_spec()
    await backend.submit(spec)
    fake_kube.inject_fault(method="DELETE", path=r"/jobs/", status=503, count=2)
    await backend.cancel(spec.execution_id)  # does not fail the request that asked for it
    assert recorder.states(spec.execution_id) == []
    await recorder.wait_for(spec.execution_id, State.CANCELED)
    assert fake_kube.get("jobs", NS, job_name(spec.execution_id)) is None


async def test_a_pod_deleted_gracefully_is_lost_not_a_worker_failure(
    start_backend: Callable[..., Awaitable[Backend]],
    fake_kube: FakeKube,  # noqa: F811
    kubelet: Kubelet,
) -> None:
    fake_kube.pod_termination_delay = None  # the kubelet finishes the deletion when told
    backend, recorder = await leader(start_backend)
    spec = job_spec()
    await backend.submit(spec)
    pod = kubelet.start_pod(spec.execution_id)
    kubelet.run_to(pod, "worker")
    await recorder.wait_for(spec.execution_id, State.RUNNING)
    fake_kube.delete_pod(NS, pod, grace_period_seconds=30)  # kubectl delete pod
    kubelet.state(pod, "worker", "terminated", exit_code=143)  # SIGTERM
    await everything_observed(backend, recorder, kubelet)
    assert recorder.states(spec.execution_id)[-1] is State.RUNNING  # no EXECUTOR_ERROR from exit 143
    fake_kube.complete_pod_deletion(NS, pod)
    lost = await recorder.wait_for(spec.execution_id, State.SYSTEM_ERROR)
    assert lost.reason == "Lost" and lost.exit_code is None


async def test_a_timed_out_create_that_went_through_is_not_doubled(
    start_backend: Callable[..., Awaitable[Backend]],
    fake_kube: FakeKube,  # noqa: F811
) -> None:
    backend, recorder = await start_backend(request_timeout_seconds=0.5)
    # The server takes the Job but answers too late: the client times out and tries again.
    fake_kube.inject_fault(method="POST", path=r"/jobs$", status=None, delay=1.0, count=1)
    spec = job_spec()
    await backend.submit(spec)
    assert recorder.events[0].reason == "ApiUnavailable"
    await until(lambda: recorder.last(spec.execution_id).reason is None, what="submitted")
    jobs = [j for j in fake_kube.objects("jobs", NS) if j["metadata"]["name"] == job_name(spec.execution_id)]
    assert len(jobs) == 1
    assert recorder.states(spec.execution_id) == [State.QUEUED, State.QUEUED]  # no SYSTEM_ERROR
    # The retry found the Job and gave it its Secret.
    secret = fake_kube.get("secrets", NS, secret_name(spec.execution_id))
    assert secret is not None
    assert [r["uid"] for r in secret["metadata"]["ownerReferences"]] == [jobs[0]["metadata"]["uid"]]


async def test_no_cluster_to_reach_is_a_configuration_error_naming_the_key(tmp_path: Path) -> None:
    backend = KubernetesCompute(options(tmp_path / "no-such-kubeconfig"))
    recorder = Recorder()
    with pytest.raises(ConfigError, match=r"compute\.kubernetes\.kubeconfig"):
        await backend.start(recorder, recorder.reconcile)


HOLD = "example.com/hold"  # another controller's finalizer: keeps a deleted pod a while


def attempt_labels(fake: FakeKube, kind: str, name: str) -> str:
    found = fake.get(kind, NS, name)
    assert found is not None, name
    return str(found["metadata"]["labels"].get("provider/attempt"))


async def test_each_attempt_is_a_job_of_its_own_and_what_is_left_of_the_last_one_is_not_reported_as_it(
    start_backend: Callable[..., Awaitable[Backend]],
    fake_kube: FakeKube,  # noqa: F811
    kubelet: Kubelet,
) -> None:
    backend, recorder = await leader(start_backend)
    first = job_spec()
    execution_id, name = first.execution_id, job_name(first.execution_id)
    await backend.submit(first)
    job = fake_kube.get("jobs", NS, name)
    assert job is not None and job["spec"]["template"]["metadata"]["labels"]["provider/attempt"] == "1"
    evicted_pod = kubelet.start_pod(execution_id)
    assert attempt_labels(fake_kube, "jobs", name) == attempt_labels(fake_kube, "pods", evicted_pod) == "1"
    fake_kube.add_finalizer("pods", NS, evicted_pod, HOLD)
    kubelet.run_to(evicted_pod, "worker")
    assert (await recorder.wait_for(execution_id, State.RUNNING)).attempt == 1
    fake_kube.set_pod_phase(
        NS, evicted_pod, "Failed", reason="Evicted", message="The node was low on memory."
    )
    evicted = await recorder.wait_for(execution_id, State.SYSTEM_ERROR)
    assert (evicted.reason, evicted.attempt) == ("Evicted", 1)

    # The service runs it again: the first Job goes, the second takes its name. The evicted pod
    # stays, being deleted, until the other controller lets go.
    await backend.release(execution_id)
    await fake_kube.wait_until(
        lambda: bool(fake_kube.get("pods", NS, evicted_pod)["metadata"].get("deletionTimestamp"))
    )
    await backend.submit(dataclasses.replace(first, attempt=2))
    assert attempt_labels(fake_kube, "jobs", name) == "2"
    pod = kubelet.start_pod(execution_id)
    kubelet.run_to(pod, "worker")
    await until(lambda: recorder.last(execution_id).state is State.RUNNING, what="the second attempt runs")
    seen = len(recorder.events)
    fake_kube.remove_finalizer("pods", NS, evicted_pod, HOLD)  # the first attempt's pod is gone at last
    kubelet.run_to(pod, "stage-out")
    kubelet.succeed(execution_id, pod)
    done = await recorder.wait_for(execution_id, State.COMPLETE)
    assert done.attempt == 2
    later = recorder.events[seen:]
    assert {e.attempt for e in later} == {2} and State.SYSTEM_ERROR not in [e.state for e in later]
    assert all(e.attempt is not None for e in recorder.events)  # every report says its attempt


async def test_a_job_left_by_an_earlier_attempt_is_deleted_before_the_next_one_is_made(
    start_backend: Callable[..., Awaitable[Backend]],
    fake_kube: FakeKube,  # noqa: F811
) -> None:
    backend, recorder = await start_backend()
    first = job_spec()
    name = job_name(first.execution_id)
    await backend.submit(first)
    earlier = fake_kube.get("jobs", NS, name)
    assert earlier is not None
    fake_kube.inject_fault("DELETE", rf"/jobs/{name}$", status=503)
    await backend.release(first.execution_id)  # fails: the first attempt's Job stays
    assert fake_kube.get("jobs", NS, name) is not None
    await backend.submit(dataclasses.replace(first, attempt=2))
    waiting = recorder.last(first.execution_id)
    assert (waiting.state, waiting.attempt) == (State.QUEUED, 2)
    assert waiting.message == "waiting to create the Job: the Job of attempt 1 is being deleted"
    await until(lambda: recorder.last(first.execution_id).reason is None, what="the second Job made")
    job = fake_kube.get("jobs", NS, name)
    assert job is not None and job["metadata"]["uid"] != earlier["metadata"]["uid"]
    assert job["metadata"]["labels"]["provider/attempt"] == "2"
    # Never refused; the first Job's end, if the watch saw it, is reported as the first attempt's.
    assert [e.state for e in recorder.events if e.attempt == 2] == [State.QUEUED, State.QUEUED]
    assert {e.attempt for e in recorder.events} <= {1, 2}


async def test_each_refusal_is_raised_as_the_kind_its_status_stands_for(
    kubeconfig: Path,
    fake_kube: FakeKube,  # noqa: F811
) -> None:
    quota = 'pods "p" is forbidden: exceeded quota: pods, requested: pods=1, used: pods=4, limited: pods=4'
    cases: list[tuple[int, str | None, type[kube_client.KubeError], bool]] = [
        (400, None, kube_client.KubeBadRequest, False),
        (401, None, kube_client.KubeError, False),
        (403, 'leases "l" is forbidden: User cannot get', kube_client.KubeForbidden, False),
        (403, quota, kube_client.KubeForbidden, True),  # capacity may free up
        (404, None, kube_client.KubeNotFound, False),
        (409, None, kube_client.KubeConflict, False),
        (410, None, kube_client.KubeGone, False),
        (422, None, kube_client.KubeInvalid, False),
        (429, None, kube_client.KubeUnavailable, True),
        (503, None, kube_client.KubeUnavailable, True),
    ]
    kube = kube_client.Kube(await kube_client.load_configuration(kubeconfig, None), NS, 5)
    try:
        for status, message, kind, retryable in cases:
            fake_kube.inject_fault("GET", r"/leases/", status=status, message=message)
            with pytest.raises(kube_client.KubeError) as caught:
                await kube.get_lease("any")
            assert (type(caught.value), caught.value.status) == (kind, status)
            assert caught.value.retryable is retryable, status
        with pytest.raises(kube_client.KubeNotFound):  # the server's own answer, not a fault
            await kube.get_lease("missing")
    finally:
        await kube.close()
    configuration = await kube_client.load_configuration(kubeconfig, None)
    configuration.host = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    unreachable = kube_client.Kube(configuration, NS, 5)
    try:
        with pytest.raises(kube_client.KubeUnavailable) as caught:
            await unreachable.get_lease("any")
        assert caught.value.status == 0 and caught.value.retryable
    finally:
        await unreachable.close()
