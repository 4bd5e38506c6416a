"""The Job and Secret each execution becomes, and how pod states map to execution states.

Every manifest is validated strictly against the Kubernetes 1.34 schema (kubernetes-validate).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from provider.backends.compute.kubernetes.manifests import (
    EXECUTION,
    JobSettings,
    build_job,
    build_secret,
    job_name,
    owner_reference,
    secret_patch,
)
from provider.backends.compute.kubernetes.observe import Refusal, derive, refusal
from provider.domain.assets import Asset
from provider.domain.executions import State
from provider.services.ports import JobSpec, StorageAccess

K8S_VERSION = "1.34.0"
DUMMY = Path(__file__).parent.parent / "config" / "assets" / "dummy.yaml"


def validate(obj: dict[str, Any]) -> None:
    kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


def dummy(**changes: Any) -> Asset:
    data = yaml.safe_load(DUMMY.read_text())
    data.update(changes)
    return Asset.model_validate(data)


def spec(asset: Asset | None = None, kind: str = "s3") -> JobSpec:
    access = (
        StorageAccess(
            "s3",
            secrets={
                "AWS_ACCESS_KEY_ID": "AKIA",
                "AWS_SECRET_ACCESS_KEY": "s3cr3t",
                "AWS_SESSION_TOKEN": "tok",
            },
            settings={
                "PROVIDER_S3_ENDPOINT": "http://s3:7480",
                "PROVIDER_S3_BUCKET": "b",
                "PROVIDER_S3_REGION": "r",
            },
        )
        if kind == "s3"
        else StorageAccess(
            "api",
            secrets={"PROVIDER_WORKSPACE_TOKEN": "eyJ.jwt.sig"},
            settings={"PROVIDER_API_URL": "http://provider:8080", "PROVIDER_WORKSPACE_ID": "wsp_1"},
        )
    )
    return JobSpec(
        execution_id="exe_01jabcdefghjkmnpqrstvwxyz0",
        tenant_id="ten_01jabcdefghjkmnpqrstvwxyz0",
        asset=asset or dummy(),
        inputs={"source": "in/data.bin"},
        env={"SLEEP_SECONDS": "2"},
        access=access,
        version=3,
    )


SETTINGS = JobSettings(namespace="jobs", sidecar_image="registry.example/provider-sidecar:1")


def test_job_shape_keeps_the_worker_image_unchanged_and_credentials_in_the_secret() -> None:
    job = build_job(spec(), SETTINGS)
    validate(job)
    assert job["metadata"]["name"] == job_name("exe_01jabcdefghjkmnpqrstvwxyz0")
    assert job["metadata"]["annotations"]["provider/execution-version"] == "3"
    assert job["metadata"]["labels"][EXECUTION] == "exe_01jabcdefghjkmnpqrstvwxyz0"
    assert job["spec"]["backoffLimit"] == 0
    assert job["spec"]["activeDeadlineSeconds"] == 600 + SETTINGS.staging_seconds
    assert job["spec"]["ttlSecondsAfterFinished"] == 3600
    pod = job["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert [c["name"] for c in pod["initContainers"]] == ["stage-in", "worker"]
    assert [c["name"] for c in pod["containers"]] == ["stage-out"]
    worker = pod["initContainers"][1]
    assert worker["image"] == "ghcr.io/provider/provider:0.1.0"
    assert worker["command"] == ["python", "-m", "provider.workers.dummy"]
    assert worker["securityContext"]["allowPrivilegeEscalation"] is False
    # The worker sees the asset's and the consumer's variables, never a credential.
    worker_env = {e["name"]: e.get("value") for e in worker["env"]}
    assert worker_env == {"SOURCE": "/data/source", "DESTINATION": "/results/output", "SLEEP_SECONDS": "2"}
    assert "s3cr3t" not in json.dumps(job)
    mounts = {m["mountPath"]: m for m in worker["volumeMounts"]}
    assert mounts["/data/source"] == {
        "name": "scratch",
        "mountPath": "/data/source",
        "subPath": "inputs/source",
        "readOnly": True,
    }
    assert mounts["/results"]["subPath"] == "results"
    stage_in = pod["initContainers"][0]
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in stage_in["env"] if "valueFrom" in e}
    assert set(refs) == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"}
    assert {r["name"] for r in refs.values()} == {job["metadata"]["name"] + "-access"}
    plain = {e["name"]: e.get("value") for e in stage_in["env"]}
    sidecar_job = json.loads(plain["PROVIDER_JOB_SPEC"])
    assert sidecar_job["inputs"] == [
        {"name": "source", "kind": "file", "key": "in/data.bin", "path": "inputs/source"}
    ]
    assert plain["PROVIDER_STORAGE_KIND"] == "s3"
    for sidecar in (stage_in, pod["containers"][0]):
        assert sidecar["securityContext"]["runAsNonRoot"] is True
        assert sidecar["securityContext"]["allowPrivilegeEscalation"] is False
    assert pod["volumes"][0] == {"name": "scratch", "emptyDir": {"sizeLimit": "1Gi"}}


def test_gpu_placement_security_and_ephemeral_scratch() -> None:
    asset = dummy(
        resources={
            "cpu": "2",
            "memory": "4Gi",
            "ephemeral_storage": "50Gi",
            "gpu_count": 2,
            "gpu_type": "A100",
        },
        node_selector={"pool": "gpu"},
        tolerations=[{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}],
        run_as_user=1000,
    )
    settings = JobSettings(
        namespace="jobs",
        sidecar_image="s:1",
        gpu_resource="amd.com/gpu",
        scratch="ephemeral",
        scratch_storage_class="fast",
        runtime_class="gvisor",
        image_pull_secrets=("regcred",),
        service_account="jobs",
    )
    job = build_job(spec(asset, kind="api"), settings)
    validate(job)
    pod = job["spec"]["template"]["spec"]
    worker = pod["initContainers"][1]
    assert worker["resources"]["limits"] == {"cpu": "2", "memory": "4Gi", "amd.com/gpu": "2"}
    assert worker["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "runAsUser": 1000,
        "runAsNonRoot": True,
    }
    assert pod["nodeSelector"] == {"pool": "gpu", "nvidia.com/gpu.product": "A100"}
    assert pod["tolerations"] == [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert pod["runtimeClassName"] == "gvisor" and pod["serviceAccountName"] == "jobs"
    assert pod["imagePullSecrets"] == [{"name": "regcred"}]
    claim = pod["volumes"][0]["ephemeral"]["volumeClaimTemplate"]["spec"]
    assert claim["storageClassName"] == "fast" and claim["resources"]["requests"]["storage"] == "50Gi"


def test_secret_and_its_owner() -> None:
    owner = owner_reference({"metadata": {"name": "provider-exe-1", "uid": "u-1"}})
    secret = build_secret(spec(kind="api"), SETTINGS, owner)
    validate(secret)
    assert secret["stringData"] == {"PROVIDER_WORKSPACE_TOKEN": "eyJ.jwt.sig"}
    # Owned by the Job without blockOwnerDeletion, which would need update on jobs/finalizers.
    assert secret["metadata"]["ownerReferences"] == [
        {"apiVersion": "batch/v1", "kind": "Job", "name": "provider-exe-1", "uid": "u-1"}
    ]
    patch = secret_patch(secret)
    assert patch["metadata"]["ownerReferences"] == [{"$patch": "replace"}, owner]
    assert patch["stringData"] == secret["stringData"]


# --- pod and job states --------------------------------------------------------------------

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def pod(
    *,
    init: dict[str, dict[str, Any]] | None = None,
    main: dict[str, dict[str, Any]] | None = None,
    phase: str = "Pending",
    scheduled: dict[str, Any] | None = None,
    age: float = 1.0,
    reason: str | None = None,
) -> dict[str, Any]:
    status: dict[str, Any] = {"phase": phase}
    if reason:
        status["reason"] = reason
    if scheduled is not None:
        status["conditions"] = [{"type": "PodScheduled", **scheduled}]
    if init:
        status["initContainerStatuses"] = [{"name": n, "state": s} for n, s in init.items()]
    if main:
        status["containerStatuses"] = [{"name": n, "state": s} for n, s in main.items()]
    created = (NOW - timedelta(seconds=age)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"metadata": {"name": "p", "creationTimestamp": created}, "status": status}


def done(code: int = 0, reason: str | None = None, message: str | None = None) -> dict[str, Any]:
    terminated: dict[str, Any] = {
        "exitCode": code,
        "reason": reason or ("Completed" if code == 0 else "Error"),
    }
    if message:
        terminated["message"] = message
    return {"terminated": terminated}


def terminating(obj: dict[str, Any]) -> dict[str, Any]:
    obj["metadata"]["deletionTimestamp"] = "2026-12-01T12:00:00Z"
    return obj


RUNNING = {"running": {"startedAt": "2026-12-01T11:59:59Z"}}
INIT_WAIT = {"waiting": {"reason": "PodInitializing"}}


def job(condition: str | None = None, reason: str | None = None) -> dict[str, Any]:
    status: dict[str, Any] = {}
    if condition:
        status["conditions"] = [{"type": condition, "status": "True", "reason": reason, "message": "m"}]
    return {"metadata": {"name": "j"}, "status": status}


CASES: list[
    tuple[str, dict[str, Any] | None, dict[str, Any] | None, tuple[State, str | None, int | None]]
] = [
    ("no pod yet", job(), None, (State.QUEUED, None, None)),
    (
        "unschedulable",
        job(),
        pod(scheduled={"status": "False", "reason": "Unschedulable", "message": "0/3 nodes"}),
        (State.QUEUED, "Unschedulable", None),
    ),
    ("scheduled", job(), pod(scheduled={"status": "True"}), (State.INITIALIZING, None, None)),
    (
        "staging in",
        job(),
        pod(init={"stage-in": RUNNING, "worker": INIT_WAIT}),
        (State.INITIALIZING, None, None),
    ),
    (
        "stage-in failed",
        job(),
        pod(init={"stage-in": done(1, message="403")}),
        (State.SYSTEM_ERROR, "StageIn", None),
    ),
    ("worker runs", job(), pod(init={"stage-in": done(), "worker": RUNNING}), (State.RUNNING, None, None)),
    (
        "worker failed",
        job(),
        pod(init={"stage-in": done(), "worker": done(7)}),
        (State.EXECUTOR_ERROR, "ExitCode", 7),
    ),
    (
        "worker OOM",
        job(),
        pod(init={"stage-in": done(), "worker": done(137, "OOMKilled")}),
        (State.EXECUTOR_ERROR, "OOMKilled", 137),
    ),
    (
        "staging out",
        job(),
        pod(init={"stage-in": done(), "worker": done()}, main={"stage-out": RUNNING}, phase="Running"),
        (State.FINALIZING, None, 0),
    ),
    (
        "missing output",
        job(),
        pod(init={"stage-in": done(), "worker": done()}, main={"stage-out": done(3)}, phase="Failed"),
        (State.EXECUTOR_ERROR, "MissingOutput", 0),
    ),
    (
        "stage-out failed",
        job(),
        pod(init={"stage-in": done(), "worker": done()}, main={"stage-out": done(1)}, phase="Failed"),
        (State.SYSTEM_ERROR, "StageOut", None),
    ),
    (
        "complete",
        job("Complete"),
        pod(init={"stage-in": done(), "worker": done()}, main={"stage-out": done()}, phase="Succeeded"),
        (State.COMPLETE, None, 0),
    ),
    ("complete, pod gone", job("Complete"), None, (State.COMPLETE, None, None)),
    (
        "deadline",
        job("Failed", "DeadlineExceeded"),
        pod(init={"stage-in": done(), "worker": RUNNING}),
        (State.EXECUTOR_ERROR, "DeadlineExceeded", None),
    ),
    ("evicted", job(), pod(phase="Failed", reason="Evicted"), (State.SYSTEM_ERROR, "Evicted", None)),
    (
        "deadline, the pod being terminated",
        job("FailureTarget", "DeadlineExceeded"),
        terminating(pod(init={"stage-in": done(), "worker": done(143)})),
        (State.EXECUTOR_ERROR, "DeadlineExceeded", None),
    ),
    (
        "image pull within grace",
        job(),
        pod(init={"stage-in": done(), "worker": {"waiting": {"reason": "ImagePullBackOff"}}}, age=5),
        (State.INITIALIZING, "ImagePullBackOff", None),
    ),
    (
        "image pull past grace",
        job(),
        pod(
            init={"stage-in": done(), "worker": {"waiting": {"reason": "ErrImagePull", "message": "nope"}}},
            age=61,
        ),
        (State.SYSTEM_ERROR, "ImagePull", None),
    ),
    (
        "invalid image name",
        job(),
        pod(init={"stage-in": {"waiting": {"reason": "InvalidImageName"}}}, age=1),
        (State.SYSTEM_ERROR, "ImagePull", None),
    ),
]


@pytest.mark.parametrize(
    ("job_obj", "pod_obj", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_states_from_job_and_pod(
    job_obj: dict[str, Any] | None,
    pod_obj: dict[str, Any] | None,
    expected: tuple[State, str | None, int | None],
) -> None:
    verdict = derive(job_obj, pod_obj, NOW, pull_grace_seconds=60)
    assert verdict.observation is not None
    seen = verdict.observation
    assert (seen.state, seen.reason, seen.exit_code) == expected
    if seen.state is State.COMPLETE:
        assert seen.manifest_in_storage  # the outputs come from the sidecar's manifest
    if seen.reason == "ImagePullBackOff":
        assert verdict.recheck_after == pytest.approx(55, abs=1)  # looked at again when the grace ends


def test_a_pod_being_deleted_reports_nothing_until_it_is_gone() -> None:
    # kubectl delete pod: its containers get SIGTERM and exit 143, which is no worker failure.
    killed = terminating(pod(init={"stage-in": done(), "worker": done(143)}))
    assert derive(job(), killed, NOW, 60).observation is None


def test_stage_in_failure_names_the_sidecar_message() -> None:
    verdict = derive(job(), pod(init={"stage-in": done(1, message="sidecar: stage-in failed: 403")}), NOW, 60)
    assert verdict.observation is not None and "403" in (verdict.observation.message or "")


# --- the cluster refusing the pod (the Job controller's FailedCreate Events) ---------------------

QUOTA = 'Error creating: pods "j-x2k4m" is forbidden: exceeded quota: pods, requested: pods=1'
RUNTIME = 'Error creating: pods "j-b5n7q" is forbidden: pod rejected: RuntimeClass "gvisor" not found'


def failed_create(
    message: str, first: datetime, last: datetime | None = None, uid: str = "u1"
) -> dict[str, Any]:
    stamp = "%Y-%m-%dT%H:%M:%SZ"
    return {
        "involvedObject": {"uid": uid},
        "firstTimestamp": first.strftime(stamp),
        "lastTimestamp": (last or first).strftime(stamp),
        "message": message,
    }


@pytest.mark.parametrize(
    ("job_obj", "message", "waited", "expected"),
    [
        (job(), QUOTA, 10, (State.QUEUED, "QuotaExceeded")),
        (job(), RUNTIME, 10, (State.QUEUED, "PodCreateRefused")),
        (job(), RUNTIME, 300, (State.SYSTEM_ERROR, "PodCreateRefused")),
        # The deadline passes with no pod ever made: the cluster's doing, not the worker's.
        (job("Failed", "DeadlineExceeded"), QUOTA, 10, (State.SYSTEM_ERROR, "QuotaExceeded")),
        (job("FailureTarget", "DeadlineExceeded"), QUOTA, 10, (State.SYSTEM_ERROR, "QuotaExceeded")),
    ],
    ids=["quota", "runtime class", "past the grace", "deadline", "deadline (FailureTarget)"],
)
def test_a_refused_pod_is_queued_with_the_clusters_words_then_a_system_error(
    job_obj: dict[str, Any], message: str, waited: float, expected: tuple[State, str]
) -> None:
    refused = Refusal(NOW - timedelta(seconds=waited), message)
    verdict = derive(job_obj, None, NOW, 60, refused, create_grace_seconds=300)
    seen = verdict.observation
    assert seen is not None and (seen.state, seen.reason, seen.message) == (*expected, message)
    if seen.state is State.QUEUED:
        assert verdict.recheck_after == pytest.approx(300 - waited)  # judged again when the grace ends


def test_a_refusal_no_longer_counts_once_there_is_a_pod() -> None:
    verdict = derive(job(), pod(), NOW, 60, Refusal(NOW - timedelta(hours=1), QUOTA), 300)
    assert verdict.observation is not None and verdict.observation.reason != "QuotaExceeded"


def test_refusal_reads_the_events_of_this_job() -> None:
    earlier, later = NOW - timedelta(seconds=90), NOW - timedelta(seconds=5)
    events = [
        failed_create(
            "Error creating: of a Job of the same name, deleted", NOW - timedelta(hours=1), uid="old"
        ),
        failed_create(RUNTIME, earlier, later),
        failed_create("(combined from similar events): " + QUOTA, later),  # as late: seen after
    ]
    found = refusal(events, "u1", NOW)
    assert found == Refusal(earlier, QUOTA) and found.reason == "QuotaExceeded"
    assert refusal(events[:1], "u1", NOW) is None


# --- programs (GA4GH TES tasks) ------------------------------------------------------------------


def program_spec() -> JobSpec:
    from dataclasses import replace as _replace

    from provider.domain.programs import Collect, Limits, Placement, Program, Step

    program = Program(
        steps=(
            Step(("/bin/sh", "/scripts/run.sh"), workdir="/work", env={"MODE": "fast"}),
            Step(("sort", "/work/x"), stdin="/data/in.txt", stdout="/out/sorted.txt", stderr="/work/err log"),
        ),
        placements=(Placement("/data/in.txt", "data/in.txt"), Placement("/scripts/run.sh", "tes/t/inputs/1")),
        collects=(
            Collect("/out/sorted.txt", "results/sorted.txt"),
            Collect("/work/reports", "results/r", True),
        ),
        volumes=("/work",),
        limits=Limits(cpu="1", memory="1000000000", ephemeral_storage="2000000000"),
    )
    return _replace(spec(dummy(consumer_command=True)), inputs={}, program=program)


def test_a_program_becomes_ordered_steps_with_its_paths_mounted_from_scratch() -> None:
    job = program_spec()
    manifest = build_job(job, SETTINGS)
    validate(manifest)
    pod_spec = manifest["spec"]["template"]["spec"]
    names = [c["name"] for c in pod_spec["initContainers"]]
    assert names == ["stage-in", "step-1", "step-2"]
    first, second = pod_spec["initContainers"][1:]
    assert first["command"] == ["/bin/sh", "/scripts/run.sh"] and first["workingDir"] == "/work"
    assert {"name": "MODE", "value": "fast"} in first["env"] and "args" not in first
    # Standard streams to and from files: the image's shell opens them, then runs the command.
    assert second["command"][:2] == ["/bin/sh", "-c"]
    assert second["command"][2] == "exec \"$@\" </data/in.txt >/out/sorted.txt 2>'/work/err log'"
    assert second["command"][3:] == ["sh", "sort", "/work/x"]
    mounts = {m["mountPath"]: m for m in first["volumeMounts"]}
    assert mounts["/out"]["subPath"] == "results/dir-0"
    assert mounts["/work"]["subPath"] == "results/dir-1" and not mounts["/work"].get("readOnly")
    assert mounts["/work/reports"]["subPath"] == "results/dir-2"
    assert mounts["/data/in.txt"] == {
        "name": "scratch",
        "mountPath": "/data/in.txt",
        "subPath": "inputs/placement-0",
        "readOnly": True,
    }
    depths = [m["mountPath"].count("/") for m in first["volumeMounts"]]
    assert depths == sorted(depths)  # /work before /work/reports
    assert first["resources"]["limits"] == {"cpu": "1", "memory": "1000000000"}
    scratch = next(v for v in pod_spec["volumes"] if v["name"] == "scratch")
    assert scratch["emptyDir"]["sizeLimit"] == "2000000000"
    # The sidecar stages the placements in and ships the collects to their own keys.
    description = json.loads(
        next(e["value"] for e in pod_spec["initContainers"][0]["env"] if e["name"] == "PROVIDER_JOB_SPEC")
    )
    assert [(i["name"], i["key"]) for i in description["inputs"]] == [
        ("placement-0", "data/in.txt"),
        ("placement-1", "tes/t/inputs/1"),
    ]
    assert [(o["path"], o["key"], o["kind"]) for o in description["outputs"]] == [
        ("dir-0/sorted.txt", "results/sorted.txt", "file"),
        ("dir-2", "results/r", "directory"),
    ]


def test_a_failing_step_ends_the_program_with_its_exit_code_and_every_step_is_logged() -> None:
    started = {
        "terminated": {
            "exitCode": 0,
            "reason": "Completed",
            "startedAt": "2026-12-01T11:59:00Z",
            "finishedAt": "2026-12-01T11:59:10Z",
        }
    }
    failed = {
        "terminated": {
            "exitCode": 4,
            "reason": "Error",
            "startedAt": "2026-12-01T11:59:10Z",
            "finishedAt": "2026-12-01T11:59:12Z",
        }
    }
    waiting = {"waiting": {"reason": "PodInitializing"}}
    seen = derive(
        None,
        pod(
            init={"stage-in": done(), "step-1": started, "step-2": failed, "step-3": waiting}, phase="Failed"
        ),
        NOW,
        60,
    ).observation
    assert seen is not None and seen.state is State.EXECUTOR_ERROR and seen.exit_code == 4
    assert seen.message == "step 2 exited with 4"
    assert [s.exit_code for s in seen.steps] == [0, 4]
    assert seen.steps[0].ended_at == datetime(2026, 12, 1, 11, 59, 10, tzinfo=UTC)
    # The last step is the worker: once it ended well, the outputs are shipped.
    running = derive(
        None, pod(init={"stage-in": done(), "step-1": started, "step-2": {"running": {}}}), NOW, 60
    )
    assert running.observation is not None and running.observation.state is State.RUNNING
    shipping = derive(
        None,
        pod(
            init={"stage-in": done(), "step-1": started, "step-2": started},
            main={"stage-out": {"running": {}}},
        ),
        NOW,
        60,
    )
    assert shipping.observation is not None and shipping.observation.state is State.FINALIZING
    assert len(shipping.observation.steps) == 2
