"""Executions: one run of an asset on a workspace's data, and the state machine it follows.

State names follow GA4GH TES so that a TES API can be offered over executions. Every change
goes through `Execution.advance`, which checks the transition table, stamps the time and
raises the version; nothing else changes an execution's state.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from provider.domain.errors import Conflict
from provider.domain.programs import Program, StepLog


class State(enum.StrEnum):
    QUEUED = "QUEUED"
    INITIALIZING = "INITIALIZING"  # staging inputs in
    RUNNING = "RUNNING"
    FINALIZING = "FINALIZING"  # shipping results out
    COMPLETE = "COMPLETE"
    EXECUTOR_ERROR = "EXECUTOR_ERROR"  # the worker failed (exit code, OOMKilled, DeadlineExceeded, ...)
    SYSTEM_ERROR = "SYSTEM_ERROR"  # the infrastructure failed (image pull, staging, upload, lost worker)
    CANCELING = "CANCELING"
    CANCELED = "CANCELED"

    @property
    def final(self) -> bool:
        return self in FINAL

    @property
    def active(self) -> bool:
        return not self.final


FINAL = frozenset({State.COMPLETE, State.EXECUTOR_ERROR, State.SYSTEM_ERROR, State.CANCELED})
_FAILURES = {State.EXECUTOR_ERROR, State.SYSTEM_ERROR}

# Allowed transitions: from -> to. Failures may happen in every active state; a cancel request
# moves a running execution to CANCELING (a queued one straight to CANCELED).
TRANSITIONS: dict[State, frozenset[State]] = {
    State.QUEUED: frozenset({State.INITIALIZING, State.CANCELING, State.CANCELED, *_FAILURES}),
    State.INITIALIZING: frozenset({State.RUNNING, State.CANCELING, *_FAILURES}),
    State.RUNNING: frozenset({State.FINALIZING, State.CANCELING, *_FAILURES}),
    State.FINALIZING: frozenset({State.COMPLETE, State.CANCELING, *_FAILURES}),
    State.CANCELING: frozenset({State.CANCELED, State.SYSTEM_ERROR}),
    State.COMPLETE: frozenset(),
    State.EXECUTOR_ERROR: frozenset(),
    State.SYSTEM_ERROR: frozenset(),
    State.CANCELED: frozenset(),
}


# The forward path; a backend may report a later state directly (a fast job skips RUNNING).
FORWARD = (State.QUEUED, State.INITIALIZING, State.RUNNING, State.FINALIZING, State.COMPLETE)


def behind(current: State, observed: State) -> bool:
    """`observed` comes before `current` on the forward path: an older view, not a transition."""
    return current in FORWARD and observed in FORWARD and FORWARD.index(observed) < FORWARD.index(current)


def path(current: State, target: State) -> list[State]:
    """The states to pass through from `current` to `target` (just `[target]` off the forward path)."""
    if current in FORWARD and target in FORWARD and FORWARD.index(target) > FORWARD.index(current):
        return list(FORWARD[FORWARD.index(current) + 1 : FORWARD.index(target) + 1])
    return [target]


class Reason(enum.StrEnum):
    """Why an execution is where it is, in words an operator can look up (the `reason` field).

    Backends may also pass on a reason of their own system (the API server's, a pod's status) or
    `Signal<n>` (the local worker killed by signal n); these are plain strings.
    """

    # Said by the service
    CANCELED = "Canceled"  # canceled on request (or its workspace went away)
    SUSPENDED = "Suspended"  # held while its workspace's data flow is suspended; submitted on resume
    RETRY = "Retry"  # queued again for its next attempt
    LOST = "Lost"  # the backend no longer knows the job (a restart, a deleted Job or pod)
    SUBMIT = "Submit"  # the job could not be handed to the backend
    AWAITING_INPUTS = "AwaitingInputs"  # queued until its inputs are fetched (a TES task's http(s))
    INPUT_FETCH = "InputFetch"  # an input could not be fetched
    # Said by the backends
    BACKEND = "Backend"  # the local backend itself failed
    STAGE_IN = "StageIn"
    STAGE_OUT = "StageOut"
    EXIT_CODE = "ExitCode"
    DEADLINE_EXCEEDED = "DeadlineExceeded"
    OOM_KILLED = "OOMKilled"
    MISSING_OUTPUT = "MissingOutput"  # the worker ended well but left out a required output
    EVICTED = "Evicted"
    IMAGE_PULL = "ImagePull"
    CONTAINER_CONFIG = "ContainerConfig"
    POD_FAILED = "PodFailed"
    JOB_FAILED = "JobFailed"
    REJECTED = "Rejected"  # the API server refused the Job
    QUOTA_EXCEEDED = "QuotaExceeded"
    POD_CREATE_REFUSED = "PodCreateRefused"
    API_UNAVAILABLE = "ApiUnavailable"
    UNSCHEDULABLE = "Unschedulable"


# Why a job may fail that is not the consumer's doing, and where running it again is safe: the
# job was lost (node, service crash), evicted, its image did not pull, the cluster refused its
# pod or its Secret, the API failed, or a stage (which only copies data) failed.
RETRYABLE_REASONS = frozenset(
    {
        Reason.LOST,
        Reason.EVICTED,
        Reason.IMAGE_PULL,
        Reason.CONTAINER_CONFIG,
        Reason.SUBMIT,
        Reason.BACKEND,
        Reason.STAGE_IN,
        Reason.STAGE_OUT,
        Reason.POD_FAILED,
    }
)


def should_retry(
    state: State, reason: str | None, attempt: int, max_attempts: int, executor_errors: bool
) -> bool:
    """Whether a failed attempt is run again: system errors not of the consumer's making, and
    the worker's own failures only where the asset asks for it; never past `max_attempts`."""
    if attempt >= max_attempts:
        return False
    if state is State.SYSTEM_ERROR:
        return reason in RETRYABLE_REASONS
    return state is State.EXECUTOR_ERROR and executor_errors


