"""The data sidecar: its unpacking rules (nothing leaves the staging directory, no archive bombs),
and its contract with the backends (provider/sidecar/contract.py): the job description and the
environment each backend writes are what the sidecar reads, the manifest it writes is what the
service reads, and each exit code means the same to the local backend and the Kubernetes observer.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import json
import sys
import tarfile
import zipfile
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from provider.backends.compute.common import sidecar_job
from provider.backends.compute.kubernetes.manifests import JobSettings, build_job, build_secret
from provider.backends.compute.kubernetes.observe import derive
from provider.backends.compute.local import LocalCompute
from provider.domain.assets import Asset
from provider.domain.executions import OutputFile, State, output_files
from provider.services.ports import ComputeEvent, JobSpec, StorageAccess, TemporaryCredentials
from provider.sidecar import __main__ as sidecar_cli
from provider.sidecar import remote
from provider.sidecar.__main__ import main as sidecar_main
from provider.sidecar.contract import (
    Command,
    Env,
    ExitCode,
    JobDescription,
    Manifest,
    ManifestFile,
    ManifestOutput,
    OutputSpec,
    manifest_key,
    outputs_prefix,
)
from provider.sidecar.staging import StagingError, stage_out, unpack
from tests.conftest import poll_until

REPO = Path(__file__).resolve().parents[1]


def tar_with(path: Path, members: list[tarfile.TarInfo], contents: dict[str, bytes] | None = None) -> Path:
    contents = contents or {}
    with tarfile.open(path, "w") as tar:
        for member in members:
            data = contents.get(member.name, b"")
            member.size = len(data) if member.isfile() else 0
            tar.addfile(member, io.BytesIO(data) if member.isfile() else None)
    return path


@pytest.mark.parametrize(
    ("name", "kind", "target"),
    [
        ("../escape.txt", tarfile.REGTYPE, ""),
        ("/etc/evil", tarfile.REGTYPE, ""),
        ("link", tarfile.SYMTYPE, "/etc/passwd"),
        ("hard", tarfile.LNKTYPE, "../../outside"),
        ("dev", tarfile.CHRTYPE, ""),
    ],
)
def test_unsafe_tar_members_are_refused(tmp_path: Path, name: str, kind: bytes, target: str) -> None:
    member = tarfile.TarInfo(name)
    member.type = kind
    member.linkname = target
    archive = tar_with(tmp_path / "a.tar", [member], {name: b"x"})
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(StagingError, match="unsafe"):
        unpack(archive, dest, 10**9, 1000)
    assert not (tmp_path / "escape.txt").exists()


def test_tar_bomb_limits(tmp_path: Path) -> None:
    many = [tarfile.TarInfo(f"f{i}") for i in range(20)]
    archive = tar_with(tmp_path / "many.tar", many, {f"f{i}": b"x" for i in range(20)})
    with pytest.raises(StagingError, match="limits"):
        unpack(archive, tmp_path / "d1", 10**9, 10)
    big = tar_with(tmp_path / "big.tar", [tarfile.TarInfo("big")], {"big": b"x" * 5000})
    with pytest.raises(StagingError, match="limits"):
        unpack(big, tmp_path / "d2", 1000, 10)


def test_zip_traversal_and_bomb(tmp_path: Path) -> None:
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as zipped:
        zipped.writestr("../../escape.txt", b"x")
    with pytest.raises(StagingError, match="unsafe"):
        unpack(evil, tmp_path / "d", 10**9, 100)
    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as zipped:
        zipped.writestr("zeros", b"\0" * 5_000_000)  # compresses to a few KiB
    assert bomb.stat().st_size < 100_000
    with pytest.raises(StagingError, match="unpacked"):
        unpack(bomb, tmp_path / "d2", 1_000_000, 100)


def test_good_archives_unpack(tmp_path: Path) -> None:
    good = tar_with(tmp_path / "ok.tar", [tarfile.TarInfo("a/b.txt")], {"a/b.txt": b"hello"})
    assert unpack(good, tmp_path / "t", 10**6, 10) == 1
    assert (tmp_path / "t" / "a" / "b.txt").read_bytes() == b"hello"
    zipped_path = tmp_path / "ok.zip"
    with zipfile.ZipFile(zipped_path, "w") as zipped:
        zipped.writestr("c/d.bin", bytes(range(256)))
    unpack(zipped_path, tmp_path / "z", 10**6, 10)
    assert (tmp_path / "z" / "c" / "d.bin").read_bytes() == bytes(range(256))
    plain = tmp_path / "plain.bin"
    plain.write_bytes(b"not an archive")
    with pytest.raises(StagingError, match="neither"):
        unpack(plain, tmp_path / "p", 10**6, 10)


def test_sidecar_usage_errors_exit_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PROVIDER_JOB_SPEC", raising=False)
    assert sidecar_main(["stage-in", "--root", str(tmp_path)]) == 2
    spec = tmp_path / "job.json"
    spec.write_text('{"execution_id": "exe_1"}')
    monkeypatch.setenv("PROVIDER_STORAGE_KIND", "api")
    monkeypatch.delenv("PROVIDER_API_URL", raising=False)
    assert sidecar_main(["stage-in", "--spec", str(spec), "--root", str(tmp_path)]) == 2


def test_transient_failures_are_retried_and_client_errors_are_not(monkeypatch: pytest.MonkeyPatch) -> None:
    from provider.sidecar import remote

    monkeypatch.setattr(remote.time, "sleep", lambda seconds: None)
    answers = [remote.RemoteError("busy", 503), ConnectionResetError("reset"), "done"]

    def flaky() -> str:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    assert remote._retried(flaky) == "done"
    calls = []

    def missing() -> None:
        calls.append(1)
        raise remote.RemoteError("no such object", 404)

    with pytest.raises(remote.RemoteError):
        remote._retried(missing)
    assert len(calls) == 1

    def always_down() -> None:
        calls.append(1)
        raise remote.RemoteError("down", 502)

    with pytest.raises(remote.RemoteError, match="down"):
        remote._retried(always_down)
    assert len(calls) == 1 + remote.ATTEMPTS


# --- the contract between the backends and the sidecar -----------------------------------------

EXECUTION = "exe_01jabcdefghjkmnpqrstvwxyz0"
CREDENTIALS = TemporaryCredentials(
    "ASIA-job", "job-secret", "job-session", datetime(2026, 12, 1, tzinfo=UTC), "http://s3:7480", "bkt", "r1"
)


def asset(**changes: Any) -> Asset:
    data = yaml.safe_load((REPO / "config" / "assets" / "dummy.yaml").read_text())
    data.update(changes)
    return Asset.model_validate(data)


def job_spec(access: StorageAccess, **changes: Any) -> JobSpec:
    """A job with every kind of input and output the description carries."""
    staged = asset(
        inputs=[
            {"name": "source", "kind": "file", "mount_path": "/data/source"},
            {"name": "tree", "kind": "directory", "mount_path": "/data/tree"},
            {"name": "bundle", "kind": "archive", "mount_path": "/data/bundle"},
        ],
        outputs=[
            {"name": "output", "path": "output", "kind": "file"},
            {"name": "extras", "path": "extras", "kind": "directory", "required": False},
        ],
        local={"command": ["{python}", "-c", "pass"]},
        **changes,
    )
    return JobSpec(
        execution_id=EXECUTION,
        tenant_id="ten_1",
        asset=staged,
        inputs={"source": "in/data.bin", "tree": "in/tree/", "bundle": "in/b.tar.gz"},
        env={},
        access=access,
        version=1,
    )


def what_the_sidecar_reads(monkeypatch: pytest.MonkeyPatch, argv: list[str]) -> tuple[Any, ...]:
    """Run the sidecar's command line up to where it would stage: the command, the job
    description and the workspace it read."""
    seen: list[tuple[Any, ...]] = []

    async def staged(command: Command, job: JobDescription, root: Path) -> int:
        seen.append((command, job, sidecar_cli.workspace_from_env()))
        return ExitCode.DONE

    monkeypatch.setattr(sidecar_cli, "run", staged)
    assert sidecar_main(argv) == ExitCode.DONE
    [read] = seen
    return read


def environment(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    """The sidecar's environment is `env` alone, as far as the contract's variables go."""
    for attribute, name in vars(Env).items():
        if not attribute.startswith("_"):
            monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)


def test_the_job_description_round_trips_through_its_json() -> None:
    description = sidecar_job(job_spec(StorageAccess.objects_api("http://p:8080", "wsp_1", "t")))
    assert JobDescription.from_json(json.loads(json.dumps(description.to_json()))) == description
    assert [i.kind for i in description.inputs] == ["file", "directory", "archive"]
    assert description.outputs[1] == OutputSpec("extras", "directory", "extras", required=False)


@pytest.mark.parametrize("kind", ["api", "s3"])
def test_the_kubernetes_job_hands_the_sidecar_its_description_and_workspace(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, kind: str
) -> None:
    """The sidecars of a Job read, from the variables and the Secret the backend writes, the very
    job description the backend meant, and reach the one workspace with its credentials."""
    access = (
        StorageAccess.objects_api("http://provider:8080", "wsp_1", "job-token")
        if kind == "api"
        else StorageAccess.bucket(CREDENTIALS)
    )
    spec = job_spec(access)
    settings = JobSettings(namespace="jobs", sidecar_image="sidecar:1")
    job = build_job(spec, settings)
    secret = build_secret(spec, settings, {"apiVersion": "batch/v1", "kind": "Job", "name": "j", "uid": "u"})
    pod = job["spec"]["template"]["spec"]
    for container in (pod["initContainers"][0], pod["containers"][0]):
        env = {
            e["name"]: e["value"]
            if "value" in e
            else secret["stringData"][e["valueFrom"]["secretKeyRef"]["key"]]
            for e in container["env"]
        }
        environment(monkeypatch, env)
        args = [a.replace("/scratch", str(tmp_path)) for a in container["args"]]
        command, description, workspace = what_the_sidecar_reads(monkeypatch, args)
        assert command == container["name"]
        assert description == sidecar_job(spec)
        if kind == "api":
            assert isinstance(workspace, remote.ApiWorkspace)
            assert (workspace.netloc, workspace.base) == ("provider:8080", "/api/v1/workspaces/wsp_1/objects")
            assert workspace.headers == {"Authorization": "Bearer job-token"}
        else:
            assert isinstance(workspace, remote.S3Workspace)
            assert (workspace.endpoint_url, workspace.bucket, workspace.region) == (
                "http://s3:7480",
                "bkt",
                "r1",
            )
            assert asyncio.run(s3_credentials(monkeypatch, workspace)) == {
                "aws_access_key_id": "ASIA-job",
                "aws_secret_access_key": "job-secret",
                "aws_session_token": "job-session",
                "region_name": "r1",
            }


async def s3_credentials(monkeypatch: pytest.MonkeyPatch, workspace: remote.S3Workspace) -> dict[str, Any]:
    """The credentials the sidecar opens its S3 session with (no request is made)."""
    import aioboto3

    opened: dict[str, Any] = {}

    class Session:
        def __init__(self, **credentials: Any) -> None:
            opened.update(credentials)

        def client(self, *args: Any, **kwargs: Any) -> contextlib.AsyncExitStack:
            return contextlib.AsyncExitStack()

    monkeypatch.setattr(aioboto3, "Session", Session)
    async with workspace:
        pass
    return opened


class Recorder:
    """A stand-in for the sidecar in the local backend: notes how it was called and exits as told
    (STAND_IN_EXIT_<STAGE>); a stage-out that succeeds prints `MANIFEST` as the sidecar does."""

    SCRIPT = """
