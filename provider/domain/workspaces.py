"""Workspaces: one storage location per consumer engagement, with a quota and usage figures."""

from __future__ import annotations

import enum
import unicodedata
from dataclasses import dataclass, replace
from datetime import datetime

from provider.domain.errors import FieldProblem, InvalidKey

MAX_KEY_BYTES = 1024
MAX_SEGMENT_BYTES = 255  # a file name on the filesystem backend (NAME_MAX)


class WorkspaceState(enum.StrEnum):
    ACTIVE = "active"
    SUSPENDED = "suspended"  # its data flow is suspended: closed to all but running jobs' sidecars
    DELETING = "deleting"  # tokens revoked, data being removed
    DELETED = "deleted"


JOB_SIDECAR = "job"  # the name of the tokens the service issues to jobs' data sidecars


class Scope(enum.StrEnum):
    """What a workspace token allows, always within its one workspace."""

    OBJECTS_READ = "objects:read"
    OBJECTS_WRITE = "objects:write"
    EXECUTIONS_RUN = "executions:run"
    EXECUTIONS_READ = "executions:read"
    SUBSCRIPTIONS_WRITE = "subscriptions:write"


@dataclass(frozen=True)
class Quota:
    max_bytes: int
    max_objects: int


@dataclass(frozen=True)
class Usage:
    bytes: int = 0
    objects: int = 0

    def after_put(self, new_size: int, replaced_size: int | None) -> Usage:
        if replaced_size is None:
            return Usage(self.bytes + new_size, self.objects + 1)
        return Usage(self.bytes + new_size - replaced_size, self.objects)

    def after_delete(self, size: int) -> Usage:
        return Usage(max(0, self.bytes - size), max(0, self.objects - 1))


@dataclass(frozen=True)
class Workspace:
    id: str
    tenant_id: str
    name: str
    labels: dict[str, str]
    location: str  # bucket name (s3) or directory name (fs)
    quota: Quota
    usage: Usage
    state: WorkspaceState
    created_at: datetime
    updated_at: datetime
    usage_checked_at: datetime | None = None
    deleted_at: datetime | None = None
    # The catalog assets this workspace may run; None: any (a workspace made by hand). Set from
    # the offering a data space transfer was made for, and never widened afterwards.
    allowed_assets: frozenset[str] | None = None

    @property
    def active(self) -> bool:
        return self.state is WorkspaceState.ACTIVE

    @property
    def open(self) -> bool:
        """Not (yet) deleted: its data is there, whether or not it is suspended."""
        return self.state in (WorkspaceState.ACTIVE, WorkspaceState.SUSPENDED)

    def with_usage(self, usage: Usage, at: datetime) -> Workspace:
        return replace(self, usage=usage, updated_at=at)

    def room_for(self, replaced_size: int | None) -> int:
        """Bytes a single object may have without breaking the byte quota."""
        return max(0, self.quota.max_bytes - self.usage.bytes + (replaced_size or 0))


def key_problems(key: str) -> list[str]:
    """Why `key` cannot be an object key (empty list: it can).

    Keys are relative POSIX-like paths: no leading '/', no empty, '.' or '..' segment, no
    control characters, at most 1024 bytes of UTF-8 and 255 in each '/'-separated segment. The
    same rules hold on every backend, so a key that works on S3 also works on the filesystem.
    """
    problems = []
    encoded = key.encode("utf-8", "surrogatepass")
    if not key:
        return ["must not be empty"]
    if len(encoded) > MAX_KEY_BYTES:
        problems.append(f"must be at most {MAX_KEY_BYTES} bytes of UTF-8 (is {len(encoded)})")
    if key.startswith("/"):
        problems.append("must not start with '/'")
    if any(unicodedata.category(ch) in ("Cc", "Cs") for ch in key):
        problems.append("must not contain NUL or other control characters")
    segments = key.split("/")
    longest = max(len(s.encode("utf-8", "surrogatepass")) for s in segments)
    if longest > MAX_SEGMENT_BYTES:
        problems.append(
            f"each '/'-separated segment must be at most {MAX_SEGMENT_BYTES} bytes of UTF-8 "
            f"(one is {longest})"
        )
    if ".." in segments:
        problems.append("must not contain a '..' segment")
    if "." in segments:
        problems.append("must not contain a '.' segment")
    if any(s == "" for s in segments[1:-1]) or (len(segments) > 1 and segments[-1] == ""):
        problems.append("must not contain empty segments or end with '/'")
    return problems


def check_key(key: str, field_name: str = "path.key") -> str:
    problems = key_problems(key)
    if problems:
        raise InvalidKey(
            f"invalid object key: {problems[0]}", [FieldProblem(field_name, p) for p in problems]
        )
    return key


def check_prefix(prefix: str, field_name: str = "query.prefix") -> str:
    """A listing prefix may end with '/' (a 'folder') but otherwise follows the key rules."""
    if prefix == "":
        return prefix
    return check_key(prefix[:-1] if prefix.endswith("/") else prefix, field_name) and prefix
