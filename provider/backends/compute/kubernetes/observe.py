"""From what the API server shows of a Job and its pod to an execution state. Pure: no I/O.

The pod tells most (which container runs, how each ended); the Job tells what the pod cannot,
such as its deadline; and while there is no pod, the Job controller's `FailedCreate` Events tell
why the cluster refuses to make one. Reasons name the cause in words an operator can look up.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import TypeVar

from provider.backends.compute.common import staging_failed
from provider.backends.compute.kubernetes.manifests import STAGE_IN, STAGE_OUT, STEP_PREFIX, WORKER
from provider.backends.compute.kubernetes.objects import (
    Condition,
    ContainerStateTerminated,
    ContainerStatus,
    Event,
    Job,
    KubeObject,
    Pod,
    PodStatus,
)
from provider.domain.executions import Reason, State
from provider.domain.programs import StepLog
from provider.sidecar.contract import Command, ExitCode

T = TypeVar("T", datetime, None)
PULL_FAILURES = {"ErrImagePull", "ImagePullBackOff", "RegistryUnavailable"}
PULL_FATAL = {"InvalidImageName", "ErrImageNeverPull"}
# Waiting reasons that heal by themselves within the grace (a Secret being created, say).
CONFIG_FAILURES = {"CreateContainerConfigError", "CreateContainerError", "RunContainerError"}
# client-go's event recorder folds many similar Events into one whose message starts so.
COMBINED = "(combined from similar events): "


@dataclass(frozen=True)
class Observation:
    state: State
    reason: str | None = None  # a Reason, or the cluster's own word (a pod's status.reason)
    message: str | None = None
    exit_code: int | None = None
    manifest_in_storage: bool = False
    steps: tuple[StepLog, ...] = ()  # a program's steps that ended, in order

    @property
    def key(self) -> tuple[object, ...]:
        return (self.state, self.reason, self.message, self.exit_code, len(self.steps))


@dataclass(frozen=True)
class Refusal:
    """The cluster refuses to create the Job's pod (a quota, a missing RuntimeClass, an admission
    webhook), as the Job controller's FailedCreate Events say: since when, and its latest words."""

    since: datetime
    message: str

    @property
    def reason(self) -> Reason:
        return Reason.QUOTA_EXCEEDED if "exceeded quota" in self.message else Reason.POD_CREATE_REFUSED


def refusal(events: Iterable[Event], job_uid: str | None, now: datetime) -> Refusal | None:
    """What the FailedCreate Events about one Job (in the order they were seen) say; those about
    an earlier Job of the same name (its uid differs) do not count."""
    mine = [
        e for e in events if not job_uid or (e.get("involvedObject") or {}).get("uid") in ("", None, job_uid)
    ]
    if not mine:
        return None
    since = min(_time(e.get("firstTimestamp") or e.get("eventTime"), now) for e in mine)
    # Times count whole seconds: of Events as late as each other, the one seen last.
    latest = max(reversed(mine), key=lambda e: _time(e.get("lastTimestamp") or e.get("eventTime"), now))
    return Refusal(since, str(latest.get("message") or "").removeprefix(COMBINED))


@dataclass(frozen=True)
class Verdict:
    observation: Observation | None
    # A container has been failing to start: look again once its grace is over.
    recheck_after: float | None = None


