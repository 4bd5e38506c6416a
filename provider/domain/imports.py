"""Imports: data the service pulls from a remote HTTP endpoint into a workspace."""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime

from provider.domain.errors import Conflict, FieldProblem

# RFC 9110: a field name is a token; a value holds no control character but tab (an HTTP client
# refuses to send the others, so an import holding them could never run).
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_HEADER_VALUE_FORBIDDEN = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def header_problems(headers: Mapping[str, str], field_name: str = "body.headers") -> list[FieldProblem]:
    """Why the headers an import sends to its source cannot be sent as HTTP header fields."""
    problems = []
    for name, value in headers.items():
        if not _HEADER_NAME.fullmatch(name):
            problems.append(FieldProblem(f"{field_name}.{name}", "the name must be an HTTP token"))
        if _HEADER_VALUE_FORBIDDEN.search(value):
            problems.append(
                FieldProblem(f"{field_name}.{name}", "the value must not contain control characters but tab")
            )
    return problems


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
