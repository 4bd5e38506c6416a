"""Compute assets: what a consumer can run (image, inputs, outputs, resources, limits).

An asset is identified by `id` and `version`; several versions may coexist and the highest
(PEP 440 ordering) is the default one.
"""

from __future__ import annotations

import enum
import re
from datetime import datetime
from pathlib import PurePosixPath
from typing import Annotated, Literal

from packaging.version import InvalidVersion, Version
from pydantic import BaseModel, ConfigDict, Field, StrictBool, field_validator, model_validator

from provider.domain.json_values import JsonInt

ASSET_ID_PATTERN = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
NAME_PATTERN = r"^[a-z][a-z0-9_]{0,62}$"
ENV_KEY_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,127}$"
# Kubernetes resource quantities as operators write them: 500m, 2, 1.5, 512Mi, 10Gi, 1e3.
QUANTITY_PATTERN = r"^[0-9]+(\.[0-9]+)?([eE][0-9]+|m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$"
MAX_RUN_SECONDS_LIMIT = 7 * 24 * 3600


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class InputKind(enum.StrEnum):
    FILE = "file"
    DIRECTORY = "directory"
    ARCHIVE = "archive"  # a tar or zip object, unpacked into mount_path


class OutputKind(enum.StrEnum):
    FILE = "file"
    DIRECTORY = "directory"


def _safe_relative(value: str) -> str:
    path = PurePosixPath(value)
    if not value or path.is_absolute() or ".." in path.parts or "\x00" in value:
        raise ValueError("must be a relative path without '..' segments")
    return str(path)


def _absolute(value: str) -> str:
    path = PurePosixPath(value)
    # Below '/': a part beyond the root ("//" is a root of its own in POSIX, so not str(path) == "/").
    if not path.is_absolute() or ".." in path.parts or "\x00" in value or len(path.parts) < 2:
        raise ValueError("must be an absolute path below '/' without '..' segments")
    return str(path)


class EnvRule(_Strict):
    """A variable the consumer may set: its value must match `pattern` (full match) or be in `enum`."""

    pattern: str | None = None
    enum: list[str] | None = Field(default=None, min_length=1)
    default: str | None = None
    description: str = ""

    @model_validator(mode="after")
    def _one_rule(self) -> EnvRule:
        if (self.pattern is None) == (self.enum is None):
            raise ValueError("give exactly one of 'pattern' or 'enum'")
        if self.pattern is not None:
            try:
                re.compile(self.pattern)
            except re.error as exc:
                raise ValueError(f"pattern does not compile: {exc}") from exc
        if self.default is not None and not self.accepts(self.default):
            raise ValueError("default does not satisfy the rule")
        return self

    def accepts(self, value: str) -> bool:
        if self.enum is not None:
            return value in self.enum
        assert self.pattern is not None
        return re.fullmatch(self.pattern, value) is not None


class AssetInput(_Strict):
    name: Annotated[str, Field(pattern=NAME_PATTERN)]
    kind: InputKind = InputKind.FILE
    mount_path: str = Field(description="absolute path where the worker finds this input")
    required: StrictBool = True  # JSON's true or false; lax bool would also take 0, 1 and "yes"
    description: str = ""

    _check_mount = field_validator("mount_path")(_absolute)


class AssetOutput(_Strict):
    name: Annotated[str, Field(pattern=NAME_PATTERN)]
    path: str = Field(description="path relative to the result directory")
    kind: OutputKind = OutputKind.FILE
    required: StrictBool = True
    description: str = ""

    _check_path = field_validator("path")(_safe_relative)


class Resources(_Strict):
    cpu: Annotated[str, Field(pattern=QUANTITY_PATTERN)] = "1"
    memory: Annotated[str, Field(pattern=QUANTITY_PATTERN)] = "512Mi"
    ephemeral_storage: Annotated[str, Field(pattern=QUANTITY_PATTERN)] = "1Gi"
    gpu_count: Annotated[JsonInt, Field(ge=0, le=64)] = 0
    gpu_type: str | None = Field(default=None, description="node label value selecting the GPU model")


class Toleration(_Strict):
    key: str | None = None
    operator: Literal["Exists", "Equal"] = "Equal"
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    toleration_seconds: JsonInt | None = None


_INPUT_PLACEHOLDER = re.compile(r"\{input:([^{}]*)\}")


class LocalRunner(_Strict):
    """How the embedded `local` compute backend runs the asset as a process.

    `command` is an argv list; `{python}` stands for the service's own interpreter,
    `{input:NAME}` for an input's staged path and `{result_dir}` for the result directory.
    """

    command: list[str] = Field(min_length=1)
    env: dict[str, str] = Field(default_factory=dict)


class RetryRule(_Strict):
    """How often an execution of this asset may run again after a failure that is not its own
    (capped by the operator's executions.retry.max_attempts), and whether the worker's own
    failures (exit codes) are retried too."""

    max_attempts: Annotated[JsonInt, Field(ge=1, le=20)] = 3
    on_executor_error: StrictBool = False


