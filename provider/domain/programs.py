"""Programs: what an execution runs when its caller gives more than the asset's inputs and
environment (a GA4GH TES task): its own steps, files at absolute paths and scratch volumes.

A program runs inside one execution of one asset: the asset's image, resources (as upper
bounds) and limits still hold. Both compute backends run it alike: every file placed before the
first step, the steps one after another in the same file system, the collected paths shipped to
the workspace after the last.

Layout, shared by the backends: every volume, every collected directory and the parent directory
of every collected file is a *directory* of the program, backed by the job's scratch space
(`directory_path`) and mounted at its path for every step; placed files and directories are
staged as inputs (`placement_name`) and mounted read-only at theirs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import PurePosixPath
from typing import Any


@dataclass(frozen=True)
class Step:
    """One command, run after the previous one ended (with exit code 0, unless it ignores errors)."""

    command: tuple[str, ...]
    workdir: str | None = None
    stdin: str | None = None  # absolute path of a file fed to the command
    stdout: str | None = None  # absolute path the command's standard output is written to
    stderr: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    ignore_error: bool = False


@dataclass(frozen=True)
class Placement:
    """A workspace object (or every object under a prefix) put at `path` before the first step."""

    path: str
    key: str
    directory: bool = False


@dataclass(frozen=True)
class Collect:
    """What is at `path` after the last step, shipped to the workspace at `key` (a prefix for a
    directory)."""

    path: str
    key: str
    directory: bool = False


@dataclass(frozen=True)
class Limits:
    """Resources below the asset's, as the caller asked (Kubernetes quantities); None: the asset's."""

    cpu: str | None = None
    memory: str | None = None
    ephemeral_storage: str | None = None


@dataclass(frozen=True)
class Program:
    steps: tuple[Step, ...]
    placements: tuple[Placement, ...] = ()
    collects: tuple[Collect, ...] = ()
    volumes: tuple[str, ...] = ()
    limits: Limits = field(default_factory=Limits)

    def directories(self) -> tuple[str, ...]:
        """The program's directories (see the module's doc), shortest path first, so that a
        directory inside another is mounted after it."""
        found = set(self.volumes)
        for collect in self.collects:
            found.add(collect.path if collect.directory else str(PurePosixPath(collect.path).parent))
        return tuple(sorted(found, key=lambda p: (len(PurePosixPath(p).parts), p)))

    def home(self, path: str) -> tuple[int, str] | None:
        """The innermost program directory holding `path` (its index in `directories()`) and the
        path relative to it; None when no directory holds it."""
        best: tuple[int, str] | None = None
        for index, directory in enumerate(self.directories()):
            if PurePosixPath(path).is_relative_to(directory):
                best = (index, PurePosixPath(path).relative_to(directory).as_posix())
        return best

    def to_json(self) -> dict[str, Any]:
        return {
            "steps": [{**asdict(s), "command": list(s.command)} for s in self.steps],
            "placements": [asdict(p) for p in self.placements],
            "collects": [asdict(c) for c in self.collects],
            "volumes": list(self.volumes),
            "limits": asdict(self.limits),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Program:
        return cls(
            steps=tuple(Step(**{**s, "command": tuple(s["command"])}) for s in data["steps"]),
            placements=tuple(Placement(**p) for p in data.get("placements", [])),
            collects=tuple(Collect(**c) for c in data.get("collects", [])),
            volumes=tuple(data.get("volumes", [])),
            limits=Limits(**data.get("limits", {})),
        )


def placement_name(index: int) -> str:
    """The staged input name of a program's `index`th placement (asset inputs use their own names)."""
    return f"placement-{index}"


def directory_path(index: int) -> str:
    """Where the `index`th program directory lives, relative to the job's result directory."""
    return f"dir-{index}"


def collect_name(index: int) -> str:
    return f"collect-{index}"


@dataclass(frozen=True)
class StepLog:
    """How one step ended. `stdout` and `stderr` are tails, for convenience (the whole log is kept
    in the workspace)."""

    exit_code: int | None
    started_at: datetime | None = None
    ended_at: datetime | None = None
    stdout: str = ""
    stderr: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "exit_code": self.exit_code,
            "started_at": self.started_at.isoformat() if self.started_at else None,
            "ended_at": self.ended_at.isoformat() if self.ended_at else None,
            "stdout": self.stdout,
            "stderr": self.stderr,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StepLog:
        def when(value: str | None) -> datetime | None:
            return datetime.fromisoformat(value) if value else None

        return cls(
            data.get("exit_code"),
            when(data.get("started_at")),
            when(data.get("ended_at")),
            data.get("stdout", ""),
            data.get("stderr", ""),
        )
