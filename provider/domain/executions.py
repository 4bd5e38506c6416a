"""Executions: one run of an asset on a workspace's data, and the state machine it follows.

State names follow GA4GH TES so that a TES API can be offered over executions. Every change
goes through `Execution.advance`, which checks the transition table, stamps the time and
raises the version; nothing else changes an execution's state.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from provider.domain.errors import Conflict


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


def outputs_from_manifest(manifest: dict[str, Any]) -> tuple[OutputFile, ...]:
    """The output files the data sidecar listed in its manifest."""
    return tuple(
        OutputFile(o["name"], f["key"], f["size"], f["sha256"])
        for o in manifest["outputs"]
        for f in o["files"]
    )


def outputs_prefix(execution_id: str) -> str:
    return f"executions/{execution_id}/outputs/"


def logs_key(execution_id: str) -> str:
    return f"executions/{execution_id}/logs/worker.log"
