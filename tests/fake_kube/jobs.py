"""The Job controller, as far as the fake plays it: it counts a Job's pods through their
tracking finalizer, creates pods for `create_job_pod` (or by itself with `auto_pods`), and
records `FailedCreate` when the cluster refuses them (`refuse_pods`). Tests set the Job's
conditions (`set_job_condition`)."""

from __future__ import annotations

import contextlib
import copy
import uuid
from collections.abc import Mapping
from typing import Any

from tests.fake_kube import errors, kinds
from tests.fake_kube.errors import KubeError
from tests.fake_kube.events import Events
from tests.fake_kube.kinds import JOB_TRACKING_FINALIZER, RESOURCES
from tests.fake_kube.objects import TERMINAL, generate_name, metadata_of, set_condition, timestamp, utc_now
from tests.fake_kube.store import Change


class JobController(Events):
    auto_pods: bool = False

    def __init__(self) -> None:
        super().__init__()
        # The work list and indexes, kept on every write, so that a write costs the same with a
        # thousand Jobs as with one: Jobs whose counts may have changed, each Job's key by uid,
        # and the keys of the pods each Job controls.
        self._dirty_jobs: set[tuple[str, str]] = set()
        self._job_keys: dict[str, tuple[str, str]] = {}
        self._pods_of_job: dict[str, set[tuple[str, str]]] = {}
        self._refused_pods: dict[tuple[str, str], str] = {}  # (namespace, Job) -> why

    def refuse_pods(self, namespace: str, job_name: str, problem: str | None) -> None:
        """Refuse the Job's pods as a ResourceQuota, the RuntimeClass admission plugin or a
        webhook does (403 `pods "<name>" is forbidden: <problem>`); None admits them again.

        While refused, each attempt of the Job controller (`create_job_pod`, or `auto_pods`)
        fails and records a Warning Event `FailedCreate` on the Job, `Error creating: <error>`."""
        if problem is None:
            self._refused_pods.pop((namespace, job_name), None)
        else:
            self._refused_pods[(namespace, job_name)] = problem

    def create_job_pod(
        self, namespace: str, job_name: str, node: str | None = "node-1", *, name: str | None = None
    ) -> dict[str, Any]:
        """Create a pod for the Job as the Job controller and scheduler would; a refused pod
        (`refuse_pods`) raises the API server's KubeError after the controller's Event."""
        jobs = RESOURCES["jobs"]
        job = self._require(jobs, namespace, job_name)
        template = copy.deepcopy(job["spec"]["template"])
        template_meta = template.get("metadata") or {}
        pod_name = name or generate_name(f"{job_name}-")
        problem = self._refused_pods.get((namespace, job_name))
        if problem is not None:
            # The name is generated before admission runs, so the message names the pod.
            refused = errors.forbidden(RESOURCES["pods"], pod_name, problem)
            self.record_event(job, "Warning", "FailedCreate", f"Error creating: {refused.message}")
            raise refused
        spec = template.get("spec") or {}
        kinds.default_pod_spec(spec, for_pod=True)
        now = timestamp(utc_now())
        if node:
            spec["nodeName"] = node
        status: dict[str, Any] = {"phase": "Pending"}
        if node:
            status["conditions"] = [
                {"type": "PodScheduled", "status": "True", "lastProbeTime": None, "lastTransitionTime": now}
            ]
        status["qosClass"] = kinds.qos_class(spec)
        pod = {
            "kind": "Pod",
            "apiVersion": "v1",
            "metadata": {
                "name": pod_name,
                "generateName": f"{job_name}-",
                "namespace": namespace,
                "uid": str(uuid.uuid4()),
                "generation": 1,
                "creationTimestamp": now,
                "labels": dict(template_meta.get("labels") or {}),
                "annotations": dict(template_meta.get("annotations") or {}),
                "ownerReferences": [
                    {
                        "apiVersion": "batch/v1",
                        "kind": "Job",
                        "name": job_name,
                        "uid": job["metadata"]["uid"],
                        "controller": True,
                        "blockOwnerDeletion": True,
                    }
                ],
                "finalizers": [JOB_TRACKING_FINALIZER],
            },
            "spec": spec,
            "status": status,
        }
        pods = RESOURCES["pods"]
        if (namespace, pod_name) in self._store["pods"]:
            raise errors.already_exists(pods, pod_name)
        stored = self._commit(pods, (namespace, pod_name), pod, "ADDED")
        self._sync_job(namespace, job["metadata"]["uid"])
        return stored

    def set_job_condition(
        self,
        namespace: str,
        job: str,
        type: str,
        status: str = "True",
        reason: str | None = None,
        message: str | None = None,
    ) -> dict[str, Any]:
        """Add or update a Job condition as the Job controller does, with the counts that go with it."""
        defaults = {
            "Complete": ("CompletionsReached", "Reached expected number of succeeded pods"),
            "SuccessCriteriaMet": ("CompletionsReached", "Reached expected number of succeeded pods"),
            "Failed": ("BackoffLimitExceeded", "Job has reached the specified backoff limit"),
            "FailureTarget": ("BackoffLimitExceeded", "Job has reached the specified backoff limit"),
            "Suspended": ("JobSuspended", "Job suspended"),
        }
        if reason == "DeadlineExceeded" and message is None:
            message = "Job was active longer than specified deadline"
        default_reason, default_message = defaults.get(type, (None, None))
        jobs = RESOURCES["jobs"]
        obj = self._require(jobs, namespace, job)
        job_status = obj.setdefault("status", {})
        set_condition(
            job_status, type, status, reason or default_reason, message or default_message, probe=True
        )
        if status == "True" and type in ("Complete", "Failed"):
            job_status.pop("active", None)
            job_status["ready"] = 0
            if type == "Complete":
                completions = obj["spec"].get("completions") or 1
                job_status["succeeded"] = max(job_status.get("succeeded", 0), completions)
                job_status["completionTime"] = timestamp(utc_now())
            else:
                job_status["failed"] = max(job_status.get("failed", 0), 1)
        return self._commit(jobs, (namespace, job), obj, "MODIFIED")

    def _committed(self, change: Change) -> None:
        """Keep the Job controller's work list and indexes (see __init__)."""
        super()._committed(change)
        plural, key, prev, new = change.resource, (change.namespace, change.name), change.prev, change.stored
        if plural == "jobs":
            for obj in (prev, new):
                if obj is not None:
                    self._dirty_jobs.add((key[0], obj["metadata"]["uid"]))
            if new is None and prev is not None:
                self._job_keys.pop(prev["metadata"]["uid"], None)
            elif new is not None:
                self._job_keys[new["metadata"]["uid"]] = key
        elif plural == "pods":
            for obj in (prev, new):
                for ref in (metadata_of(obj).get("ownerReferences") or []) if obj is not None else []:
                    if ref.get("kind") == "Job" and ref.get("controller"):
                        self._dirty_jobs.add((key[0], ref["uid"]))
                        pods = self._pods_of_job.setdefault(ref["uid"], set())
                        if obj is new:
                            pods.add(key)
                        else:
                            pods.discard(key)

    def _sync_dirty_jobs(self) -> None:
        """Count the pods of every Job a write may have changed since the last call."""
        dirty, self._dirty_jobs = self._dirty_jobs, set()
        for namespace, uid in dirty:
            self._sync_job(namespace, uid)

    def _sync_job_of(self, pod: Mapping[str, Any]) -> dict[str, Any] | None:
        for ref in metadata_of(pod).get("ownerReferences") or []:
            if ref.get("kind") == "Job" and ref.get("controller"):
                return self._sync_job(metadata_of(pod)["namespace"], ref["uid"])
        return None

    def _sync_job(self, namespace: str, uid: str) -> dict[str, Any] | None:
        """The counting half of the Job controller: finalizer-based tracking of its pods."""
        jobs = RESOURCES["jobs"]
        job_key = self._job_keys.get(uid)
        if job_key is None or job_key[0] != namespace:
            return None
        job = copy.deepcopy(self._store["jobs"][job_key])
        if job["metadata"].get("deletionTimestamp"):
            return job
        status = job.setdefault("status", {})
        owned = [
            (key, self._store["pods"][key])
            for key in sorted(self._pods_of_job.get(uid, ()))
            if key in self._store["pods"] and key[0] == namespace
        ]
        for key, pod in owned:
            phase = (pod.get("status") or {}).get("phase")
            if phase in TERMINAL and JOB_TRACKING_FINALIZER in (pod["metadata"].get("finalizers") or []):
                counter = "succeeded" if phase == "Succeeded" else "failed"
                status[counter] = status.get(counter, 0) + 1
                updated = copy.deepcopy(pod)
                updated["metadata"]["finalizers"] = [
                    f for f in updated["metadata"]["finalizers"] if f != JOB_TRACKING_FINALIZER
                ]
                pod_meta = updated["metadata"]
                if (
                    pod_meta.get("deletionTimestamp")
                    and not pod_meta["finalizers"]
                    and not pod_meta.get("deletionGracePeriodSeconds")
                ):
                    self._commit(RESOURCES["pods"], key, None, "DELETED")
                else:
                    self._commit(RESOURCES["pods"], key, updated, "MODIFIED")
        owned = [(key, self._store["pods"][key]) for key, _ in owned if key in self._store["pods"]]
        finished = any(
            c.get("type") in ("Complete", "Failed") and c.get("status") == "True"
            for c in status.get("conditions") or []
        )
        untouched = status.get("succeeded", 0) == 0 and status.get("failed", 0) == 0
        if self.auto_pods and not owned and not finished and untouched and not job["spec"].get("suspend"):
            with contextlib.suppress(KubeError):  # refused: the Event is recorded, the Job waits
                self.create_job_pod(namespace, job_key[1])
            return self.get("jobs", namespace, job_key[1])
        active = [
            pod
            for _, pod in owned
            if (pod.get("status") or {}).get("phase") not in TERMINAL
            and not pod["metadata"].get("deletionTimestamp")
        ]
        terminating = [
            pod
            for _, pod in owned
            if (pod.get("status") or {}).get("phase") not in TERMINAL
            and pod["metadata"].get("deletionTimestamp")
        ]
        ready = [
            pod
            for pod in active
            if any(
                c.get("type") == "Ready" and c.get("status") == "True"
                for c in (pod.get("status") or {}).get("conditions") or []
            )
        ]
        if active:
            status["active"] = len(active)
        else:
            status.pop("active", None)
        if owned or status.get("startTime"):
            status.setdefault("startTime", timestamp(utc_now()))
            status["ready"] = len(ready)
            status["terminating"] = len(terminating)
            status.setdefault("uncountedTerminatedPods", {})
        if job == self._store["jobs"][job_key]:
            return job
        return self._commit(jobs, job_key, job, "MODIFIED")