import json, os, sys
stage = sys.argv[1]
with open(os.environ["STAND_IN_RECORD"] + "." + stage, "w") as record:
    json.dump({"argv": sys.argv[1:], "env": dict(os.environ)}, record)
code = int(os.environ.get("STAND_IN_EXIT_" + stage.upper().replace("-", "_"), "0"))
if stage == "stage-out" and code == 0:
    print(os.environ["STAND_IN_MANIFEST"])
sys.exit(code)
"""
    MANIFEST = Manifest(
        EXECUTION,
        (ManifestOutput("output", (ManifestFile(outputs_prefix(EXECUTION) + "output", 3, "ab" * 32),)),),
    )

    def __init__(self, directory: Path) -> None:
        self.record = directory / "record"

    def settings(self, exits: dict[Command, int]) -> dict[str, str]:
        return {
            "STAND_IN_RECORD": str(self.record),
            "STAND_IN_MANIFEST": json.dumps(self.MANIFEST.to_json()),
            **{f"STAND_IN_EXIT_{c.name}": str(code) for c, code in exits.items()},
        }

    def call(self, command: Command) -> dict[str, Any]:
        called: dict[str, Any] = json.loads(Path(f"{self.record}.{command}").read_text())
        return called


@contextlib.asynccontextmanager
async def local_backend(root: Path) -> AsyncIterator[tuple[LocalCompute, list[ComputeEvent], asyncio.Event]]:
    compute = LocalCompute(root, max_concurrent=2, per_tenant=0, cancel_grace_seconds=2, niceness=0)
    compute.sidecar = [sys.executable, "-c", Recorder.SCRIPT]
    events: list[ComputeEvent] = []
    ended = asyncio.Event()

    async def sink(event: ComputeEvent) -> None:
        events.append(event)
        if event.state.final:
            ended.set()

    async def reconcile(_: float) -> None:
        return None

    await compute.start(sink, reconcile)
    try:
        yield compute, events, ended
    finally:
        await compute.stop()


async def run_locally(root: Path, spec: JobSpec) -> list[ComputeEvent]:
    """Run one job on the local backend until it ends; every event it reported."""
    async with local_backend(root) as (compute, events, ended):
        await compute.submit(spec)
        await asyncio.wait_for(ended.wait(), 120)
        return events


def test_the_local_backend_hands_the_sidecar_its_description_and_workspace(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """What the local backend gives each sidecar process (its arguments, its job file, its
    environment) reads back as the job description the backend meant and the workspace with its
    token; and the manifest the sidecar prints is where the execution's outputs come from."""
    recorder = Recorder(tmp_path)
    access = StorageAccess.objects_api("http://127.0.0.1:8080", "wsp_1", "job-token")
    spec = job_spec(replace(access, settings={**access.settings, **recorder.settings({})}))
    events = asyncio.run(run_locally(tmp_path / "jobs", spec))

    assert events[-1].state is State.COMPLETE
    assert events[-1].outputs == output_files(Recorder.MANIFEST.listed())
    for command in Command:
        called = recorder.call(command)
        assert called["argv"][0] == command
        assert "job-token" not in " ".join(called["argv"])  # credentials only in the environment
        environment(monkeypatch, called["env"])
        read, description, workspace = what_the_sidecar_reads(monkeypatch, called["argv"])
        assert read is command and description == sidecar_job(spec)
        assert isinstance(workspace, remote.ApiWorkspace)
        assert (workspace.netloc, workspace.base) == ("127.0.0.1:8080", "/api/v1/workspaces/wsp_1/objects")
        assert workspace.headers == {"Authorization": "Bearer job-token"}