def derive(
    job: Job | None,
    pod: Pod | None,
    now: datetime,
    pull_grace_seconds: float,
    refused: Refusal | None = None,
    create_grace_seconds: float = 300.0,
) -> Verdict:
    # FailureTarget comes first on recent clusters: the Job controller then terminates the pod.
    failed = _condition(job, "Failed") or _condition(job, "FailureTarget")
    if pod is None and refused is not None and _condition(job, "Complete") is None:
        # No pod could be made: the cluster's doing, never the worker's, even once the Job's
        # deadline passes. QUEUED while the Job controller tries again, within the grace.
        waited = (now - refused.since).total_seconds()
        if failed is not None or waited >= create_grace_seconds:
            return Verdict(Observation(State.SYSTEM_ERROR, refused.reason, refused.message))
        return Verdict(
            Observation(State.QUEUED, refused.reason, refused.message),
            recheck_after=create_grace_seconds - waited,
        )
    if failed is not None and failed.get("reason") == Reason.DEADLINE_EXCEEDED:
        return Verdict(
            Observation(
                State.EXECUTOR_ERROR,
                Reason.DEADLINE_EXCEEDED,
                failed.get("message") or "the job ran past its deadline",
            )
        )
    if pod is None:
        if _condition(job, "Complete") is not None:
            return Verdict(Observation(State.COMPLETE, manifest_in_storage=True))
        if failed is not None:
            reason = failed.get("reason") or Reason.JOB_FAILED
            return Verdict(Observation(State.SYSTEM_ERROR, reason, failed.get("message")))
        return Verdict(Observation(State.QUEUED))
    return _from_pod(pod, now, pull_grace_seconds)


def _from_pod(pod: Pod, now: datetime, grace: float) -> Verdict:
    if (pod.get("metadata") or {}).get("deletionTimestamp"):
        # Being deleted: its containers are killed, and what they exit with says nothing about
        # the worker. What follows decides: the Job's deadline, or the pod's end (Lost).
        return Verdict(None)
    status = pod.get("status") or {}
    statuses = {
        s["name"]: s
        for s in [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]
    }
    # A program's steps (step-1...step-N) run in order, the last in the worker's place.
    steps = sorted(
        (n for n in statuses if n.startswith(STEP_PREFIX)), key=lambda n: int(n[len(STEP_PREFIX) :])
    )
    worker_name = steps[-1] if steps else WORKER
    done = tuple(_step_log(t) for n in steps if (t := _terminated(statuses, n)) is not None)
    verdict = _judge(pod, statuses, status, now, grace, steps, worker_name)
    if done and verdict.observation is not None:
        verdict = Verdict(replace(verdict.observation, steps=done), verdict.recheck_after)
    return verdict


def _step_log(terminated: ContainerStateTerminated) -> StepLog:
    return StepLog(
        int(terminated.get("exitCode", -1)),
        _time(terminated.get("startedAt"), None),
        _time(terminated.get("finishedAt"), None),
    )


