"""The Kubernetes compute backend: each execution is a batch/v1 Job (see manifests.py).

Every replica creates and deletes Jobs for the API requests it serves. Exactly one replica, the
holder of the Lease, observes: three namespace-wide watches (Jobs and Pods by label, the Job
controller's FailedCreate Events by field), whatever the number of executions, feeding a keyed
work queue that turns what changed into execution events one execution at a time, and a periodic
reconciliation of Jobs against the store.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import socket
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar

from provider.aio import Backoff, Tasks, retry
from provider.backends.compute.kubernetes.client import (
    EVENTS,
    JOBS,
    PODS,
    Kube,
    KubeBadRequest,
    KubeConflict,
    KubeError,
    KubeForbidden,
    KubeNotFound,
    KubeUnavailable,
    load_configuration,
)
from provider.backends.compute.kubernetes.lease import LeaseElector
from provider.backends.compute.kubernetes.manifests import (
    EXECUTION,
    JOB_PREFIX,
    SELECTOR,
    WORKER,
    JobSettings,
    attempt_of,
    build_job,
    build_secret,
    execution_of,
    job_name,
    owner_reference,
    secret_name,
    secret_patch,
)
from provider.backends.compute.kubernetes.objects import Event, Job, ObjectMeta, Pod
from provider.backends.compute.kubernetes.observe import derive, refusal
from provider.backends.compute.kubernetes.watch import NamespaceWatch
from provider.domain.executions import Reason, State
from provider.services.ports import ComputeEvent, EventSink, JobSpec, Reconciler, Reported

log = logging.getLogger(__name__)
T = TypeVar("T")

# The Job controller's Events when the cluster refuses a Job's pod (RealPodControl.CreatePods).
REFUSALS = "involvedObject.kind=Job,reason=FailedCreate"
# Reasons after which nothing more will come of a Job: it is deleted at once, not at its deadline.
HOPELESS = {
    Reason.LOST,
    Reason.IMAGE_PULL,
    Reason.CONTAINER_CONFIG,
    Reason.QUOTA_EXCEEDED,
    Reason.POD_CREATE_REFUSED,
}


@dataclass(frozen=True)
class ComputeCounts:
    api_errors: dict[str, int]  # failed API calls by status ("0": unreachable)
    watch_restarts: dict[tuple[str, str], int]  # (resource, expired | error)


class KubernetesObserver(Protocol):
    """What the backend counts beside execution states (metrics)."""

    def stale_observation(self) -> None:
        """The execution service found an observation behind the execution's state."""


class _EarlierJob(KubeConflict):
    """The Job of an earlier attempt held the name and is being deleted: try again later."""

    @property
    def retryable(self) -> bool:
        return True


@dataclass(frozen=True)
class KubernetesOptions:
    job: JobSettings
    kubeconfig: Path | None = None
    context: str | None = None
    lease_name: str = "provider-leader"
    lease_seconds: float = 15.0
    renew_seconds: float = 5.0
    identity: str | None = None
    watch_timeout_seconds: int = 300
    reconcile_seconds: float = 60.0
    request_timeout_seconds: float = 30.0
    image_pull_grace_seconds: float = 120.0
    pod_create_grace_seconds: float = 300.0  # the cluster refusing the pod this long: SYSTEM_ERROR
    queued_grace_seconds: float = 30.0  # a QUEUED execution this young may be being submitted elsewhere
    workers: int = 8  # executions evaluated at once
    max_retry_seconds: float = 60.0


@dataclass
class _Tracked:
    """What the watches last showed of one execution's Job and pod(s), of its latest attempt."""

    attempt: int | None = None  # the Job's label; None on a Job made before Jobs carried it
    job: Job | None = None
    pods: dict[str, Pod] = field(default_factory=dict)
    job_deleted: bool = False
    pod_deleted: bool = False
    # Executions start QUEUED: a Job without a pod yet is nothing new to report.
    reported: tuple[object, ...] | None = (State.QUEUED, None, None, None, 0)
    final: bool = False


