"""The objects one execution becomes: a batch/v1 Job and the Secret holding its scoped credentials.

Pod shape (docs/kubernetes.md): init container `stage-in` (sidecar image) fills the scratch
volume; init container `worker` (the asset's image, unchanged) reads its inputs where the asset
says and writes its result directory; container `stage-out` (sidecar image) ships the results
once the worker exited 0. Init containers run one after another and each must succeed before the
next starts, which gives the order for free and keeps bytes in files, never in logs or pipes.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from provider.backends.compute.common import sidecar_job
from provider.backends.compute.kubernetes.objects import Job, KubeObject, ObjectReference
from provider.domain.assets import Toleration
from provider.domain.programs import Program, Step, directory_path, placement_name
from provider.services.ports import JobSpec
from provider.sidecar.contract import RESULTS, Command, Env, input_path

MANAGED_BY = "app.kubernetes.io/managed-by"
COMPONENT = "app.kubernetes.io/component"
EXECUTION = "provider/execution"
# A retried execution's next attempt is a new Job of the same name: this tells their objects apart.
ATTEMPT = "provider/attempt"
TENANT = "provider/tenant"
ASSET = "provider/asset"
VERSION_ANNOTATION = "provider/execution-version"
SELECTOR = f"{MANAGED_BY}=provider,{COMPONENT}=execution"

# Container names; the sidecars' are their commands. A program's steps are `step-1`...`step-N`,
# run in that order, the last in the worker's place.
STAGE_IN, WORKER, STAGE_OUT = Command.STAGE_IN.value, "worker", Command.STAGE_OUT.value
STEP_PREFIX = "step-"


def step_name(index: int) -> str:
    return f"{STEP_PREFIX}{index + 1}"


SCRATCH = "/scratch"  # the staging root
SIDECAR_UID = 65532
# The sidecar streams: it needs little, whatever the data size.
SIDECAR_RESOURCES = {
    "requests": {"cpu": "50m", "memory": "96Mi"},
    "limits": {"cpu": "1", "memory": "384Mi"},
}


@dataclass(frozen=True)
class JobSettings:
    """What the operator configures about every job (compute.kubernetes)."""

    namespace: str
    sidecar_image: str
    image_pull_policy: str = "IfNotPresent"
    image_pull_secrets: tuple[str, ...] = ()
    service_account: str | None = None
    runtime_class: str | None = None
    gpu_resource: str = "nvidia.com/gpu"
    gpu_type_label: str = "nvidia.com/gpu.product"
    scratch: str = "emptyDir"
    scratch_storage_class: str | None = None
    ttl_seconds_after_finished: int = 3600
    staging_seconds: int = 600


JOB_PREFIX = "provider-"


def job_name(execution_id: str) -> str:
    """DNS-1123 label: the Job's pods are named after it (+6 characters)."""
    return JOB_PREFIX + execution_id.lower().replace("_", "-")


def secret_name(execution_id: str) -> str:
    return job_name(execution_id) + "-access"


def execution_of(obj: KubeObject) -> str | None:
    return ((obj.get("metadata") or {}).get("labels") or {}).get(EXECUTION)


def attempt_of(obj: KubeObject) -> int | None:
    """The attempt a Job (or its pod) runs; None for one made before Jobs carried it."""
    value = ((obj.get("metadata") or {}).get("labels") or {}).get(ATTEMPT, "")
    return int(value) if value.isdigit() else None


def labels(job: JobSpec) -> dict[str, str]:
    return {
        MANAGED_BY: "provider",
        COMPONENT: "execution",
        EXECUTION: job.execution_id,
        ATTEMPT: str(job.attempt),
        TENANT: job.tenant_id,
        ASSET: job.asset.id,
    }


def owner_reference(job_object: Job) -> ObjectReference:
    """The Job as owner of its Secret: the garbage collector deletes the Secret once the Job is gone.

    blockOwnerDeletion stays unset. It would only make a foreground deletion of the Job wait for
    the Secret (the service deletes in the background), and where the admission plugin
    OwnerReferencesPermissionEnforcement runs (OpenShift) setting it needs `update` on
    jobs/finalizers, a grant the Role does without: the reference would be refused instead.
    """
    metadata = job_object["metadata"]
    return {"apiVersion": "batch/v1", "kind": "Job", "name": metadata["name"], "uid": metadata["uid"]}


