"""GA4GH Task Execution Service 1.1 over executions: the task document, the rules it must follow
here, and how a task and its execution map onto each other (docs/tes.md).

A task is one execution of one catalog asset, with a program (provider/domain/programs.py): its
executors become the program's steps, its inputs placements, its outputs collects. The TES
document as submitted is kept beside the execution, so that a task reads back as it was sent.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import PurePosixPath
from typing import Annotated, Any, Literal
from urllib.parse import unquote, urlsplit

from pydantic import BaseModel, ConfigDict, Field, StrictBool, field_validator

from provider.domain.assets import ENV_KEY_PATTERN
from provider.domain.executions import Execution, Reason, State
from provider.domain.programs import StepLog, collect_name

TES_VERSION = "1.1.0"
MAX_CONTENT_BYTES = 1024 * 1024  # inline input content; TES asks for at least 128 KiB
MAX_TAGS = 64
WORKSPACE_SCHEME = "workspace"
ASSET_IMAGE = re.compile(r"^asset:(?P<id>[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(@(?P<version>[^@\s]+))?$")
# backend_parameters keys this service understands (case-insensitive, as TES says).
BACKEND_PARAMETERS = ("workspace", "asset_version")


class View:
    MINIMAL = "MINIMAL"
    BASIC = "BASIC"
    FULL = "FULL"
    ALL = (MINIMAL, BASIC, FULL)


class TesState:
    UNKNOWN = "UNKNOWN"
    QUEUED = "QUEUED"
    INITIALIZING = "INITIALIZING"
    RUNNING = "RUNNING"
    PAUSED = "PAUSED"
    COMPLETE = "COMPLETE"
    EXECUTOR_ERROR = "EXECUTOR_ERROR"
    SYSTEM_ERROR = "SYSTEM_ERROR"
    CANCELED = "CANCELED"
    PREEMPTED = "PREEMPTED"
    CANCELING = "CANCELING"
    ALL = (
        UNKNOWN,
        QUEUED,
        INITIALIZING,
        RUNNING,
        PAUSED,
        COMPLETE,
        EXECUTOR_ERROR,
        SYSTEM_ERROR,
        CANCELED,
        PREEMPTED,
        CANCELING,
    )


def _absolute(value: str) -> str:
    path = PurePosixPath(value)
    if (
        not path.is_absolute()
        or value.startswith("//")  # POSIX leaves "//" to the system: no path here
        or ".." in path.parts
        or "\x00" in value
        or len(path.parts) < 2
    ):
        raise ValueError("must be an absolute path below '/' without '..' segments")
    return str(path)


def _env_names(value: dict[str, str]) -> dict[str, str]:
    bad = sorted(k for k in value if not re.fullmatch(ENV_KEY_PATTERN, k))
    if bad:
        raise ValueError(f"not valid environment variable names: {', '.join(map(repr, bad))}")
    return value


def _absolute_or_none(value: str | None) -> str | None:
    return None if value is None else _absolute(value)


class _Document(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TesExecutor(_Document):
    image: Annotated[str, Field(min_length=1, max_length=512)]
    command: list[Annotated[str, Field(max_length=131072)]] = Field(min_length=1, max_length=1000)
    workdir: str | None = None
    stdin: str | None = None
    stdout: str | None = None
    stderr: str | None = None
    env: dict[str, str] = Field(default_factory=dict)
    ignore_error: StrictBool = False

    _paths = field_validator("workdir", "stdin", "stdout", "stderr")(_absolute_or_none)
    _env = field_validator("env")(_env_names)


class TesInput(_Document):
    name: str | None = None
    description: str | None = None
    url: str | None = None
    path: str
    type: Literal["FILE", "DIRECTORY"] = "FILE"
    content: str | None = None
    streamable: StrictBool | None = None

    _path = field_validator("path")(_absolute)

    @field_validator("content")
    @classmethod
    def _size(cls, value: str | None) -> str | None:
        if value is not None and len(value.encode()) > MAX_CONTENT_BYTES:
            raise ValueError(
                f"content is limited to {MAX_CONTENT_BYTES} bytes here; put larger files in the workspace"
            )
        return value


class TesOutput(_Document):
    name: str | None = None
    description: str | None = None
    url: str
    path: str
    path_prefix: str | None = None
    type: Literal["FILE", "DIRECTORY"] = "FILE"

    _path = field_validator("path")(_absolute)


class TesResources(_Document):
    cpu_cores: Annotated[int, Field(ge=1, le=1024)] | None = None
    preemptible: StrictBool | None = None
    ram_gb: Annotated[float, Field(gt=0, le=65536)] | None = None
    disk_gb: Annotated[float, Field(gt=0, le=1048576)] | None = None
    zones: list[str] | None = None
    backend_parameters: dict[str, str] | None = None
    backend_parameters_strict: StrictBool | None = None


class TesTaskDocument(_Document):
    """A CreateTask body. The fields the server sets (`id`, `state`, `logs`, `creation_time`) are
    accepted and ignored, as some clients send them back."""

    id: Any = None
    state: Any = None
    logs: Any = None
    creation_time: Any = None
    name: Annotated[str, Field(max_length=1024)] | None = None
    description: Annotated[str, Field(max_length=16384)] | None = None
    inputs: list[TesInput] = Field(default_factory=list, max_length=1000)
    outputs: list[TesOutput] = Field(default_factory=list, max_length=1000)
    resources: TesResources | None = None
    executors: list[TesExecutor] = Field(min_length=1, max_length=32)
    volumes: list[str] = Field(default_factory=list, max_length=100)
    tags: dict[
        Annotated[str, Field(min_length=1, max_length=255)], Annotated[str, Field(max_length=1024)]
    ] = Field(default_factory=dict, max_length=MAX_TAGS)

    @field_validator("volumes")
    @classmethod
    def _volumes(cls, value: list[str]) -> list[str]:
        return [_absolute(v) for v in value]

    def stored(self) -> dict[str, Any]:
        """The document as kept: what the client sent, without the server's own fields."""
        return self.model_dump(exclude={"id", "state", "logs", "creation_time"}, exclude_none=True)