@dataclass(frozen=True)
class Attempt:
    """A finished attempt of an execution that was run again."""

    number: int
    state: State
    reason: str | None
    message: str | None
    exit_code: int | None
    started_at: datetime
    ended_at: datetime
    logs_key: str | None = None


@dataclass(frozen=True)
class Transition:
    state: State
    at: datetime
    reason: str | None = None


@dataclass(frozen=True)
class OutputFile:
    name: str  # the asset output it belongs to
    key: str  # object key in the workspace
    size: int
    sha256: str


@dataclass(frozen=True)
class Execution:
    id: str
    tenant_id: str
    workspace_id: str
    asset_id: str
    asset_version: str
    inputs: dict[str, str]  # input name -> object key (or prefix for directories)
    env: dict[str, str]
    labels: dict[str, str]
    state: State
    version: int
    created_at: datetime
    updated_at: datetime
    history: tuple[Transition, ...]
    attempt: int = 1
    exit_code: int | None = None
    reason: str | None = None
    message: str | None = None
    outputs: tuple[OutputFile, ...] = ()
    logs_key: str | None = None
    idempotency_key: str | None = None
    request_hash: str | None = None
    callback: dict[str, Any] | None = field(default=None)
    attempts: tuple[Attempt, ...] = ()  # earlier attempts, oldest first
    retry_at: datetime | None = None  # a QUEUED retry is submitted at this time
    program: Program | None = None  # the caller's own steps and paths (a TES task); None: the asset's
    steps: tuple[StepLog, ...] = ()  # how each step of the program ended, as far as it ran

    @property
    def awaiting_inputs(self) -> bool:
        """Queued, and kept from compute until the inputs it fetches have arrived."""
        return self.state is State.QUEUED and self.reason == Reason.AWAITING_INPUTS

    @property
    def held(self) -> bool:
        """Queued, and kept from compute while its workspace's data flow is suspended."""
        return self.state is State.QUEUED and self.reason == Reason.SUSPENDED

    @property
    def tries(self) -> int:
        """The attempts that ran or are running: a withdrawn (held) attempt is not a try, so a
        suspension costs no retry."""
        return self.attempt - sum(1 for a in self.attempts if a.reason == Reason.SUSPENDED)

    def hold(self, at: datetime, message: str) -> Execution:
        """Withdraw the queued attempt: its job is stopped before it began, its late reports are
        of an earlier attempt (ignored), and the next submission starts the next attempt."""
        if self.state is not State.QUEUED:
            raise Conflict(f"execution {self.id} is {self.state.value}: only a queued execution is held")
        started = self.entered(State.QUEUED) or self.created_at
        withdrawn = Attempt(self.attempt, State.CANCELED, Reason.SUSPENDED, message, None, started, at)
        return replace(
            self,
            version=self.version + 1,
            updated_at=at,
            history=(*self.history, Transition(State.QUEUED, at, Reason.SUSPENDED)),
            attempt=self.attempt + 1,
            attempts=(*self.attempts, withdrawn),
            retry_at=None,
            reason=Reason.SUSPENDED,
            message=message,
        )

    def unhold(self, at: datetime) -> Execution:
        """Queued again for compute: its workspace's data flow resumed."""
        if not self.held:
            raise Conflict(f"execution {self.id} is not held")
        return replace(
            self,
            version=self.version + 1,
            updated_at=at,
            history=(*self.history, Transition(State.QUEUED, at)),
            reason=None,
            message=None,
        )

    @property
    def just_retried(self) -> bool:
        """The latest change queued this execution again for its next attempt."""
        last = self.history[-1]
        return self.state is State.QUEUED and last.reason == Reason.RETRY and last.at == self.updated_at

    def retry(
        self,
        at: datetime,
        retry_at: datetime,
        state: State,
        reason: str | None,
        message: str | None,
        exit_code: int | None,
    ) -> Execution:
        """The failed attempt (`state`, `reason`) is recorded, with the key its log is kept
        under, and the execution QUEUED again as the next attempt, to be submitted at
        `retry_at`; its outputs are not carried over."""
        if self.state.final or self.state is State.CANCELING:
            raise Conflict(f"execution {self.id} is {self.state.value} and cannot be retried")
        started = self.history[0].at
        for transition in reversed(self.history):
            if transition.state is State.QUEUED:
                started = transition.at
                break
        ended = Attempt(
            self.attempt, state, reason, message, exit_code, started, at, logs_key(self.id, self.attempt)
        )
        note = f"attempt {self.attempt} ended {state.value}"
        note += f" ({reason}): {message}" if message else f" ({reason})"
        return replace(
            self,
            state=State.QUEUED,
            version=self.version + 1,
            updated_at=at,
            history=(*self.history, Transition(State.QUEUED, at, Reason.RETRY)),
            attempt=self.attempt + 1,
            attempts=(*self.attempts, ended),
            retry_at=retry_at,
            exit_code=None,
            reason=Reason.RETRY,
            message=f"{note}; attempt {self.attempt + 1} starts at {retry_at.isoformat()}",
            outputs=(),
            logs_key=None,
            steps=(),
        )

    def advance(self, state: State, at: datetime, **details: Any) -> Execution:
        """The execution in `state`; raises Conflict when the table forbids the transition."""
        if state not in TRANSITIONS[self.state]:
            raise Conflict(f"execution {self.id} is {self.state.value} and cannot become {state.value}")
        reason = details.get("reason", self.reason if state is self.state else None)
        return replace(
            self,
            state=state,
            version=self.version + 1,
            updated_at=at,
            history=(*self.history, Transition(state, at, reason)),
            **details,
        )

    def annotate(self, at: datetime, **details: Any) -> Execution:
        """Change details without a transition (e.g. a QUEUED reason such as Unschedulable)."""
        return replace(self, version=self.version + 1, updated_at=at, **details)

    def entered(self, state: State) -> datetime | None:
        for transition in reversed(self.history):
            if transition.state is state:
                return transition.at
        return None


