"""Imports: data the service pulls from a remote HTTP endpoint into a workspace."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace
from datetime import datetime

from provider.domain.errors import Conflict


class ImportState(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"

    @property
    def final(self) -> bool:
        return self in (ImportState.SUCCEEDED, ImportState.FAILED, ImportState.CANCELED)


_ALLOWED = {
    ImportState.QUEUED: {ImportState.RUNNING, ImportState.CANCELED, ImportState.FAILED},
    ImportState.RUNNING: {
        ImportState.RUNNING,
        ImportState.QUEUED,
        ImportState.SUCCEEDED,
        ImportState.FAILED,
        ImportState.CANCELED,
    },
}


@dataclass(frozen=True)
class Import:
    id: str
    workspace_id: str
    tenant_id: str
    source_url: str
    headers: dict[str, str] = field(repr=False)  # may carry credentials: never shown or logged
    target_key: str
    expected_size: int | None
    expected_sha256: str | None
    state: ImportState
    created_at: datetime
    updated_at: datetime
    bytes_done: int = 0
    bytes_total: int | None = None
    attempts: int = 0
    upstream_status: int | None = None
    error: str | None = None
    sha256: str | None = None
    finished_at: datetime | None = None

    def to(self, state: ImportState, at: datetime, **changes: object) -> Import:
        """The import in `state`; raises Conflict for a transition the state machine forbids."""
        if state not in _ALLOWED.get(self.state, set()):
            raise Conflict(f"import {self.id} is {self.state.value} and cannot become {state.value}")
        finished = at if state.final else None
        return replace(self, state=state, updated_at=at, finished_at=finished, **changes)  # type: ignore[arg-type]