def build_secret(job: JobSpec, settings: JobSettings, owner: ObjectReference) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": secret_name(job.execution_id),
            "namespace": settings.namespace,
            "labels": labels(job),
            "ownerReferences": [owner],
        },
        "type": "Opaque",
        "stringData": dict(job.access.secrets),
    }


def secret_patch(secret: dict[str, Any]) -> dict[str, Any]:
    """Makes a Secret of the same name, left by an earlier attempt, into `secret`: its credentials
    and its owner only (a strategic merge would keep the earlier owner beside it)."""
    return {
        "metadata": {"ownerReferences": [{"$patch": "replace"}, *secret["metadata"]["ownerReferences"]]},
        "stringData": secret["stringData"],
    }


def build_job(job: JobSpec, settings: JobSettings) -> dict[str, Any]:
    asset = job.asset
    sidecar_env: list[dict[str, Any]] = [
        {"name": Env.JOB, "value": json.dumps(sidecar_job(job).to_json(), separators=(",", ":"))},
        {"name": Env.STORAGE_KIND, "value": job.access.kind},
        *({"name": k, "value": v} for k, v in sorted(job.access.settings.items())),
        *(
            {
                "name": k,
                "valueFrom": {"secretKeyRef": {"name": secret_name(job.execution_id), "key": k}},
            }
            for k in sorted(job.access.secrets)
        ),
        {"name": "TMPDIR", "value": "/tmp"},  # noqa: S108 - a private emptyDir
    ]
    sidecar_security = {
        "runAsUser": SIDECAR_UID,
        "runAsGroup": SIDECAR_UID,
        "runAsNonRoot": True,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    sidecar_mounts = [
        {"name": "scratch", "mountPath": SCRATCH},
        {"name": "sidecar-tmp", "mountPath": "/tmp"},  # noqa: S108
    ]

    def sidecar(name: str, args: list[str]) -> dict[str, Any]:
        return {
            "name": name,
            "image": settings.sidecar_image,
            "imagePullPolicy": settings.image_pull_policy,
            "args": args,
            "env": sidecar_env,
            "volumeMounts": sidecar_mounts,
            "resources": SIDECAR_RESOURCES,
            "securityContext": sidecar_security,
            "terminationMessagePolicy": "FallbackToLogsOnError",
        }

    resources = asset.resources
    program_limits = job.program.limits if job.program is not None else None
    cpu = (program_limits and program_limits.cpu) or resources.cpu
    memory = (program_limits and program_limits.memory) or resources.memory
    scratch_size = (program_limits and program_limits.ephemeral_storage) or resources.ephemeral_storage
    limits: dict[str, str] = {"cpu": cpu, "memory": memory}
    if resources.gpu_count:
        limits[settings.gpu_resource] = str(resources.gpu_count)
    worker_security: dict[str, Any] = {"allowPrivilegeEscalation": False}
    if asset.run_as_user is not None:
        worker_security.update(runAsUser=asset.run_as_user, runAsNonRoot=True)
    worker: dict[str, Any] = {
        "name": WORKER,
        "image": asset.image,
        "imagePullPolicy": settings.image_pull_policy,
        "env": [{"name": k, "value": v} for k, v in {**asset.env, **job.env}.items()],
        "resources": {"requests": {"cpu": cpu, "memory": memory}, "limits": limits},
        "volumeMounts": [
            *(
                {
                    "name": "scratch",
                    "mountPath": i.mount_path,
                    "subPath": input_path(i.name),
                    "readOnly": True,
                }
                for i in asset.inputs
                if i.name in job.inputs
            ),
            {"name": "scratch", "mountPath": asset.result_dir, "subPath": RESULTS},
        ],
        "securityContext": worker_security,
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    if asset.command:
        worker["command"] = list(asset.command)
    if asset.args:
        worker["args"] = list(asset.args)
    workers = [worker] if job.program is None else _steps(worker, job, job.program)

    node_selector = dict(asset.node_selector)
    if resources.gpu_type:
        node_selector[settings.gpu_type_label] = resources.gpu_type
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,  # the worker sees no addresses of the cluster's services
        "securityContext": {"fsGroup": SIDECAR_UID, "seccompProfile": {"type": "RuntimeDefault"}},
        "initContainers": [
            sidecar(STAGE_IN, [STAGE_IN, "--root", SCRATCH, "--results", f"{SCRATCH}/{RESULTS}"]),
            *workers,
        ],
        "containers": [sidecar(STAGE_OUT, [STAGE_OUT, "--root", f"{SCRATCH}/{RESULTS}"])],
        "volumes": [_scratch_volume(scratch_size, settings), _tmp_volume()],
    }
    if node_selector:
        pod_spec["nodeSelector"] = node_selector
    if asset.tolerations:
        pod_spec["tolerations"] = [_toleration(t) for t in asset.tolerations]
    if settings.image_pull_secrets:
        pod_spec["imagePullSecrets"] = [{"name": n} for n in settings.image_pull_secrets]
    if settings.service_account:
        pod_spec["serviceAccountName"] = settings.service_account
    if settings.runtime_class:
        pod_spec["runtimeClassName"] = settings.runtime_class

    object_labels = labels(job)
    annotations = {VERSION_ANNOTATION: str(job.version)}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": job_name(job.execution_id),
            "namespace": settings.namespace,
            "labels": object_labels,
            "annotations": annotations,
        },
        "spec": {
            "backoffLimit": 0,  # retries are the service's decision, not the Job controller's
            "activeDeadlineSeconds": asset.max_run_seconds + settings.staging_seconds,
            "ttlSecondsAfterFinished": settings.ttl_seconds_after_finished,
            "template": {
                "metadata": {"labels": object_labels, "annotations": annotations},
                "spec": pod_spec,
            },
        },
    }