def test_a_withdrawn_local_job_stops_at_once_and_leaves_nothing(tmp_path: Path) -> None:
    """A queued execution put on hold (its data flow suspended): the local backend stops its job
    in whatever stage it is, removes its directory, and what it still reports is of its attempt."""

    async def scenario() -> tuple[list[ComputeEvent], set[str], bool]:
        async with local_backend(tmp_path / "jobs") as (compute, events, _):
            compute.sidecar = [sys.executable, "-c", "import time; time.sleep(600)"]
            spec = job_spec(
                StorageAccess.objects_api("http://127.0.0.1:9", "wsp_1", "t"), max_run_seconds=900
            )
            await compute.submit(spec)
            await poll_until(lambda: any(e.state is State.INITIALIZING for e in events), "stage-in began")
            await compute.withdraw(EXECUTION, spec.attempt)  # a later attempt's job: not this one
            assert EXECUTION in await compute.known()
            await compute.withdraw(EXECUTION, spec.attempt + 1)
            return events, await compute.known(), (tmp_path / "jobs" / EXECUTION).exists()

    events, known, directory_left = asyncio.run(scenario())
    assert known == set() and not directory_left
    assert all(e.attempt == 1 for e in events)  # nothing the hold's next attempt would take as its own


class MemoryWorkspace:
    """The workspace as stage-out sees it, kept in memory."""

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}

    async def upload(self, key: str, source: Path) -> tuple[int, str]:
        data = await asyncio.to_thread(source.read_bytes)
        self.objects[key] = data
        return len(data), hashlib.sha256(data).hexdigest()