class AssetSpec(_Strict):
    """Everything about an asset except its identity: the body of an admin `PUT`."""

    title: Annotated[str, Field(min_length=1, max_length=200)]
    description: str = ""
    image: Annotated[str, Field(min_length=1, max_length=512)]
    command: list[str] = Field(default_factory=list)
    args: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict, description="fixed environment for the worker")
    consumer_env: dict[str, EnvRule] = Field(
        default_factory=dict, description="variables a consumer may set, each with its rule"
    )
    consumer_command: StrictBool = Field(
        default=False,
        description=(
            "a consumer (a GA4GH TES task) may run its own commands in this asset's image, with "
            "its own environment; off: only the asset's command, and consumer_env's variables"
        ),
    )
    inputs: list[AssetInput] = Field(default_factory=list)
    outputs: list[AssetOutput] = Field(default_factory=list)
    result_dir: str = "/results"
    resources: Resources = Field(default_factory=Resources)
    max_run_seconds: Annotated[JsonInt, Field(ge=1, le=MAX_RUN_SECONDS_LIMIT)] = 3600
    retry: RetryRule | None = Field(default=None, description="None: the operator's retry settings")
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[Toleration] = Field(default_factory=list)
    run_as_user: JsonInt | None = Field(
        default=None, ge=1, description="the worker's non-root user id; None keeps the image's user"
    )
    labels: dict[str, str] = Field(default_factory=dict)
    offerings: list[Annotated[str, Field(min_length=1, max_length=255)]] = Field(
        default_factory=list,
        description="data space offerings (EDC asset ids) whose transfers grant this asset",
    )
    local: LocalRunner | None = None

    _check_result_dir = field_validator("result_dir")(_absolute)

    @field_validator("env", "consumer_env")
    @classmethod
    def _env_keys(cls, value: dict[str, object]) -> dict[str, object]:
        bad = [k for k in value if not re.fullmatch(ENV_KEY_PATTERN, k)]
        if bad:
            raise ValueError(f"not valid environment variable names: {', '.join(sorted(bad))}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> AssetSpec:
        for kind, names in (
            ("input", [i.name for i in self.inputs]),
            ("output", [o.name for o in self.outputs]),
        ):
            dupes = sorted({n for n in names if names.count(n) > 1})
            if dupes:
                raise ValueError(f"duplicate {kind} names: {', '.join(dupes)}")
        if self.local is not None:
            named = {
                name
                for text in (*self.local.command, *self.local.env.values())
                for name in _INPUT_PLACEHOLDER.findall(text)
            }
            unknown = sorted(named - {i.name for i in self.inputs})
            if unknown:
                raise ValueError(f"local names inputs the asset does not declare: {', '.join(unknown)}")
        mounts = [i.mount_path for i in self.inputs]
        for mount in mounts:
            if mount == self.result_dir or PurePosixPath(mount).is_relative_to(self.result_dir):
                raise ValueError(f"input mount_path {mount} lies inside result_dir {self.result_dir}")
        return self


class Asset(AssetSpec):
    """A stored asset: its spec plus identity and bookkeeping."""

    id: Annotated[str, Field(pattern=ASSET_ID_PATTERN)]
    version: str
    created_at: datetime | None = None
    updated_at: datetime | None = None

    @field_validator("version")
    @classmethod
    def _pep440(cls, value: str) -> str:
        parse_version(value)
        return value

    @property
    def sort_version(self) -> Version:
        return parse_version(self.version)

    def spec(self) -> AssetSpec:
        return AssetSpec.model_validate(
            self.model_dump(exclude={"id", "version", "created_at", "updated_at"})
        )


def parse_version(value: str) -> Version:
    try:
        return Version(value)
    except InvalidVersion as exc:
        raise ValueError(f"{value!r} is not a version such as 1.0.0") from exc


def identity_problems(asset_id: str, version: str) -> list[tuple[str, str]]:
    """Problems with an asset id and version given apart from a spec (e.g. in a URL path)."""
    problems = []
    if not re.fullmatch(ASSET_ID_PATTERN, asset_id):
        problems.append(("asset_id", "must be 1-63 lower-case letters, digits and inner hyphens"))
    try:
        parse_version(version)
    except ValueError as exc:
        problems.append(("version", str(exc)))
    return problems


def latest(assets: list[Asset]) -> Asset | None:
    """The highest version among `assets` (all of one id)."""
    return max(assets, key=lambda a: a.sort_version, default=None)


def grant_problem(
    asset_id: str, workspace_allows: frozenset[str] | None, tenant_allows: frozenset[str] | None
) -> str | None:
    """Why `asset_id` may not run in this workspace for this tenant, or None if it may.

    Both limits apply: a workspace provisioned for an offering runs what that offering grants,
    and an operator may limit a tenant to a list of assets."""
    if workspace_allows is not None and asset_id not in workspace_allows:
        granted = ", ".join(sorted(workspace_allows)) or "nothing"
        return (
            f"asset {asset_id!r} is not granted to this workspace: the data space transfer it was "
            f"provisioned for grants {granted}"
        )
    if tenant_allows is not None and asset_id not in tenant_allows:
        return f"asset {asset_id!r} is not among the assets the operator allows this tenant"
    return None