def observed_target(current: State, observed: State, reason: str | None) -> State | None:
    """Where a backend's observation (`observed`, `reason`) takes an execution in `current`;
    None when it is ignored.

    While a cancel is under way, progress reports are ignored and every end is the cancel's:
    a job that went away (Lost, seen by another replica, say) or ended meanwhile is CANCELED;
    only a SYSTEM_ERROR stands.
    """
    if current is not State.CANCELING:
        return observed
    if reason == Reason.LOST:
        return State.CANCELED
    if observed in (State.CANCELED, State.SYSTEM_ERROR):
        return observed
    return State.CANCELED if observed.final else None


def reach(
    execution: Execution,
    target: State,
    at: datetime,
    reason: str | None,
    message: str | None,
    exit_code: int | None = None,
    outputs: tuple[OutputFile, ...] = (),
    steps: tuple[StepLog, ...] = (),
) -> Execution | None:
    """The execution in `target` with the observation's details, through the states of the
    forward path it skipped; the details alone when it is in `target` already; None when that
    says nothing new (a backend observing again after a restart)."""
    details: dict[str, Any] = {"reason": reason, "message": message}
    if execution.state is State.CANCELING and target is State.CANCELED:
        # However the end was seen (the canceling replica's delete, the leader seeing the Job
        # go, a reconciliation), a canceled execution says why: the cancel's words.
        details = {"reason": Reason.CANCELED, "message": execution.message}
    if exit_code is not None:
        details["exit_code"] = exit_code
    if outputs:
        details["outputs"] = outputs
    if steps:
        details["steps"] = steps
    if target is execution.state:
        if all(getattr(execution, k) == v for k, v in details.items()):
            return None
        return execution.annotate(at, **details)
    for step in path(execution.state, target):
        execution = execution.advance(step, at, **(details if step is target else {"reason": None}))
    return execution


def output_files(listed: Iterable[tuple[str, str, int, str]]) -> tuple[OutputFile, ...]:
    """The output files as the data sidecar's manifest lists them: (output name, key, size,
    sha256) each (`Manifest.listed` in provider/sidecar/contract.py, which also says where the
    outputs are kept)."""
    return tuple(OutputFile(*entry) for entry in listed)


def logs_key(execution_id: str, attempt: int = 1) -> str:
    """Where the worker's log is kept: one file per attempt (the first keeps the plain name)."""
    if attempt == 1:
        return f"executions/{execution_id}/logs/worker.log"
    return f"executions/{execution_id}/logs/worker.attempt-{attempt}.log"