def test_the_manifest_stage_out_leaves_is_what_the_service_reads(tmp_path: Path) -> None:
    results = tmp_path / "results"
    (results / "extras" / "sub").mkdir(parents=True)
    (results / "output").write_bytes(b"\x00\xffbinary")
    (results / "extras" / "sub" / "more.txt").write_text("more")
    job = JobDescription(
        EXECUTION,
        outputs=(OutputSpec("output", "file", "output"), OutputSpec("extras", "directory", "extras", False)),
    )
    workspace = MemoryWorkspace()
    manifest = asyncio.run(stage_out(job, workspace, results))  # type: ignore[arg-type]

    stored = Manifest.from_json(json.loads(workspace.objects[manifest_key(EXECUTION)]))
    assert stored == manifest
    prefix = outputs_prefix(EXECUTION)
    assert output_files(stored.listed()) == (
        OutputFile("output", prefix + "output", 8, hashlib.sha256(b"\x00\xffbinary").hexdigest()),
        OutputFile("extras", prefix + "extras/sub/more.txt", 4, hashlib.sha256(b"more").hexdigest()),
    )
    assert set(workspace.objects) == {
        prefix + "output",
        prefix + "extras/sub/more.txt",
        manifest_key(EXECUTION),
    }


def kubernetes_pod(command: Command, code: int) -> dict[str, Any]:
    """A job pod whose sidecar `command` exited with `code`, every stage before it with 0."""
    ended = {"terminated": {"exitCode": code, "reason": "Completed" if code == 0 else "Error"}}
    done = {"terminated": {"exitCode": 0, "reason": "Completed"}}
    status: dict[str, Any] = {"phase": "Failed" if code else "Succeeded"}
    if command is Command.STAGE_IN:
        status["initContainerStatuses"] = [{"name": "stage-in", "state": ended}]
    else:
        status["initContainerStatuses"] = [
            {"name": "stage-in", "state": done},
            {"name": "worker", "state": done},
        ]
        status["containerStatuses"] = [{"name": "stage-out", "state": ended}]
    return {"metadata": {"name": "p", "creationTimestamp": "2026-12-01T12:00:00Z"}, "status": status}


