"""Pods as the kubelet runs them: container states and the conditions derived from them, logs
written by the containers, and graceful deletion (the kubelet finishes it after
`pod_termination_delay` seconds, or at `complete_pod_deletion` when that is None)."""

from __future__ import annotations

import asyncio
import copy
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tests.fake_kube.jobs import JobController
from tests.fake_kube.kinds import JOB_TRACKING_FINALIZER, RESOURCES
from tests.fake_kube.objects import TERMINAL, set_condition, timestamp, utc_now
from tests.fake_kube.store import Change


@dataclass
class ContainerLog:
    lines: list[tuple[int, str]] = field(default_factory=list)
    previous: list[tuple[int, str]] = field(default_factory=list)


def container_names(pod: Mapping[str, Any]) -> list[str]:
    spec = pod.get("spec") or {}
    return [
        c.get("name", "")
        for group in ("initContainers", "containers", "ephemeralContainers")
        for c in spec.get(group) or []
    ]


class Kubelet(JobController):
    pod_termination_delay: float | None = 0.0

    def __init__(self) -> None:
        super().__init__()
        self._logs: dict[tuple[str, str], ContainerLog] = {}  # (pod uid, container) -> its log
        self._kubelet_handles: set[asyncio.TimerHandle] = set()

    def set_pod_unschedulable(
        self, namespace: str, pod: str, message: str = "0/1 nodes are available: 1 Insufficient cpu."
    ) -> dict[str, Any]:
        """Record the scheduler's verdict: PodScheduled=False, reason Unschedulable."""
        obj = self._require(RESOURCES["pods"], namespace, pod)
        status = obj.setdefault("status", {})
        set_condition(status, "PodScheduled", "False", "Unschedulable", message)
        return self._commit(RESOURCES["pods"], (namespace, pod), obj, "MODIFIED")

    def set_container_state(
        self,
        namespace: str,
        pod: str,
        container: str,
        state: str,
        *,
        reason: str | None = None,
        message: str | None = None,
        exit_code: int | None = None,
        restart_count: int | None = None,
    ) -> dict[str, Any]:
        """Report a container (or init container) as waiting, running or terminated, as the kubelet does."""
        if state not in ("waiting", "running", "terminated"):
            raise ValueError(f"state must be waiting, running or terminated, not {state!r}")
        pods = RESOURCES["pods"]
        obj = self._require(pods, namespace, pod)
        entry = self._container_status(obj, container)
        self._set_state(
            obj,
            entry,
            state,
            reason=reason,
            message=message,
            exit_code=exit_code,
            restart_count=restart_count,
        )
        self._kubelet_conditions(obj)
        stored = self._commit(pods, (namespace, pod), obj, "MODIFIED")
        self._sync_job_of(stored)
        return self._require(pods, namespace, pod)

    def set_pod_phase(
        self, namespace: str, pod: str, phase: str, reason: str | None = None, message: str | None = None
    ) -> dict[str, Any]:
        """Set status.phase (and reason/message), updating the kubelet's conditions to match."""
        pods = RESOURCES["pods"]
        obj = self._require(pods, namespace, pod)
        status = obj.setdefault("status", {})
        status["phase"] = phase
        for key, value in (("reason", reason), ("message", message)):
            if value is None:
                status.pop(key, None)
            else:
                status[key] = value
        self._ensure_started(obj)
        self._kubelet_conditions(obj)
        stored = self._commit(pods, (namespace, pod), obj, "MODIFIED")
        self._sync_job_of(stored)
        return self._require(pods, namespace, pod)

    def run_pod_to_completion(
        self,
        namespace: str,
        pod: str,
        *,
        exit_code: int = 0,
        logs: str | Mapping[str, str] | None = None,
        finish_job: bool = True,
    ) -> dict[str, Any]:
        """Run a pod to the end in one step: init containers succeed, main containers exit with
        `exit_code`, the phase becomes Succeeded or Failed, the owning Job counts it and (with
        `finish_job`) gets its terminal conditions."""
        pods = RESOURCES["pods"]
        obj = self._require(pods, namespace, pod)
        spec = obj.get("spec") or {}
        if logs is not None:
            texts = {spec["containers"][0]["name"]: logs} if isinstance(logs, str) else dict(logs)
            for container, text in texts.items():
                self.write_log(namespace, pod, container, text)
        for group, code in (("initContainers", 0), ("containers", exit_code)):
            for container in spec.get(group) or []:
                entry = self._container_status(obj, container["name"])
                if "terminated" not in (entry.get("state") or {}):
                    if "running" not in (entry.get("state") or {}):
                        self._set_state(obj, entry, "running")
                    self._set_state(obj, entry, "terminated", exit_code=code)
        obj["status"]["phase"] = "Succeeded" if exit_code == 0 else "Failed"
        self._kubelet_conditions(obj)
        stored = self._commit(pods, (namespace, pod), obj, "MODIFIED")
        job = self._sync_job_of(stored)
        if finish_job and job is not None:
            job_name = job["metadata"]["name"]
            if exit_code == 0:
                self.set_job_condition(namespace, job_name, "SuccessCriteriaMet")
                self.set_job_condition(namespace, job_name, "Complete")
            else:
                self.set_job_condition(namespace, job_name, "FailureTarget")
                self.set_job_condition(namespace, job_name, "Failed")
        return self._require(pods, namespace, pod)

    def write_log(self, namespace: str, pod: str, container: str, text: str) -> None:
        """Append to a container's log; followers receive it."""
        obj = self._require(RESOURCES["pods"], namespace, pod)
        if container not in container_names(obj):
            raise KeyError(f"pod {pod} has no container {container!r}")
        log = self._logs.setdefault((obj["metadata"]["uid"], container), ContainerLog())
        stamp = time.time_ns()
        for line in text.splitlines(keepends=True):
            log.lines.append((stamp, line))
            stamp += 1
        self._notify()

    def complete_pod_deletion(self, namespace: str, pod: str) -> None:
        """Play the kubelet finishing a graceful pod deletion (when `pod_termination_delay` is None)."""
        obj = self._require(RESOURCES["pods"], namespace, pod)
        self._kubelet_finish(namespace, pod, obj["metadata"]["uid"])

    def _committed(self, change: Change) -> None:
        """A deleted pod's logs go with it."""
        super()._committed(change)
        if change.resource == "pods" and change.stored is None and change.prev is not None:
            uid = change.prev["metadata"]["uid"]
            for log_key in [k for k in self._logs if k[0] == uid]:
                del self._logs[log_key]

    def _container_status(self, pod: dict[str, Any], container: str) -> dict[str, Any]:
        """The status entry of a container, creating the kubelet's full status lists first."""
        spec = pod.get("spec") or {}
        status = pod.setdefault("status", {})
        has_init = bool(spec.get("initContainers"))
        for group, status_key in (
            ("initContainers", "initContainerStatuses"),
            ("containers", "containerStatuses"),
        ):
            declared = spec.get(group) or []
            if not declared:
                continue
            existing = {entry["name"]: entry for entry in status.get(status_key) or []}
            entries = []
            for item in declared:
                entry = existing.get(item["name"])
                if entry is None:
                    reason = "PodInitializing" if has_init else "ContainerCreating"
                    entry = {
                        "name": item["name"],
                        "state": {"waiting": {"reason": reason}},
                        "lastState": {},
                        "ready": False,
                        "restartCount": 0,
                        "image": item.get("image", ""),
                        "imageID": "",
                        "started": False,
                    }
                entries.append(entry)
            status[status_key] = entries
        for status_key in ("initContainerStatuses", "containerStatuses"):
            for entry in status.get(status_key) or []:
                if entry["name"] == container:
                    return entry
        raise KeyError(f"pod {pod['metadata']['name']} has no container {container!r}")

    def _set_state(
        self,
        pod: dict[str, Any],
        entry: dict[str, Any],
        state: str,
        *,
        reason: str | None = None,
        message: str | None = None,
        exit_code: int | None = None,
        restart_count: int | None = None,
    ) -> None:
        now = timestamp(utc_now())
        is_init = any(
            c.get("name") == entry["name"] for c in (pod.get("spec") or {}).get("initContainers") or []
        )
        current = entry.get("state") or {}
        uid = pod["metadata"]["uid"]
        if restart_count is not None and restart_count > entry.get("restartCount", 0):
            if "terminated" in current:
                entry["lastState"] = {"terminated": current["terminated"]}
            log = self._logs.setdefault((uid, entry["name"]), ContainerLog())
            log.previous, log.lines = log.lines, []
            entry.pop("containerID", None)
        if restart_count is not None:
            entry["restartCount"] = restart_count
        if state == "waiting":
            waiting: dict[str, Any] = {"reason": reason or "ContainerCreating"}
            if message:
                waiting["message"] = message
            entry["state"] = {"waiting": waiting}
            entry["ready"] = False
            entry["started"] = False
        elif state == "running":
            if "running" not in current or "containerID" not in entry:
                entry["containerID"] = "containerd://" + uuid.uuid4().hex + uuid.uuid4().hex
            image = entry.get("image", "")
            if "/" not in image.split(":")[0]:
                image = f"docker.io/library/{image}"
            entry["imageID"] = f"{image.split(':')[0]}@sha256:{uuid.uuid5(uuid.NAMESPACE_URL, image).hex * 2}"
            started_at = (current.get("running") or {}).get("startedAt", now)
            entry["state"] = {"running": {"startedAt": started_at}}
            entry["ready"] = not is_init
            entry["started"] = True
        else:
            code = 0 if exit_code is None else exit_code
            if "containerID" not in entry:
                entry["containerID"] = "containerd://" + uuid.uuid4().hex + uuid.uuid4().hex
            terminated: dict[str, Any] = {
                "exitCode": code,
                "reason": reason or ("Completed" if code == 0 else "Error"),
            }
            if message:
                terminated["message"] = message
            terminated["startedAt"] = (current.get("running") or {}).get("startedAt", now)
            terminated["finishedAt"] = now
            terminated["containerID"] = entry["containerID"]
            entry["state"] = {"terminated": terminated}
            entry["ready"] = is_init and code == 0
            entry["started"] = False
        self._ensure_started(pod)
        self._notify()

    def _ensure_started(self, pod: dict[str, Any]) -> None:
        """The kubelet fills in start time and addresses when it first syncs a pod."""
        status = pod.setdefault("status", {})
        if not (pod.get("spec") or {}).get("nodeName") or "startTime" in status:
            return
        suffix = sum(ord(c) for c in pod["metadata"]["uid"]) % 250 + 2
        status["hostIP"] = "10.0.0.1"
        status["hostIPs"] = [{"ip": "10.0.0.1"}]
        status["podIP"] = f"10.244.0.{suffix}"
        status["podIPs"] = [{"ip": f"10.244.0.{suffix}"}]
        status["startTime"] = timestamp(utc_now())

    def _kubelet_conditions(self, pod: dict[str, Any]) -> None:
        """Initialized / ContainersReady / Ready as the kubelet derives them from container states."""
        status = pod.setdefault("status", {})
        if not status.get("containerStatuses") and not status.get("initContainerStatuses"):
            return
        terminal = status.get("phase") in TERMINAL
        init = status.get("initContainerStatuses") or []
        pending_init = [
            e["name"] for e in init if (e.get("state") or {}).get("terminated", {}).get("exitCode", 1) != 0
        ]
        unready = [e["name"] for e in status.get("containerStatuses") or [] if not e.get("ready")]
        sandbox = any(
            "running" in (e.get("state") or {}) or "terminated" in (e.get("state") or {})
            for e in [*init, *(status.get("containerStatuses") or [])]
        )
        set_condition(status, "PodReadyToStartContainers", "True" if sandbox and not terminal else "False")
        if pending_init and not terminal:
            set_condition(
                status,
                "Initialized",
                "False",
                "ContainersNotInitialized",
                f"containers with incomplete status: [{' '.join(pending_init)}]",
            )
        else:
            set_condition(status, "Initialized", "True")
        if terminal:
            for name in ("Ready", "ContainersReady"):
                set_condition(status, name, "False", "PodCompleted")
        elif unready:
            message = f"containers with unready status: [{' '.join(unready)}]"
            set_condition(status, "Ready", "False", "ContainersNotReady", message)
            set_condition(status, "ContainersReady", "False", "ContainersNotReady", message)
        else:
            set_condition(status, "Ready", "True")
            set_condition(status, "ContainersReady", "True")
        order = ["PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady", "PodScheduled"]
        status["conditions"].sort(key=lambda c: order.index(c["type"]) if c["type"] in order else len(order))

    def _schedule_kubelet(self, namespace: str, name: str, uid: str) -> None:
        if self.pod_termination_delay is None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        handle: asyncio.TimerHandle | None = None

        def fire() -> None:
            if handle is not None:
                self._kubelet_handles.discard(handle)
            self._kubelet_finish(namespace, name, uid)

        handle = loop.call_later(self.pod_termination_delay, fire)
        self._kubelet_handles.add(handle)

    def _kubelet_finish(self, namespace: str, name: str, uid: str) -> None:
        """The kubelet kills a terminating pod's containers, reports it, then deletes it for good."""
        pods = RESOURCES["pods"]
        key = (namespace, name)
        obj = copy.deepcopy(self._store["pods"].get(key))
        if obj is None or obj["metadata"]["uid"] != uid or not obj["metadata"].get("deletionTimestamp"):
            return
        status = obj.setdefault("status", {})
        for group in ("initContainers", "containers"):
            for container in (obj.get("spec") or {}).get(group) or []:
                entry = self._container_status(obj, container["name"])
                state = entry.get("state") or {}
                if "running" in state:
                    self._set_state(obj, entry, "terminated", exit_code=143, reason="Error")
                elif "waiting" in state and group == "containers":
                    entry["state"] = {
                        "terminated": {
                            "exitCode": 137,
                            "reason": "ContainerStatusUnknown",
                            "message": "The container could not be located when the pod was terminated",
                        }
                    }
        if status.get("phase") not in TERMINAL:
            status["phase"] = "Failed"
        self._kubelet_conditions(obj)
        stored = self._commit(pods, key, obj, "MODIFIED")
        self._sync_job_of(stored)  # the Job controller counts the pod and drops its finalizer
        if key in self._store["pods"]:
            self._finish_pod(key)

    def _finish_pod(self, key: tuple[str, str]) -> tuple[dict[str, Any], bool]:
        """The last, graceless delete of a pod. The kubelet's delete with grace 0 is written as an
        update; then the Job controller drops its tracking finalizer, and the update that empties
        the finalizers deletes the pod instead of writing it."""
        pods = RESOURCES["pods"]
        obj = copy.deepcopy(self._store["pods"][key])
        meta = obj["metadata"]
        if meta.get("deletionGracePeriodSeconds"):
            meta["deletionGracePeriodSeconds"] = 0
            obj = self._commit(pods, key, obj, "MODIFIED")
            meta = obj["metadata"]
        finalizers = meta.get("finalizers") or []
        remaining = [f for f in finalizers if f != JOB_TRACKING_FINALIZER]
        if remaining:
            if remaining != finalizers:
                meta["finalizers"] = remaining
                obj = self._commit(pods, key, obj, "MODIFIED")
            return obj, False
        self._commit(pods, key, None, "DELETED")
        return obj, True