# --- where data lives --------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """Where a URL of a task points: an object key (or prefix) of a workspace, or a remote source."""

    workspace_id: str | None = None  # workspace:// names one; s3:// is the task's own
    key: str | None = None
    remote: str | None = None  # an http(s) URL, fetched into the workspace before the task runs


class UrlProblem(ValueError):
    pass


def parse_url(url: str, *, bucket: str | None, prefix: str) -> Target:
    """Where `url` points. `bucket` and `prefix` are the task's workspace in S3 (None when its
    storage is not S3): an `s3://` URL must name that bucket, and in a shared bucket that prefix."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - a port that is no number raises here
    except ValueError as exc:
        raise UrlProblem(f"not a URL: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme == WORKSPACE_SCHEME:
        key = unquote(parts.path.removeprefix("/"))
        if not parts.netloc or not key:
            raise UrlProblem("a workspace URL is workspace://<workspace id>/<object key>")
        return Target(workspace_id=parts.netloc, key=key)
    if scheme == "s3":
        if bucket is None:
            raise UrlProblem("s3:// URLs are not available: this service keeps workspaces on a file system")
        key = unquote(parts.path.removeprefix("/"))
        if parts.netloc != bucket or not key:
            raise UrlProblem(f"an s3:// URL must name the task's workspace: s3://{bucket}/{prefix}<key>")
        if prefix and not key.startswith(prefix):
            raise UrlProblem(f"an s3:// URL must name the task's workspace: s3://{bucket}/{prefix}<key>")
        return Target(key=key.removeprefix(prefix))
    if scheme in ("http", "https"):
        if not parts.netloc:
            raise UrlProblem("an http(s) URL needs a host")
        return Target(remote=url)
    if scheme == "file" or (not scheme and url.startswith("/")):
        raise UrlProblem(
            "file paths name the client's disk, which this service cannot read: upload the file to "
            "the workspace and give its workspace:// URL, or give its content inline"
        )
    raise UrlProblem(f"unsupported URL scheme {scheme or '(none)'!r}: use workspace://, s3:// or http(s)://")


def workspace_url(workspace_id: str, key: str) -> str:
    return f"{WORKSPACE_SCHEME}://{workspace_id}/{key}"


def asset_reference(image: str) -> tuple[str, str | None] | None:
    """(asset id, version or None) when `image` names an asset (`asset:<id>[@<version>]`)."""
    match = ASSET_IMAGE.fullmatch(image)
    return (match["id"], match["version"]) if match else None


# --- state -------------------------------------------------------------------------------------

_STATES = {
    State.QUEUED: TesState.QUEUED,
    State.INITIALIZING: TesState.INITIALIZING,
    State.RUNNING: TesState.RUNNING,
    State.FINALIZING: TesState.RUNNING,  # outputs are being uploaded: not COMPLETE until they are
    State.COMPLETE: TesState.COMPLETE,
    State.EXECUTOR_ERROR: TesState.EXECUTOR_ERROR,
    State.SYSTEM_ERROR: TesState.SYSTEM_ERROR,
    State.CANCELING: TesState.CANCELING,
    State.CANCELED: TesState.CANCELED,
}


def tes_state(execution: Execution) -> str:
    """The TES state of an execution (docs/tes.md has the table)."""
    if execution.held:
        return TesState.PAUSED  # its workspace's data flow is suspended
    if execution.state is State.SYSTEM_ERROR and execution.reason == Reason.EVICTED:
        return TesState.PREEMPTED  # the cluster took the node back, and no retry was left
    return _STATES[execution.state]


@dataclass(frozen=True)
class StateFilter:
    """The executions a TES state filter selects: their states, and a reason that must (or must
    not) be theirs."""

    states: frozenset[State] = frozenset()
    reason: str | None = None
    not_reason: str | None = None
    nothing: bool = False  # UNKNOWN: no task is ever in it


def state_filter(state: str) -> StateFilter:
    if state == TesState.PAUSED:
        return StateFilter(frozenset({State.QUEUED}), reason=Reason.SUSPENDED)
    if state == TesState.QUEUED:
        return StateFilter(frozenset({State.QUEUED}), not_reason=Reason.SUSPENDED)
    if state == TesState.PREEMPTED:
        return StateFilter(frozenset({State.SYSTEM_ERROR}), reason=Reason.EVICTED)
    if state == TesState.SYSTEM_ERROR:
        return StateFilter(frozenset({State.SYSTEM_ERROR}), not_reason=Reason.EVICTED)
    if state == TesState.UNKNOWN:
        return StateFilter(nothing=True)
    return StateFilter(frozenset(s for s, t in _STATES.items() if t == state))


# --- the stored task ---------------------------------------------------------------------------


@dataclass(frozen=True)
class TaskRecord:
    """What the TES API keeps of a task beside its execution (which shares its id)."""

    id: str
    tenant_id: str
    name: str | None
    tags: dict[str, str]
    document: dict[str, Any]  # TesTaskDocument.stored()
    created_at: datetime
    # How each input and output URL resolved: the key in the workspace (None for inline content
    # and remote sources until fetched), in document order.
    input_keys: tuple[str | None, ...] = ()
    output_keys: tuple[str, ...] = ()
    imports: tuple[str, ...] = ()  # import ids fetching http(s) inputs; the task waits for them
    warnings: tuple[str, ...] = ()  # what was asked and is not honoured (system logs)


def inline_key(task_id: str, index: int) -> str:
    """Where an input given inline or fetched from http(s) is kept in the workspace."""
    return f"tes/{task_id}/inputs/{index}"


INLINE_KEY = re.compile(r"^tes/(?P<task>[A-Za-z0-9_]+)/inputs/(?P<index>[0-9]+)$")


def task_of_key(key: str) -> str | None:
    match = INLINE_KEY.fullmatch(key)
    return match["task"] if match else None


def _stamp(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value else None


def render(record: TaskRecord, execution: Execution, view: str) -> dict[str, Any]:
    """The tesTask a GetTask or ListTasks answers, in `view`."""
    state = tes_state(execution)
    if view == View.MINIMAL:
        return {"id": record.id, "state": state}
    full = view == View.FULL
    task: dict[str, Any] = {"id": record.id, "state": state}
    document = record.document
    for name in ("name", "description"):
        if document.get(name) is not None:
            task[name] = document[name]
    inputs = []
    for item in document.get("inputs", []):
        shown = dict(item)
        if not full:
            shown.pop("content", None)
        inputs.append(shown)
    task["inputs"] = inputs
    task["outputs"] = [dict(o) for o in document.get("outputs", [])]
    if document.get("resources") is not None:
        task["resources"] = document["resources"]
    task["executors"] = [dict(e) for e in document["executors"]]
    task["volumes"] = list(document.get("volumes", []))
    task["tags"] = dict(record.tags)
    task["logs"] = _logs(record, execution, full)
    task["creation_time"] = _stamp(record.created_at)
    return task


def _logs(record: TaskRecord, execution: Execution, full: bool) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = []
    metadata = {
        "execution_id": execution.id,
        "workspace_id": execution.workspace_id,
        "asset": f"{execution.asset_id}@{execution.asset_version}",
    }
    for attempt in execution.attempts:
        entry: dict[str, Any] = {
            "logs": [] if attempt.exit_code is None else [{"exit_code": attempt.exit_code}],
            "metadata": {**metadata, "attempt": str(attempt.number)},
            "start_time": _stamp(attempt.started_at),
            "end_time": _stamp(attempt.ended_at),
            "outputs": [],
        }
        if full:
            said = f"attempt {attempt.number} ended {attempt.state.value} ({attempt.reason})"
            entry["system_logs"] = [f"{said}: {attempt.message}" if attempt.message else said]
        entries.append(entry)
    current: dict[str, Any] = {
        "logs": [_executor_log(step, full) for step in execution.steps if step.exit_code is not None],
        "metadata": {**metadata, "attempt": str(execution.attempt)},
        "outputs": _output_logs(record, execution),
    }
    started = execution.entered(State.INITIALIZING) or execution.entered(State.RUNNING)
    if started is not None and started >= (execution.entered(State.QUEUED) or started):
        current["start_time"] = _stamp(started)
    if execution.state.final:
        current["end_time"] = _stamp(execution.updated_at)
    if not current["logs"] and execution.exit_code is not None and not execution.steps:
        current["logs"] = [{"exit_code": execution.exit_code}]
    if full:
        system = list(record.warnings)
        if execution.reason or execution.message:
            system.append(
                f"{execution.state.value} ({execution.reason or '-'}): {execution.message or ''}".rstrip(": ")
            )
        system.extend(
            f"{t.at.isoformat()} {t.state.value}" + (f" ({t.reason})" if t.reason else "")
            for t in execution.history
        )
        current["system_logs"] = system
    entries.append(current)
    return entries


def _executor_log(step: StepLog, full: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"exit_code": step.exit_code}
    if step.started_at is not None:
        out["start_time"] = _stamp(step.started_at)
    if step.ended_at is not None:
        out["end_time"] = _stamp(step.ended_at)
    if full:
        out["stdout"] = step.stdout
        out["stderr"] = step.stderr
    return out


def _output_logs(record: TaskRecord, execution: Execution) -> list[dict[str, Any]]:
    """Each uploaded file: its URL in the form the task used for its output, path and size."""
    outputs = record.document.get("outputs", [])
    found = []
    for file in execution.outputs:
        if not file.name.startswith("collect-"):
            continue
        index = int(file.name.removeprefix("collect-"))
        if index >= len(outputs) or collect_name(index) != file.name:
            continue
        declared = outputs[index]
        base_key = record.output_keys[index]
        relative = file.key[len(base_key) :].lstrip("/") if declared.get("type") == "DIRECTORY" else ""
        url = declared["url"]
        if relative:
            url = url.rstrip("/") + "/" + relative
        path = declared["path"] if not relative else declared["path"].rstrip("/") + "/" + relative
        found.append({"url": url, "path": path, "size_bytes": str(file.size)})
    return found