class KubernetesCompute:
    name = "kubernetes"
    step_errors_ignorable = False  # steps are init containers: the first to fail ends the pod

    def __init__(self, options: KubernetesOptions, observer: KubernetesObserver | None = None) -> None:
        self.options = options
        self.observer = observer
        self.identity = options.identity or socket.gethostname()
        self.kube: Kube | None = None
        self.elector: LeaseElector | None = None
        self.watches: list[NamespaceWatch[Any]] = []
        self._watch_restarts: collections.Counter[tuple[str, str]] = collections.Counter()
        self._sink: EventSink | None = None
        self._reconcile: Reconciler | None = None
        self._campaign = Tasks(log)  # the Lease elector of this replica
        self._leader_tasks = Tasks(log)  # watches, workers and reconciliation while leading
        self._retries = Tasks(log)  # execution id -> its Job's creation or deletion, tried again
        self._retrying: dict[str, int] = {}  # execution id -> the attempt whose creation is retried
        # Kubernetes answers 429, 5xx or a quota: tried again sooner, then at most this far apart.
        self._backoff = Backoff(1.0, options.max_retry_seconds)
        self._tracked: dict[str, _Tracked] = {}
        self._canceling: set[str] = set()
        # FailedCreate Events by Job name, then Event name; and the execution of each tracked Job.
        self._refusals: dict[str, dict[str, Event]] = {}
        self._by_job: dict[str, str] = {}
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._pending: set[str] = set()
        self._busy: set[str] = set()
        # Store work under way (reports, reconciliations): never cut off halfway (see _protected).
        self._inflight: set[asyncio.Future[Any]] = set()

    def _restarted(self, resource: str, cause: str) -> None:
        self._watch_restarts[(resource, cause)] += 1

    @property
    def counts(self) -> ComputeCounts:
        """What the operator's metrics read of this backend (provider/api/metrics.py)."""
        api_errors = dict(self.kube.errors) if self.kube is not None else {}
        return ComputeCounts(api_errors, dict(self._watch_restarts))

    @property
    def leading(self) -> bool:
        return self.elector is not None and self.elector.leading

    # --- lifecycle ----------------------------------------------------------------------------

    async def start(self, sink: EventSink, reconcile: Reconciler) -> None:
        self._sink = sink
        self._reconcile = reconcile
        configuration = await load_configuration(self.options.kubeconfig, self.options.context)
        self.kube = Kube(configuration, self.options.job.namespace, self.options.request_timeout_seconds)
        self.elector = LeaseElector(
            self.kube,
            self.options.lease_name,
            self.identity,
            self.options.lease_seconds,
            self.options.renew_seconds,
        )
        self._campaign.spawn("lease", self.elector.run(self._lead, self._step_down), "kubernetes lease")

    async def stop(self) -> None:
        """Stop observing and hand the Lease back; the Jobs keep running."""
        await self._retries.close()
        await self._campaign.close()
        await self._step_down()
        if self.kube is not None:
            await self.kube.close()

    async def _lead(self) -> None:
        assert self.kube is not None
        timeout = self.options.watch_timeout_seconds
        self.watches = [
            NamespaceWatch(
                self.kube, JOBS, SELECTOR, self._on_job, self._sync_jobs, timeout, on_restart=self._restarted
            ),
            NamespaceWatch(
                self.kube, PODS, SELECTOR, self._on_pod, self._sync_pods, timeout, on_restart=self._restarted
            ),
            NamespaceWatch(
                self.kube,
                EVENTS,
                "",
                self._on_refusal,
                self._sync_refusals,
                timeout,
                fields=REFUSALS,
                on_restart=self._restarted,
            ),
        ]
        for watch in self.watches:
            self._leader_tasks.spawn(watch.resource, watch.run(), f"watch {watch.resource}")
        for i in range(self.options.workers):
            self._leader_tasks.spawn(("worker", i), self._work(), f"kubernetes worker {i}")
        self._leader_tasks.spawn("reconcile", self._reconcile_loop(), "kubernetes reconcile")

    async def _step_down(self) -> None:
        await self._leader_tasks.close()
        if self._inflight:  # let reports under way finish their transactions
            await asyncio.wait(self._inflight, timeout=10)
        self._tracked.clear()
        self._refusals.clear()
        self._by_job.clear()
        self._pending.clear()
        self._busy.clear()
        self._queue = asyncio.Queue()

    async def _reconcile_loop(self) -> None:
        for watch in self.watches:
            # Judge Jobs only once their watch and their pods' show everything; Events only add
            # reasons, and a Role without them must not stop reconciliation.
            if watch.collection is not EVENTS:
                await watch.synced.wait()
        while True:
            assert self._reconcile is not None
            try:
                await self._protected(self._reconcile(self.options.queued_grace_seconds))
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("reconciliation failed; trying again later")
            await asyncio.sleep(self.options.reconcile_seconds)

    # --- jobs ---------------------------------------------------------------------------------

    async def ping(self) -> None:
        """The Lease is read on every renewal anyway; a 404 still proves the API server answers."""
        if self.kube is None:
            raise KubeUnavailable(0, "NotStarted", "the Kubernetes backend has not started")
        with contextlib.suppress(KubeNotFound):
            await self.kube.get_lease(self.options.lease_name)

    async def submit(self, job: JobSpec) -> None:
        try:
            await self._create(job)
        except KubeError as exc:
            if exc.retryable:
                await self._queued(job, exc)
                self._retrying[job.execution_id] = job.attempt
                self._retries.spawn(
                    job.execution_id, self._retry(job), f"submit {job.execution_id}", replace=True
                )
                return
            await self._refused(job, exc)

    async def _refused(self, job: JobSpec, exc: KubeError) -> None:
        """The API server will not take this Job (422 Invalid, say): nothing to retry."""
        await self._emit(
            ComputeEvent(
                job.execution_id,
                State.SYSTEM_ERROR,
                reason=exc.reason or Reason.REJECTED,
                message=f"the API server refused the Job: {exc.message}",
                attempt=job.attempt,
            )
        )

    async def _create(self, job: JobSpec) -> None:
        """The Job, then its Secret with the Job as owner, so that no Secret ever exists without a
        Job that takes it along. Until the Secret is there the pod waits (CreateContainerConfigError,
        within image_pull_grace_seconds); if it never comes (the replica died in between), the
        execution ends as ContainerConfig and the Job is deleted."""
        assert self.kube is not None
        settings = self.options.job
        try:
            created = await self.kube.create_job(build_job(job, settings))
        except KubeConflict:
            # Created already: by a request that timed out but went through, or by another replica.
            existing = await self._job(job.execution_id)
            if existing is None:
                return  # deleted since: reconciliation submits the execution again
            created = existing
        earlier = attempt_of(created)
        if _before(earlier, job.attempt):
            # The Job of an earlier attempt is still there (releasing it failed): it goes first.
            with contextlib.suppress(KubeConflict):  # replaced meanwhile: the retry finds out
                await self.kube.delete("Job", job_name(job.execution_id), uid=_metadata(created).get("uid"))
            raise _EarlierJob(409, "AlreadyExists", f"the Job of attempt {earlier} is being deleted")
        try:
            await self._put_secret(build_secret(job, settings, owner_reference(created)))
        except KubeError as exc:
            if not exc.retryable:
                with contextlib.suppress(KubeError):  # its pod could never start
                    await self.kube.delete(
                        "Job", job_name(job.execution_id), uid=_metadata(created).get("uid")
                    )
            raise

    async def _job(self, execution_id: str) -> Job | None:
        assert self.kube is not None
        jobs, _ = await self.kube.list(JOBS, f"{SELECTOR},{EXECUTION}={execution_id}")
        return next((j for j in jobs if _metadata(j).get("name") == job_name(execution_id)), None)

    async def _put_secret(self, secret: dict[str, Any]) -> None:
        assert self.kube is not None
        try:
            await self.kube.create_secret(secret)
        except KubeConflict:
            # Left by an attempt that went through unanswered, or written by another replica
            # submitting the same execution: these credentials and this owner replace its own.
            await self.kube.patch_secret(secret["metadata"]["name"], secret_patch(secret))

    async def _queued(self, job: JobSpec, exc: KubeError) -> None:
        quota = isinstance(exc, KubeForbidden) and exc.quota
        reason = Reason.QUOTA_EXCEEDED if quota else Reason.API_UNAVAILABLE
        message = f"waiting to create the Job: {exc.message or exc.reason}"
        await self._emit(
            ComputeEvent(job.execution_id, State.QUEUED, reason=reason, message=message, attempt=job.attempt)
        )

    async def _retry(self, job: JobSpec) -> None:
        """Create the Job of a submission the API server put off, until it takes it or refuses."""

        async def create() -> None:
            try:
                await self._create(job)
            except KubeError as exc:
                if exc.retryable:
                    await self._queued(job, exc)  # the reason it waits, kept up to date
                raise

        try:
            await retry(create, backoff=self._backoff, retry_on=_retryable, failures=1)
        except KubeError as exc:
            await self._refused(job, exc)
            return
        await self._emit(
            ComputeEvent(job.execution_id, State.QUEUED, reason=None, message=None, attempt=job.attempt)
        )

    async def cancel(self, execution_id: str) -> None:
        assert self.kube is not None
        self._retries.cancel(execution_id)
        self._canceling.add(execution_id)
        tracked = self._tracked.get(execution_id)
        if tracked is not None:
            tracked.final = True
        try:
            await self.kube.delete("Job", job_name(execution_id))
        except KubeError as exc:
            # The execution stays CANCELING; reconciliation ends it once the Job is gone.
            log.warning("could not delete a canceled job: %s", exc, extra={"execution_id": execution_id})
            self._retries.spawn(execution_id, self._delete_later(execution_id), f"cancel {execution_id}")
            return
        # Of no attempt: a cancel ends the execution, whichever attempt it is at.
        await self._emit(ComputeEvent(execution_id, State.CANCELED, reason=Reason.CANCELED))

    async def _delete_later(self, execution_id: str) -> None:
        kube = self.kube
        assert kube is not None
        await retry(
            lambda: kube.delete("Job", job_name(execution_id)),
            backoff=self._backoff,
            retry_on=lambda error: isinstance(error, KubeError),
            failures=1,
        )
        await self._emit(ComputeEvent(execution_id, State.CANCELED, reason=Reason.CANCELED))

    async def withdraw(self, execution_id: str, attempt: int) -> None:
        # A submission of an earlier attempt still waiting for the API server stops; that
        # attempt's Job (its pod dies with it) and Secret go, as for a finished job. A Job of
        # `attempt` or later stays: a resume may have made it. What the watch still sees of the
        # old one carries its attempt, which the service ignores.
        assert self.kube is not None
        if self._retrying.get(execution_id, attempt) < attempt:
            self._retries.cancel(execution_id)
        job = await self._job(execution_id)
        if job is not None and (attempt_of(job) or 0) >= attempt:
            return
        await self.release(execution_id)

    async def release(self, execution_id: str) -> None:
        assert self.kube is not None
        self._tracked.pop(execution_id, None)
        self._retrying.pop(execution_id, None)
        self._canceling.discard(execution_id)
        self._by_job.pop(job_name(execution_id), None)
        self._refusals.pop(job_name(execution_id), None)
        try:
            await self.kube.delete("Job", job_name(execution_id))
            await self.kube.delete("Secret", secret_name(execution_id))
        except KubeError as exc:
            # The next reconciliation finds the Job again and removes it.
            log.warning("could not delete a finished job: %s", exc, extra={"execution_id": execution_id})

    async def known(self) -> set[str]:
        assert self.kube is not None
        jobs, _ = await self.kube.list(JOBS, SELECTOR)
        return {i for i in (execution_of(j) for j in jobs) if i is not None}

    # --- logs ---------------------------------------------------------------------------------

    async def logs(self, execution_id: str, tail: int | None, follow: bool) -> AsyncIterator[bytes]:
        assert self.kube is not None
        for _ in range(600 if follow else 1):
            pod = await self._pod_name(execution_id)
            if pod is None:
                return
            try:
                async for chunk in self.kube.pod_log(pod, WORKER, tail, follow):
                    yield chunk
                return
            except KubeBadRequest:  # the worker has not started: nothing to show yet
                if not follow:
                    return
            except KubeError:
                return
            await asyncio.sleep(1.0)

    async def _pod_name(self, execution_id: str) -> str | None:
        tracked = self._tracked.get(execution_id)
        if tracked is not None and tracked.pods:
            return _newest(tracked.pods)
        assert self.kube is not None
        pods, _ = await self.kube.list(PODS, f"{SELECTOR},{EXECUTION}={execution_id}")
        return _newest({_metadata(p).get("name", ""): p for p in pods}) if pods else None

    # --- observing ----------------------------------------------------------------------------

    def _track(self, kind: str, obj: Job | Pod) -> tuple[str, _Tracked] | None:
        execution_id = execution_of(obj)
        if execution_id is None:
            return None
        attempt = attempt_of(obj)
        tracked = self._tracked.get(execution_id)
        if tracked is not None and _before(attempt, tracked.attempt):
            return None  # what is left of an attempt that has been run again: not this one's
        if tracked is None or _before(tracked.attempt, attempt):
            if kind == "DELETED":
                return None  # the end of something already released
            # The first sight of the execution, or of its next attempt (what the last one showed
            # says nothing about this one).
            tracked = self._tracked[execution_id] = _Tracked(attempt)
            self._by_job[job_name(execution_id)] = execution_id
        return execution_id, tracked

    async def _on_job(self, kind: str, obj: Job) -> None:
        found = self._track(kind, obj)
        if found is None:
            return
        execution_id, tracked = found
        if kind == "DELETED":
            tracked.job, tracked.job_deleted = None, True
        else:
            tracked.job = _slim(obj)
        self._touch(execution_id)

    async def _on_pod(self, kind: str, obj: Pod) -> None:
        found = self._track(kind, obj)
        if found is None:
            return
        execution_id, tracked = found
        name = _metadata(obj).get("name", "")
        if kind == "DELETED":
            tracked.pods.pop(name, None)
            tracked.pod_deleted = True
        else:
            tracked.pods[name] = _slim(obj)
        self._touch(execution_id)

    async def _sync_jobs(self, items: list[Job]) -> None:
        listed = {execution_of(j): j for j in items}
        for execution_id, tracked in self._tracked.items():
            if tracked.job is not None and execution_id not in listed:
                tracked.job, tracked.job_deleted = None, True  # deleted while the watch was away
                self._touch(execution_id)
        for job in items:
            await self._on_job("ADDED", job)

    async def _sync_pods(self, items: list[Pod]) -> None:
        listed = {_metadata(p).get("name", "") for p in items}
        for execution_id, tracked in self._tracked.items():
            gone = [name for name in tracked.pods if name not in listed]
            for name in gone:
                del tracked.pods[name]
                tracked.pod_deleted = True
            if gone:
                self._touch(execution_id)
        for pod in items:
            await self._on_pod("ADDED", pod)

    async def _on_refusal(self, kind: str, obj: Event) -> None:
        """A FailedCreate Event: kept (until it expires) by the name of the Job it is about."""
        involved = obj.get("involvedObject") or {}
        job = str(involved.get("name") or "")
        if involved.get("apiVersion") != "batch/v1" or not job.startswith(JOB_PREFIX):
            return
        name = _metadata(obj).get("name", "")
        if kind == "DELETED":
            events = self._refusals.get(job, {})
            events.pop(name, None)
            if not events:
                self._refusals.pop(job, None)
        else:
            self._refusals.setdefault(job, {})[name] = _slim_event(obj)
        execution_id = self._by_job.get(job)
        if execution_id is not None:
            self._touch(execution_id)

    async def _sync_refusals(self, items: list[Event]) -> None:
        before, self._refusals = self._refusals, {}
        for event in items:
            await self._on_refusal("ADDED", event)
        for job in before.keys() - self._refusals.keys():  # expired while the watch was away
            execution_id = self._by_job.get(job)
            if execution_id is not None:
                self._touch(execution_id)

    def _touch(self, execution_id: str) -> None:
        """Mark an execution for evaluation; each is evaluated by one worker at a time, in order."""
        if execution_id in self._pending:
            return
        self._pending.add(execution_id)
        if execution_id not in self._busy:
            self._queue.put_nowait(execution_id)

    async def _work(self) -> None:
        while True:
            execution_id = await self._queue.get()
            self._pending.discard(execution_id)
            self._busy.add(execution_id)
            try:
                await self._protected(self._evaluate(execution_id))
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("could not report a job's state", extra={"execution_id": execution_id})
                tracked = self._tracked.get(execution_id)
                if tracked is not None:
                    tracked.reported, tracked.final = None, False
                asyncio.get_running_loop().call_later(1.0, self._touch, execution_id)
            finally:
                self._busy.discard(execution_id)
                if execution_id in self._pending:
                    self._queue.put_nowait(execution_id)

    async def _evaluate(self, execution_id: str) -> None:
        tracked = self._tracked.get(execution_id)
        if tracked is None or tracked.final or execution_id in self._canceling:
            return
        job = tracked.job
        conditions = {
            c.get("type"): c
            for c in ((job or {}).get("status") or {}).get("conditions") or []
            if c.get("status") == "True"
        }
        deadline = Reason.DEADLINE_EXCEEDED in {
            (conditions.get("Failed") or {}).get("reason"),
            (conditions.get("FailureTarget") or {}).get("reason"),
        }
        lost = None
        if tracked.job_deleted:
            lost = "the Job was deleted"
        elif tracked.pod_deleted and not tracked.pods and not deadline and "Complete" not in conditions:
            lost = "the pod was deleted"
        if lost is not None:
            event = ComputeEvent(
                execution_id, State.SYSTEM_ERROR, reason=Reason.LOST, message=lost, attempt=tracked.attempt
            )
        else:
            pod = tracked.pods[_newest(tracked.pods)] if tracked.pods else None
            now = datetime.now(UTC)
            events = self._refusals.get(job_name(execution_id))
            refused = None
            if job is not None and events:
                refused = refusal(events.values(), _metadata(job).get("uid"), now)
            verdict = derive(
                job,
                pod,
                now,
                self.options.image_pull_grace_seconds,
                refused,
                self.options.pod_create_grace_seconds,
            )
            if verdict.recheck_after is not None:
                asyncio.get_running_loop().call_later(
                    max(verdict.recheck_after, 0.05), self._touch, execution_id
                )
            seen = verdict.observation
            if seen is None or seen.key == tracked.reported:
                return
            tracked.reported = seen.key
            event = ComputeEvent(
                execution_id,
                seen.state,
                exit_code=seen.exit_code,
                reason=seen.reason,
                message=seen.message,
                attempt=tracked.attempt,
                manifest_in_storage=seen.manifest_in_storage,
                steps=seen.steps,
            )
        if event.state.final:
            tracked.final = True
            uid = _metadata(tracked.job).get("uid") if tracked.job is not None else None
            if event.reason in HOPELESS and uid:
                # Nothing more will come of this Job: stop it now rather than at its deadline. This
                # one only, by its uid: the next attempt's Job has the same name.
                assert self.kube is not None
                with contextlib.suppress(KubeError):
                    await self.kube.delete("Job", job_name(execution_id), uid=uid)
        if await self._emit(event) is Reported.STALE and self.observer is not None:
            # Already further along (a replaced pod, say): kept as reported, not sent again.
            self.observer.stale_observation()

    async def _emit(self, event: ComputeEvent) -> Reported | None:
        assert self._sink is not None
        return await self._protected(self._sink(event))

    async def _protected(self, work: Awaitable[T]) -> T:
        """Run store work so that cancelling the caller (a step-down, a stop) does not cut it off
        inside a transaction; _step_down waits for it."""
        task = asyncio.ensure_future(work)
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)
        return await asyncio.shield(task)


