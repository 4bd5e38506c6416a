"""The data sidecar's contract: what a compute backend hands the sidecar, and what it gets back.

Standard library only. The sidecar image holds provider/sidecar/ and nothing else of the package
(deploy/docker/Dockerfile.sidecar), and both sides import this module: the sidecar, the compute
backends (local and Kubernetes) and the execution service, which reads the manifest. The parts:

- The command: `python -m provider.sidecar stage-in|stage-out --root DIR [--spec FILE]
  [--results DIR]` (`Command`). Stage-in fills the staging root (`input_path`; with --results it
  also creates the worker's result directory, writable by any user); stage-out ships the
  result directory.
- The job description (`JobDescription`, JSON): which objects to stage in where, which outputs
  to ship back, and the archive limits. The local backend writes it to a file (--spec); the
  Kubernetes backend puts it in the variable PROVIDER_JOB_SPEC.
- The environment (`Env`): which storage the sidecar reaches (`StorageKind`), its address, and
  credentials scoped to the one workspace. Only the sidecar gets these; the worker never does.
- The exit codes (`ExitCode`): whose fault a failed stage is.
- What stage-out leaves in the workspace: every output file under `outputs_prefix`, then the
  `Manifest` listing them at `manifest_key` (and printed on stdout).
"""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass
from typing import Any

MODULE = "provider.sidecar"  # run as `python -m provider.sidecar`


class Command(enum.StrEnum):
    STAGE_IN = "stage-in"
    STAGE_OUT = "stage-out"


class ExitCode(enum.IntEnum):
    """How a stage ended. The backends read them alike (provider/backends/compute/common.py)."""

    DONE = 0
    FAILED = 1  # the storage refused or failed, an unsafe archive, ...: the system's fault
    USAGE = 2  # no usable job description, or a variable of `Env` missing
    MISSING_OUTPUT = 3  # stage-out: the worker left out a required output, which is its fault


class StorageKind(enum.StrEnum):
    API = "api"  # the objects API with a workspace token (filesystem storage)
    S3 = "s3"  # the workspace's bucket with temporary credentials (S3 storage)


class Env:
    """The names of the environment variables the sidecar reads."""

    JOB = "PROVIDER_JOB_SPEC"  # the job description, where --spec is not given
    STORAGE_KIND = "PROVIDER_STORAGE_KIND"  # a StorageKind; "api" when unset
    # StorageKind.API
    API_URL = "PROVIDER_API_URL"  # the service's base URL, as jobs reach it
    WORKSPACE_ID = "PROVIDER_WORKSPACE_ID"
    WORKSPACE_TOKEN = "PROVIDER_WORKSPACE_TOKEN"  # noqa: S105 - secret: a token of that workspace alone
    # StorageKind.S3
    S3_ENDPOINT = "PROVIDER_S3_ENDPOINT"  # empty: AWS itself
    S3_BUCKET = "PROVIDER_S3_BUCKET"
    S3_PREFIX = "PROVIDER_S3_PREFIX"  # the workspace's prefix in a shared bucket; empty: the whole bucket
    S3_REGION = "PROVIDER_S3_REGION"
    # secret: temporary credentials that open that bucket alone
    AWS_ACCESS_KEY_ID = "AWS_ACCESS_KEY_ID"
    AWS_SECRET_ACCESS_KEY = "AWS_SECRET_ACCESS_KEY"  # noqa: S105 - a name, not a secret
    AWS_SESSION_TOKEN = "AWS_SESSION_TOKEN"  # noqa: S105


# --- the staging root and the workspace --------------------------------------------------------

INPUTS = "inputs"  # under the staging root: one entry per input, named as the input
RESULTS = "results"  # under the staging root: the worker's result directory
MANIFEST = "manifest.json"
MAX_ARCHIVE_BYTES = 10 * 1024**3  # unpacked, per archive input
MAX_ARCHIVE_FILES = 100_000


def input_path(name: str) -> str:
    """Where an input is staged, relative to the staging root."""
    return f"{INPUTS}/{name}"


def outputs_prefix(execution_id: str) -> str:
    """Where stage-out puts an execution's outputs in its workspace (their result paths follow)."""
    return f"executions/{execution_id}/outputs/"


def manifest_key(execution_id: str) -> str:
    return outputs_prefix(execution_id) + MANIFEST


# --- the job description -----------------------------------------------------------------------


@dataclass(frozen=True)
class InputSpec:
    name: str
    kind: str  # file | directory | archive
    key: str  # object key, or prefix for directories
    path: str  # destination, relative to the staging root


@dataclass(frozen=True)
class OutputSpec:
    name: str
    kind: str  # file | directory
    path: str  # relative to the result directory
    required: bool = True
    # Where in the workspace it goes (a prefix for a directory); None: under outputs_prefix, at
    # its path. A program's collects name theirs (provider/domain/programs.py).
    key: str | None = None


@dataclass(frozen=True)
class JobDescription:
    execution_id: str
    inputs: tuple[InputSpec, ...] = ()
    outputs: tuple[OutputSpec, ...] = ()
    max_archive_bytes: int = MAX_ARCHIVE_BYTES
    max_archive_files: int = MAX_ARCHIVE_FILES

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> JobDescription:
        return cls(
            execution_id=data["execution_id"],
            inputs=tuple(InputSpec(**i) for i in data.get("inputs", [])),
            outputs=tuple(OutputSpec(**o) for o in data.get("outputs", [])),
            max_archive_bytes=int(data.get("max_archive_bytes", MAX_ARCHIVE_BYTES)),
            max_archive_files=int(data.get("max_archive_files", MAX_ARCHIVE_FILES)),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "execution_id": self.execution_id,
            "inputs": [asdict(i) for i in self.inputs],
            "outputs": [asdict(o) for o in self.outputs],
            "max_archive_bytes": self.max_archive_bytes,
            "max_archive_files": self.max_archive_files,
        }

    @property
    def outputs_prefix(self) -> str:
        return outputs_prefix(self.execution_id)


# --- the manifest ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ManifestFile:
    key: str  # object key in the workspace, under outputs_prefix
    size: int
    sha256: str  # hex


@dataclass(frozen=True)
class ManifestOutput:
    name: str  # the declared output
    files: tuple[ManifestFile, ...] = ()  # one for a file output; any number for a directory


@dataclass(frozen=True)
class Manifest:
    """What stage-out uploaded: each declared output that was there, and its files."""

    execution_id: str
    outputs: tuple[ManifestOutput, ...] = ()

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Manifest:
        return cls(
            data.get("execution_id", ""),
            tuple(
                ManifestOutput(
                    o["name"], tuple(ManifestFile(f["key"], f["size"], f["sha256"]) for f in o["files"])
                )
                for o in data["outputs"]
            ),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "execution_id": self.execution_id,
            "outputs": [{"name": o.name, "files": [asdict(f) for f in o.files]} for o in self.outputs],
        }

    def listed(self) -> list[tuple[str, str, int, str]]:
        """Every file: (output name, key, size, sha256)."""
        return [(o.name, f.key, f.size, f.sha256) for o in self.outputs for f in o.files]