STAGE_ENDS = [(Command.STAGE_IN, code) for code in ExitCode if code is not ExitCode.DONE] + [
    (Command.STAGE_OUT, code) for code in ExitCode
]
# What each end makes of the execution (state, reason, exit code): a missing output is the
# worker's fault, every other failure of staging the system's.
MEANING = {
    (Command.STAGE_OUT, ExitCode.DONE): (State.COMPLETE, None, 0),
    (Command.STAGE_OUT, ExitCode.MISSING_OUTPUT): (State.EXECUTOR_ERROR, "MissingOutput", 0),
}


@pytest.mark.parametrize(("command", "code"), STAGE_ENDS, ids=[f"{c}-{code.name}" for c, code in STAGE_ENDS])
def test_each_exit_code_means_the_same_to_the_local_backend_and_the_kubernetes_observer(
    tmp_path: Path, command: Command, code: ExitCode
) -> None:
    recorder = Recorder(tmp_path)
    access = StorageAccess.objects_api("http://127.0.0.1:1", "wsp_1", "job-token")
    spec = job_spec(replace(access, settings={**access.settings, **recorder.settings({command: code})}))
    local = asyncio.run(run_locally(tmp_path / "jobs", spec))[-1]

    complete = [] if code else [{"type": "Complete", "status": "True"}]
    job = {"metadata": {"name": "j"}, "status": {"conditions": complete}}
    now = datetime(2026, 12, 1, 12, 0, 5, tzinfo=UTC)
    seen = derive(job, kubernetes_pod(command, code), now, 60).observation  # type: ignore[arg-type]
    assert seen is not None
    assert (local.state, local.reason, local.exit_code) == (seen.state, seen.reason, seen.exit_code)
    system_error = (State.SYSTEM_ERROR, "StageIn" if command is Command.STAGE_IN else "StageOut", None)
    assert (seen.state, seen.reason, seen.exit_code) == MEANING.get((command, code), system_error)