SlimT = TypeVar("SlimT", Job, Pod)
_SLIM_METADATA: tuple[Literal["name", "uid", "creationTimestamp", "deletionTimestamp"], ...] = (
    "name",
    "uid",
    "creationTimestamp",
    "deletionTimestamp",
)
_SLIM_EVENT: tuple[Literal["firstTimestamp", "lastTimestamp", "eventTime", "message"], ...] = (
    "firstTimestamp",
    "lastTimestamp",
    "eventTime",
    "message",
)


def _slim(obj: SlimT) -> SlimT:
    """What observing needs of a Job or pod (its status and a few names and times), not the whole
    object with its spec: a thousand executions then cost little memory."""
    metadata = _metadata(obj)
    slim_metadata = ObjectMeta()
    for key in _SLIM_METADATA:
        if key in metadata:
            slim_metadata[key] = metadata[key]
    return {"metadata": slim_metadata, "status": obj.get("status") or {}}


def _slim_event(event: Event) -> Event:
    """What a refusal needs of a FailedCreate Event: its Job's uid, its times and its message."""
    slim = Event(involvedObject={"uid": (event.get("involvedObject") or {}).get("uid", "")})
    for key in _SLIM_EVENT:
        if key in event:
            slim[key] = event[key]
    return slim


def _metadata(obj: Job | Pod | Event) -> ObjectMeta:
    return obj.get("metadata") or {}


def _before(attempt: int | None, other: int | None) -> bool:
    """`attempt` is an earlier one than `other` (unlabelled Jobs are of no known attempt)."""
    return attempt is not None and other is not None and attempt < other


def _newest(pods: dict[str, Pod]) -> str:
    return max(pods, key=lambda n: _metadata(pods[n]).get("creationTimestamp", ""))


def _retryable(error: Exception) -> bool:
    return isinstance(error, KubeError) and error.retryable