def _judge(
    pod: Pod,
    statuses: dict[str, ContainerStatus],
    status: PodStatus,
    now: datetime,
    grace: float,
    steps: list[str],
    worker_name: str,
) -> Verdict:
    ended = status.get("reason")
    if status.get("phase") == "Failed" and ended in (Reason.DEADLINE_EXCEEDED, Reason.EVICTED):
        state = State.EXECUTOR_ERROR if ended == Reason.DEADLINE_EXCEEDED else State.SYSTEM_ERROR
        return Verdict(Observation(state, ended, status.get("message")))

    # Containers that cannot start: an image that does not pull, a configuration that fails.
    for name in (STAGE_IN, *steps[:-1], worker_name, STAGE_OUT):
        waiting = ((statuses.get(name) or {}).get("state") or {}).get("waiting") or {}
        reason = waiting.get("reason")
        if reason in PULL_FAILURES or reason in PULL_FATAL or reason in CONFIG_FAILURES:
            kind = (
                Reason.IMAGE_PULL
                if reason in PULL_FAILURES or reason in PULL_FATAL
                else Reason.CONTAINER_CONFIG
            )
            message = f"{name}: {reason}: {waiting.get('message') or ''}".strip(" :")
            waited = (now - _created(pod, now)).total_seconds()
            if reason in PULL_FATAL or waited >= grace:
                return Verdict(Observation(State.SYSTEM_ERROR, kind, message))
            current = _progress(statuses, status, worker_name)
            return Verdict(
                Observation(current.state, reason, message, current.exit_code), recheck_after=grace - waited
            )

    stage_in = _terminated(statuses, STAGE_IN)
    if stage_in is not None and stage_in.get("exitCode") != ExitCode.DONE:
        return Verdict(_staging_failed(Command.STAGE_IN, stage_in))
    for number, name in enumerate(steps[:-1], 1):
        step = _terminated(statuses, name)
        if step is not None and int(step.get("exitCode", -1)) != 0:
            code = int(step.get("exitCode", -1))
            reason = Reason.OOM_KILLED if step.get("reason") == Reason.OOM_KILLED else Reason.EXIT_CODE
            return Verdict(
                Observation(State.EXECUTOR_ERROR, reason, f"step {number} exited with {code}", code)
            )
    worker = _terminated(statuses, worker_name)
    if worker is not None:
        code = int(worker.get("exitCode", -1))
        if worker.get("reason") == Reason.OOM_KILLED:
            return Verdict(
                Observation(
                    State.EXECUTOR_ERROR, Reason.OOM_KILLED, "the worker ran out of memory (OOMKilled)", code
                )
            )
        if code != 0:
            message = f"the worker exited with {code}"
            if worker.get("message"):
                message += ": " + str(worker["message"]).strip()[-500:]
            return Verdict(Observation(State.EXECUTOR_ERROR, Reason.EXIT_CODE, message, code))
        stage_out = _terminated(statuses, STAGE_OUT)
        if stage_out is not None:
            if stage_out.get("exitCode") == ExitCode.DONE:
                return Verdict(Observation(State.COMPLETE, exit_code=0, manifest_in_storage=True))
            return Verdict(_staging_failed(Command.STAGE_OUT, stage_out))
    if status.get("phase") == "Failed":
        return Verdict(
            Observation(State.SYSTEM_ERROR, status.get("reason") or Reason.POD_FAILED, status.get("message"))
        )
    return Verdict(_progress(statuses, status, worker_name))


def _progress(statuses: dict[str, ContainerStatus], status: PodStatus, worker: str = WORKER) -> Observation:
    """Where a pod that has not ended is: scheduled or not, staging in, running, staging out."""
    if _terminated(statuses, worker) is not None:
        return Observation(State.FINALIZING, exit_code=0)
    if any(
        "running" in ((statuses.get(n) or {}).get("state") or {}) or _terminated(statuses, n) is not None
        for n in statuses
        if n == worker or n.startswith(STEP_PREFIX)
    ):
        return Observation(State.RUNNING)
    scheduled = next((c for c in status.get("conditions") or [] if c.get("type") == "PodScheduled"), None)
    if scheduled is not None and scheduled.get("status") == "False":
        return Observation(
            State.QUEUED, scheduled.get("reason") or Reason.UNSCHEDULABLE, scheduled.get("message")
        )
    if scheduled is not None or statuses:
        return Observation(State.INITIALIZING)
    return Observation(State.QUEUED)


def _staging_failed(command: Command, terminated: ContainerStateTerminated) -> Observation:
    state, reason, exit_code = staging_failed(command, int(terminated.get("exitCode", -1)))
    return Observation(state, reason, _said(terminated, command), exit_code)


def _terminated(statuses: dict[str, ContainerStatus], name: str) -> ContainerStateTerminated | None:
    return ((statuses.get(name) or {}).get("state") or {}).get("terminated")


def _said(terminated: ContainerStateTerminated, name: str) -> str:
    text = str(terminated.get("message") or "").strip()
    return text[-1000:] if text else f"{name} exited with {terminated.get('exitCode')}"


def _condition(job: Job | None, kind: str) -> Condition | None:
    for condition in ((job or {}).get("status") or {}).get("conditions") or []:
        if condition.get("type") == kind and condition.get("status") == "True":
            return condition
    return None


def _created(obj: KubeObject, default: datetime) -> datetime:
    return _time((obj.get("metadata") or {}).get("creationTimestamp"), default)


def _time(stamp: object, default: T) -> datetime | T:
    if not stamp:
        return default
    try:
        return datetime.fromisoformat(str(stamp).replace("Z", "+00:00"))
    except ValueError:
        return default