def _steps(worker: dict[str, Any], job: JobSpec, program: Program) -> list[dict[str, Any]]:
    """A program's steps: init containers in order, each the worker with its own command,
    environment and working directory, and the program's directories and placed files mounted
    from the scratch volume (a directory inside another mounted after it)."""
    mounts: list[tuple[str, dict[str, Any]]] = [
        (path, {"name": "scratch", "mountPath": path, "subPath": f"{RESULTS}/{directory_path(index)}"})
        for index, path in enumerate(program.directories())
    ]
    mounts += [
        (
            item.path,
            {
                "name": "scratch",
                "mountPath": item.path,
                "subPath": input_path(placement_name(index)),
                "readOnly": True,
            },
        )
        for index, item in enumerate(program.placements)
    ]
    mounts.sort(key=lambda pair: len(PurePosixPath(pair[0]).parts))
    own = [*job.asset.command, *job.asset.args]
    containers = []
    for index, step in enumerate(program.steps):
        container = {k: v for k, v in worker.items() if k not in ("command", "args")}
        container["name"] = step_name(index)
        container["volumeMounts"] = [mount for _, mount in mounts]
        env = {**job.asset.env, **job.env, **step.env}
        container["env"] = [{"name": k, "value": v} for k, v in env.items()]
        command = list(step.command)
        if step.stdin or step.stdout or step.stderr:
            command = _redirected(step)
        if command == own and own:  # the asset's own command: as the asset gives it
            container.update({k: worker[k] for k in ("command", "args") if k in worker})
        else:
            container["command"] = command
        if step.workdir:
            container["workingDir"] = step.workdir
        containers.append(container)
    return containers


def _redirected(step: Step) -> list[str]:
    """A step with standard streams from or to files: a container has no such setting, so the
    image's /bin/sh opens them and then becomes the command (docs/tes.md)."""
    redirections = ""
    if step.stdin:
        redirections += f" <{shlex.quote(step.stdin)}"
    if step.stdout:
        redirections += f" >{shlex.quote(step.stdout)}"
    if step.stderr:
        redirections += f" 2>{shlex.quote(step.stderr)}"
    return ["/bin/sh", "-c", f'exec "$@"{redirections}', "sh", *step.command]


def _scratch_volume(size: str, settings: JobSettings) -> dict[str, Any]:
    if settings.scratch == "ephemeral":
        claim: dict[str, Any] = {
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": size}},
        }
        if settings.scratch_storage_class:
            claim["storageClassName"] = settings.scratch_storage_class
        return {"name": "scratch", "ephemeral": {"volumeClaimTemplate": {"spec": claim}}}
    return {"name": "scratch", "emptyDir": {"sizeLimit": size}}


def _tmp_volume() -> dict[str, Any]:
    return {"name": "sidecar-tmp", "emptyDir": {"sizeLimit": "64Mi"}}


def _toleration(toleration: Toleration) -> dict[str, Any]:
    out: dict[str, Any] = {"operator": toleration.operator}
    if toleration.key is not None:
        out["key"] = toleration.key
    if toleration.value is not None:
        out["value"] = toleration.value
    if toleration.effect is not None:
        out["effect"] = toleration.effect
    if toleration.toleration_seconds is not None:
        out["tolerationSeconds"] = toleration.toleration_seconds
    return out
