"""A protocol-level fake of the Kubernetes API server, for tests of code that talks to a cluster.

It speaks the real wire protocol over HTTP (JSON bodies, `Status` errors, chunked watch streams,
pod logs as text) so the code under test runs its real client unchanged, and it keeps the
semantics such code depends on: one global resourceVersion, optimistic concurrency, watch replay
and `410 Expired` after compaction, consistent paginated lists, label and field selectors, the
three patch flavours, finalizers, graceful pod deletion and owner-reference garbage collection.
With `owner_references_role` it also admits writes as OwnerReferencesPermissionEnforcement does
(OpenShift enables that plugin), for a requester holding that Role.

There are no controllers beyond a garbage collector, a namespace cleaner, a kubelet that finishes
deleting pods and a Job controller that counts its pods; tests play the scheduler, kubelet and
the rest of the Job controller through the hook methods (`create_job_pod`, `set_container_state`,
`set_job_condition`, `write_log`, ...), each of which writes through the same path as the API so
watchers see ordinary events. Pods the cluster refuses (`refuse_pods`: a quota, a missing
RuntimeClass, an admission webhook) make the Job controller's attempts fail with the `FailedCreate`
Event it records on the Job, deduplicated by count as client-go's event recorder does.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import json
import random
import re
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web

from tests.fake_kube import errors, kinds, patching, rbac, validation
from tests.fake_kube.errors import KubeError
from tests.fake_kube.kinds import GROUP_VERSIONS, JOB_TRACKING_FINALIZER, RESOURCES, DecodeError, Resource
from tests.fake_kube.selectors import (
    FieldSelector,
    LabelSelector,
    SelectorError,
    object_fields,
    parse_field_selector,
    parse_label_selector,
)

VERSION_INFO = {
    "major": "1",
    "minor": "34",
    "emulationMajor": "1",
    "emulationMinor": "34",
    "minCompatibilityMajor": "1",
    "minCompatibilityMinor": "33",
    "gitVersion": "v1.34.0",
    "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean",
    "buildDate": "2025-08-27T00:00:00Z",
    "goVersion": "go1.24.6",
    "compiler": "gc",
    "platform": "linux/amd64",
}

PATCH_TYPES = [
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
    "application/apply-patch+yaml",
]
BODY_TYPES = [
    "application/json",
    "application/yaml",
    "application/vnd.kubernetes.protobuf",
    "application/cbor",
]
MAX_BODY_BYTES = 3 * 1024 * 1024
JOB_DELETE_WARNING = (
    '299 - "child pods are preserved by default when jobs are deleted; set propagationPolicy=Background '
    'to remove them or set propagationPolicy=Orphan to suppress this warning"'
)
_NAME_CHARS = "bcdfghjklmnpqrstvwxz2456789"
_TERMINAL = ("Succeeded", "Failed")
_WAITING_MESSAGES = {
    "ErrImagePull": "image can't be pulled",
    "ImagePullBackOff": "trying and failing to pull image",
}


def _now() -> datetime:
    return datetime.now(UTC)


def _ts(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _rfc3339_nano(ns: int) -> str:
    seconds, nanos = divmod(ns, 1_000_000_000)
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{nanos:09d}Z"


def _random_suffix(length: int = 5) -> str:
    return "".join(random.choice(_NAME_CHARS) for _ in range(length))


def _generate_name(base: str) -> str:
    return base[:58] + _random_suffix()


def _dumps(obj: Any) -> bytes:
    return (json.dumps(obj, separators=(",", ":"), ensure_ascii=False) + "\n").encode()


def _sort_key(namespace: str, name: str) -> str:
    return f"{namespace}/{name}" if namespace else name


def _meta(obj: Mapping[str, Any]) -> dict[str, Any]:
    meta = obj.get("metadata")
    return meta if isinstance(meta, dict) else {}


@dataclass(frozen=True)
class RequestRecord:
    """One request the server received, for assertions."""

    method: str
    path: str
    query: dict[str, str]
    content_type: str
    body: Any


class WatchRecord(dict[str, Any]):
    """One watch request: its query parameters, plus `resource` and `namespace` (None for a
    watch across all namespaces), readable as keys or as attributes."""

    def __init__(self, resource: str, namespace: str | None, params: Mapping[str, str]) -> None:
        super().__init__(params)
        self["resource"] = resource
        self["namespace"] = namespace
        self._params = dict(params)

    @property
    def resource(self) -> str:
        return str(self["resource"])

    @property
    def namespace(self) -> str | None:
        value = self["namespace"]
        return None if value is None else str(value)

    @property
    def params(self) -> dict[str, str]:
        """The query parameters alone."""
        return dict(self._params)


@dataclass
class Fault:
    """A scripted failure or delay for requests matching `method` and the `path` pattern."""

    method: str | None
    path: re.Pattern[str] | None
    status: int | None
    count: int | None
    reason: str | None
    message: str | None
    delay: float
    disconnect: bool
    retry_after: int | None
    late: float = 0.0
    hits: int = 0

    def matches(self, method: str, path: str, path_qs: str) -> bool:
        if self.count is not None and self.hits >= self.count:
            return False
        if self.method is not None and self.method.upper() != method:
            return False
        return self.path is None or bool(self.path.search(path) or self.path.search(path_qs))

    @property
    def exhausted(self) -> bool:
        return self.count is not None and self.hits >= self.count


@dataclass
class _Event:
    rv: int
    type: str
    resource: str
    namespace: str
    name: str
    obj: dict[str, Any]
    prev: dict[str, Any] | None


@dataclass(eq=False)
class _Watch:
    resource: Resource
    namespace: str | None
    labels: LabelSelector
    fields: FieldSelector
    request: web.Request
    queue: asyncio.Queue[dict[str, Any] | None] = field(default_factory=asyncio.Queue)


@dataclass
class _ContainerLog:
    lines: list[tuple[int, str]] = field(default_factory=list)
    previous: list[tuple[int, str]] = field(default_factory=list)


class FakeKube:
    """An in-memory Kubernetes API server on 127.0.0.1 with hooks to play the controllers.

    Everything handed in or out is deep-copied, so callers can never change stored state.
    """

    def __init__(
        self,
        *,
        bookmark_interval: float = 1.0,
        history_limit: int = 10_000,
        gc_delay: float = 0.0,
        pod_termination_delay: float | None = 0.0,
        auto_pods: bool = False,
        owner_references_role: Mapping[str, Any] | None = None,
    ) -> None:
        self.bookmark_interval = bookmark_interval
        self.history_limit = history_limit
        self.gc_delay = gc_delay
        self.pod_termination_delay = pod_termination_delay
        self.auto_pods = auto_pods
        # The Role every requester holds, for the admission plugin OwnerReferencesPermissionEnforcement;
        # None: the plugin is off (upstream's default) and owner references are not checked.
        self.owner_references_role = owner_references_role
        self.requests: list[RequestRecord] = []
        self.open_watches: dict[tuple[str, str | None], int] = {}
        self.watch_requests: list[WatchRecord] = []
        self._store: dict[str, dict[tuple[str, str], dict[str, Any]]] = {plural: {} for plural in RESOURCES}
        self._rv = 0
        self._compacted = 0
        self._history: list[_Event] = []
        self._watches: list[_Watch] = []
        self._streams: dict[int, web.Request] = {}
        self._faults: list[Fault] = []
        self._latency = 0.0
        self._logs: dict[tuple[str, str], _ContainerLog] = {}
        self._changed = asyncio.Event()
        self._reconcile_handle: asyncio.Handle | None = None
        self._reconciling = False
        # The Job controller's work list and indexes, kept by _commit, so that a write costs the
        # same with a thousand Jobs as with one: Jobs whose counts may have changed, each Job's
        # key by uid, and the keys of the pods each Job controls.
        self._dirty_jobs: set[tuple[str, str]] = set()
        self._job_keys: dict[str, tuple[str, str]] = {}
        self._pods_of_job: dict[str, set[tuple[str, str]]] = {}
        self._kubelet_handles: set[asyncio.TimerHandle] = set()
        self._refused_pods: dict[tuple[str, str], str] = {}  # (namespace, Job) -> why
        self._runner: web.AppRunner | None = None
        self._port = 0
        self._create_namespace("default")
        for name in ("kube-system", "kube-public", "kube-node-lease"):
            self._create_namespace(name)

    # ------------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Listen on an ephemeral loopback port."""
        app = web.Application(client_max_size=MAX_BODY_BYTES + 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, handler_cancellation=True, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        sockets = getattr(server, "sockets", None) or []
        self._port = sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Cut open streams, cancel pending controller work and stop listening."""
        for request in list(self._streams.values()):
            if request.transport is not None:
                request.transport.abort()
        if self._reconcile_handle is not None:
            self._reconcile_handle.cancel()
            self._reconcile_handle = None
        for handle in self._kubelet_handles:
            handle.cancel()
        self._kubelet_handles.clear()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    def write_kubeconfig(self, path: str | Path, namespace: str = "default") -> Path:
        """A kubeconfig without credentials whose one context, `fake`, points here."""
        target = Path(path)
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "fake", "user": {}}],
            "contexts": [
                {"name": "fake", "context": {"cluster": "fake", "user": "fake", "namespace": namespace}}
            ],
            "current-context": "fake",
            "preferences": {},
        }
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(yaml.safe_dump(config, sort_keys=False))
        return target

    # --------------------------------------------------------------------- inspection

    @property
    def resource_version(self) -> str:
        """The current global resourceVersion."""
        return str(self._rv)

    def objects(self, kind: str, namespace: str | None = None) -> list[dict[str, Any]]:
        """Stored objects of a kind (any spelling: `Job`, `jobs`, `job`), in etcd key order."""
        resource = kinds.resolve(kind)
        items = [
            copy.deepcopy(obj)
            for (ns, _), obj in self._store[resource.plural].items()
            if namespace is None or ns == namespace
        ]
        return sorted(items, key=lambda o: _sort_key(_meta(o).get("namespace", ""), _meta(o)["name"]))

    def get(self, kind: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        resource = kinds.resolve(kind)
        obj = self._store[resource.plural].get(((namespace or "") if resource.namespaced else "", name))
        return copy.deepcopy(obj) if obj is not None else None

    def put(self, kind: str, obj: Mapping[str, Any]) -> dict[str, Any]:
        """Store an object as a controller would, skipping validation; fills identity fields."""
        resource = kinds.resolve(kind)
        new = copy.deepcopy(dict(obj))
        new["kind"], new["apiVersion"] = resource.kind, resource.api_version
        meta = new.setdefault("metadata", {})
        namespace = meta.get("namespace", "default") if resource.namespaced else ""
        if resource.namespaced:
            meta["namespace"] = namespace
        key = (namespace, meta["name"])
        old = self._store[resource.plural].get(key)
        meta.setdefault("uid", _meta(old).get("uid") if old else str(uuid.uuid4()))
        meta.setdefault("creationTimestamp", _meta(old).get("creationTimestamp") if old else _ts(_now()))
        return self._commit(resource, key, new, "MODIFIED" if old else "ADDED")

    async def wait_until(self, predicate: Callable[[], bool], within: float = 5.0) -> None:
        """Wait until `predicate()` holds, re-checking on every change; TimeoutError after `within` s."""
        async with asyncio.timeout(within):
            while not predicate():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), 0.05)

    async def wait_for_watches(
        self, kind: str, namespace: str | None, count: int = 1, within: float = 5.0
    ) -> None:
        """Wait until at least `count` watches on that collection are open."""
        key = (kinds.resolve(kind).plural, namespace)
        try:
            await self.wait_until(lambda: self.open_watches.get(key, 0) >= count, within)
        except TimeoutError:
            raise TimeoutError(f"{count} watch(es) on {key} not open; open: {self.open_watches}") from None

    async def settle(self, within: float = 5.0) -> None:
        """Wait until the garbage collector and the fake kubelet have nothing left to do."""
        deadline = time.monotonic() + within
        while self._reconcile_handle is not None or self._kubelet_handles:
            if time.monotonic() > deadline:
                raise TimeoutError("controllers did not settle")
            await asyncio.sleep(0.005)

    # ---------------------------------------------------------------------- fault hooks

    def inject_fault(
        self,
        method: str | None = None,
        path: str | None = None,
        status: int | None = 500,
        count: int | None = 1,
        reason: str | None = None,
        message: str | None = None,
        delay: float = 0.0,
        *,
        disconnect: bool = False,
        retry_after: int | None = None,
        late: float = 0.0,
    ) -> Fault:
        """Make the next `count` matching requests (None: all) fail, stall, drop the connection,
        or (`late`) be carried out at once but answered only `late` seconds after.

        `path` is a regular expression searched in the request path, and failing that in the path
        with its query string (so `r"/jobs$"` matches a list with a labelSelector, and `r"watch="`
        any watch). `status=None` with a `delay` only adds latency; `disconnect=True` closes the
        connection without answering.
        """
        fault = Fault(
            method=method,
            path=re.compile(path) if path is not None else None,
            status=status,
            count=count,
            reason=reason,
            message=message,
            delay=delay,
            disconnect=disconnect,
            retry_after=retry_after,
            late=late,
        )
        self._faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        self._faults.clear()

    def set_latency(self, seconds: float) -> None:
        """Delay every request by `seconds` before it is handled."""
        self._latency = seconds

    def drop_watches(self, *, abrupt: bool = True) -> int:
        """End every open watch: `abrupt` cuts the connection mid-stream, else the stream ends cleanly."""
        count = 0
        for watch in list(self._watches):
            count += 1
            if abrupt:
                if watch.request.transport is not None:
                    watch.request.transport.abort()
            else:
                watch.queue.put_nowait(None)
        return count

    def compact(self) -> int:
        """Forget the event history: every resourceVersion below the current one becomes too old."""
        self._compacted = self._rv
        self._history.clear()
        return self._compacted

    # ------------------------------------------------------------- controller hooks

    def refuse_pods(self, namespace: str, job_name: str, problem: str | None) -> None:
        """Refuse the Job's pods as a ResourceQuota, the RuntimeClass admission plugin or a
        webhook does (403 `pods "<name>" is forbidden: <problem>`); None admits them again.

        While refused, each attempt of the Job controller (`create_job_pod`, or `auto_pods`)
        fails and records a Warning Event `FailedCreate` on the Job, `Error creating: <error>`."""
        if problem is None:
            self._refused_pods.pop((namespace, job_name), None)
        else:
            self._refused_pods[(namespace, job_name)] = problem

    def record_event(
        self,
        involved: Mapping[str, Any],
        type: str,
        reason: str,
        message: str,
        component: str = "job-controller",
    ) -> dict[str, Any]:
        """A core/v1 Event about `involved`, written as client-go's recorder does: an event like
        one already there (same source, object, type, reason and message) counts up instead."""
        meta = _meta(involved)
        namespace = meta.get("namespace", "")
        reference = {
            "kind": involved.get("kind", ""),
            "namespace": namespace,
            "name": meta["name"],
            "uid": meta.get("uid", ""),
            "apiVersion": involved.get("apiVersion", ""),
            "resourceVersion": meta.get("resourceVersion", ""),
        }
        events = RESOURCES["events"]
        now = _ts(_now())
        for key, existing in self._store["events"].items():
            same = {k: existing["involvedObject"].get(k) for k in ("kind", "name", "uid", "apiVersion")}
            if (
                key[0] == namespace
                and same == {k: reference[k] for k in same}
                and (existing.get("type"), existing.get("reason"), existing.get("message"))
                == (type, reason, message)
                and (existing.get("source") or {}).get("component") == component
            ):
                updated = copy.deepcopy(existing)
                updated["count"] = int(existing.get("count") or 1) + 1
                updated["lastTimestamp"] = now
                return self._commit(events, key, updated, "MODIFIED")
        name = f"{meta['name']}.{time.time_ns():x}"
        event = {
            "kind": "Event",
            "apiVersion": "v1",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "uid": str(uuid.uuid4()),
                "creationTimestamp": now,
            },
            "involvedObject": reference,
            "reason": reason,
            "message": message,
            "source": {"component": component},
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
            "type": type,
            "reportingComponent": component,
            "reportingInstance": "",
        }
        return self._commit(events, (namespace, name), event, "ADDED")

    def create_job_pod(
        self, namespace: str, job_name: str, node: str | None = "node-1", *, name: str | None = None
    ) -> dict[str, Any]:
        """Create a pod for the Job as the Job controller and scheduler would; a refused pod
        (`refuse_pods`) raises the API server's KubeError after the controller's Event."""
        jobs = RESOURCES["jobs"]
        job = self._require(jobs, namespace, job_name)
        template = copy.deepcopy(job["spec"]["template"])
        template_meta = template.get("metadata") or {}
        pod_name = name or _generate_name(f"{job_name}-")
        problem = self._refused_pods.get((namespace, job_name))
        if problem is not None:
            # The name is generated before admission runs, so the message names the pod.
            refused = errors.forbidden(RESOURCES["pods"], pod_name, problem)
            self.record_event(job, "Warning", "FailedCreate", f"Error creating: {refused.message}")
            raise refused
        spec = template.get("spec") or {}
        kinds.default_pod_spec(spec, for_pod=True)
        now = _ts(_now())
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

    def set_pod_unschedulable(
        self, namespace: str, pod: str, message: str = "0/1 nodes are available: 1 Insufficient cpu."
    ) -> dict[str, Any]:
        """Record the scheduler's verdict: PodScheduled=False, reason Unschedulable."""
        obj = self._require(RESOURCES["pods"], namespace, pod)
        status = obj.setdefault("status", {})
        self._set_condition(status, "PodScheduled", "False", "Unschedulable", message)
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
        self._set_condition(
            job_status, type, status, reason or default_reason, message or default_message, probe=True
        )
        if status == "True" and type in ("Complete", "Failed"):
            job_status.pop("active", None)
            job_status["ready"] = 0
            if type == "Complete":
                completions = obj["spec"].get("completions") or 1
                job_status["succeeded"] = max(job_status.get("succeeded", 0), completions)
                job_status["completionTime"] = _ts(_now())
            else:
                job_status["failed"] = max(job_status.get("failed", 0), 1)
        return self._commit(jobs, (namespace, job), obj, "MODIFIED")

    def write_log(self, namespace: str, pod: str, container: str, text: str) -> None:
        """Append to a container's log; followers receive it."""
        obj = self._require(RESOURCES["pods"], namespace, pod)
        if container not in self._container_names(obj):
            raise KeyError(f"pod {pod} has no container {container!r}")
        log = self._logs.setdefault((obj["metadata"]["uid"], container), _ContainerLog())
        stamp = time.time_ns()
        for line in text.splitlines(keepends=True):
            log.lines.append((stamp, line))
            stamp += 1
        self._notify()

    def complete_pod_deletion(self, namespace: str, pod: str) -> None:
        """Play the kubelet finishing a graceful pod deletion (when `pod_termination_delay` is None)."""
        obj = self._require(RESOURCES["pods"], namespace, pod)
        self._kubelet_finish(namespace, pod, obj["metadata"]["uid"])

    def create_object(self, kind: str, namespace: str | None, obj: Mapping[str, Any]) -> dict[str, Any]:
        """Create an object exactly as a POST would (defaults, validation); raises KubeError."""
        resource = kinds.resolve(kind)
        body = kinds.prune_nulls(copy.deepcopy(dict(obj)))
        return self._create_object(resource, (namespace or "") if resource.namespaced else "", body)

    def delete_object(
        self,
        kind: str,
        namespace: str | None,
        name: str,
        *,
        propagation_policy: str | None = None,
        grace_period_seconds: int | None = None,
    ) -> dict[str, Any]:
        """Delete as a DELETE request would (finalizers, graceful pods, garbage collection);
        returns the object as the server would. Raises KubeError when it does not exist."""
        resource = kinds.resolve(kind)
        key = ((namespace or "") if resource.namespaced else "", name)
        if key not in self._store[resource.plural]:
            raise errors.not_found(resource, name)
        options: dict[str, Any] = {}
        if propagation_policy is not None:
            options["propagationPolicy"] = propagation_policy
        obj, _ = self._delete_object(
            resource, key, policy=self._policy(resource, options), grace=grace_period_seconds
        )
        return obj

    def delete_pod(self, namespace: str, pod: str, grace_period_seconds: int = 0) -> dict[str, Any]:
        """A pod vanishes (force-deleted, node lost, evicted); with a grace period it terminates first."""
        return self.delete_object("pods", namespace, pod, grace_period_seconds=grace_period_seconds)

    def delete_job(self, namespace: str, job: str, propagation_policy: str = "Background") -> dict[str, Any]:
        """Someone deletes the Job, by default as `kubectl delete job` does (pods collected)."""
        return self.delete_object("jobs", namespace, job, propagation_policy=propagation_policy)

    # ------------------------------------------------------------------------- storage

    def _require(self, resource: Resource, namespace: str | None, name: str) -> dict[str, Any]:
        obj = self._store[resource.plural].get(((namespace or "") if resource.namespaced else "", name))
        if obj is None:
            raise errors.not_found(resource, name)
        return copy.deepcopy(obj)

    def _create_namespace(self, name: str) -> None:
        namespace = {"kind": "Namespace", "apiVersion": "v1", "metadata": {"name": name}}
        meta = namespace["metadata"]
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = _ts(_now())
        kinds.prepare_create(RESOURCES["namespaces"], namespace)
        self._commit(RESOURCES["namespaces"], ("", name), namespace, "ADDED")

    def _commit(
        self, resource: Resource, key: tuple[str, str], new: dict[str, Any] | None, event_type: str
    ) -> dict[str, Any]:
        """The single write path: bump the resourceVersion, store, record history, notify."""
        table = self._store[resource.plural]
        prev = table.get(key)
        self._rv += 1
        if new is None:
            assert prev is not None
            obj = copy.deepcopy(prev)
            obj["metadata"]["resourceVersion"] = str(self._rv)
            del table[key]
            if resource.plural == "pods":
                uid = prev["metadata"]["uid"]
                for log_key in [k for k in self._logs if k[0] == uid]:
                    del self._logs[log_key]
        else:
            obj = copy.deepcopy(new)
            obj.setdefault("metadata", {})["resourceVersion"] = str(self._rv)
            obj = kinds.canonical(resource, obj)
            table[key] = obj
        self._index(resource.plural, key, prev, None if new is None else obj)
        event = _Event(self._rv, event_type, resource.plural, key[0], key[1], obj, prev)
        self._history.append(event)
        if len(self._history) > self.history_limit:
            dropped = self._history[: len(self._history) - self.history_limit]
            del self._history[: len(dropped)]
            self._compacted = dropped[-1].rv
        for watch in list(self._watches):
            message = self._watch_event(watch, event)
            if message is not None:
                watch.queue.put_nowait(message)
        self._notify()
        self._schedule_reconcile()
        return copy.deepcopy(obj)

    def _index(
        self,
        plural: str,
        key: tuple[str, str],
        prev: dict[str, Any] | None,
        new: dict[str, Any] | None,
    ) -> None:
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
                for ref in (_meta(obj).get("ownerReferences") or []) if obj is not None else []:
                    if ref.get("kind") == "Job" and ref.get("controller"):
                        self._dirty_jobs.add((key[0], ref["uid"]))
                        pods = self._pods_of_job.setdefault(ref["uid"], set())
                        if obj is new:
                            pods.add(key)
                        else:
                            pods.discard(key)

    def _notify(self) -> None:
        """Wake log followers; they re-check pods and logs."""
        self._changed.set()
        self._changed = asyncio.Event()

    def _state_at(self, resource: Resource, rv: int) -> dict[tuple[str, str], dict[str, Any]]:
        """The collection as it was at `rv`, undoing later events from the history."""
        state = dict(self._store[resource.plural])
        for event in reversed(self._history):
            if event.rv <= rv:
                break
            if event.resource != resource.plural:
                continue
            key = (event.namespace, event.name)
            if event.prev is None:
                state.pop(key, None)
            else:
                state[key] = event.prev
        return state

    # ---------------------------------------------------------------------- HTTP entry

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        self.requests.append(
            RequestRecord(
                request.method,
                request.path,
                dict(request.query.items()),
                request.headers.get("Content-Type", ""),
                _parse_logged_body(raw),
            )
        )
        if self._latency:
            await asyncio.sleep(self._latency)
        fault = next(
            (f for f in self._faults if f.matches(request.method, request.path, request.path_qs)), None
        )
        if fault is not None:
            fault.hits += 1
            if fault.exhausted:
                self._faults.remove(fault)
            if fault.delay:
                await asyncio.sleep(fault.delay)
            if fault.disconnect:
                if request.transport is not None:
                    request.transport.abort()
                await asyncio.sleep(5)
                return web.Response(status=500)
            if fault.status:
                return self._fault_response(fault)
        try:
            if len(raw) > MAX_BODY_BYTES:
                raise KubeError(
                    413, "RequestEntityTooLarge", f"Request entity too large: limit is {MAX_BODY_BYTES}"
                )
            response = await self._route(request, raw)
        except KubeError as error:
            response = self._error_response(error)
        if fault is not None and fault.late:
            await asyncio.sleep(fault.late)  # done already; only the answer is slow
        return response

    def _fault_response(self, fault: Fault) -> web.Response:
        status = fault.status or 500
        reason = fault.reason or errors.DEFAULT_REASONS.get(status, "InternalError")
        message = fault.message
        if message is None:
            message = {
                500: "Internal error occurred: injected fault",
                503: "the server is currently unable to handle the request",
                429: "Too many requests, please try again later.",
                504: "Timeout: request did not complete within the allotted timeout",
            }.get(status, f"injected {status} fault")
        details: dict[str, Any] | None = None
        headers: dict[str, str] = {}
        if fault.retry_after is not None:
            details = {"retryAfterSeconds": fault.retry_after}
            headers["Retry-After"] = str(fault.retry_after)
        return self._error_response(KubeError(status, reason, message, details, headers=headers))

    def _json(self, obj: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
        response = web.Response(body=_dumps(obj), status=status, content_type="application/json")
        response.headers["Audit-Id"] = str(uuid.uuid4())
        response.headers["Cache-Control"] = "no-cache, private"
        for key, value in (headers or {}).items():
            response.headers[key] = value
        return response

    def _error_response(self, error: KubeError) -> web.Response:
        return self._json(error.status(), error.code, error.headers)

    async def _route(self, request: web.Request, raw: bytes) -> web.StreamResponse:
        segments = [s for s in request.path.split("/") if s]
        method = request.method
        if segments in (["version"],):
            return self._json(VERSION_INFO)
        if len(segments) == 1 and segments[0] in ("healthz", "readyz", "livez"):
            return web.Response(text="ok", content_type="text/plain")
        if segments == ["api"]:
            return self._json(
                {
                    "kind": "APIVersions",
                    "versions": ["v1"],
                    "serverAddressByClientCIDRs": [
                        {"clientCIDR": "0.0.0.0/0", "serverAddress": f"127.0.0.1:{self._port}"}
                    ],
                }
            )
        if segments == ["apis"]:
            return self._json(self._group_list())
        if segments[:2] == ["api", "v1"]:
            group_version, rest = "v1", segments[2:]
        elif (
            len(segments) >= 3 and segments[0] == "apis" and f"{segments[1]}/{segments[2]}" in GROUP_VERSIONS
        ):
            group_version, rest = f"{segments[1]}/{segments[2]}", segments[3:]
        else:
            raise errors.resource_not_found()
        if not rest:
            if method != "GET":
                raise errors.method_not_allowed()
            return self._json(self._resource_list(group_version))
        served = GROUP_VERSIONS[group_version]
        namespace: str | None
        if len(rest) >= 3 and rest[0] == "namespaces" and rest[2] in served and RESOURCES[rest[2]].namespaced:
            namespace, plural, tail = rest[1], rest[2], rest[3:]
            if len(tail) > 2:
                raise errors.resource_not_found()
        else:
            namespace, plural, tail = None, rest[0], rest[1:]
            if plural not in served or len(tail) > 2 or (RESOURCES[plural].namespaced and tail):
                raise errors.resource_not_found()
        resource = RESOURCES[plural]
        name = tail[0] if tail else None
        sub = tail[1] if len(tail) > 1 else None
        if sub is not None and sub not in resource.subresources:
            raise errors.resource_not_found()
        params = dict(request.query.items())
        if name is None:
            if method == "GET":
                if _parse_bool(params, "watch"):
                    return await self._watch(request, resource, namespace, params)
                return self._json(self._list(resource, namespace, params))
            if method == "POST" and (namespace is not None or not resource.namespaced):
                return await self._create(request, resource, namespace or "", params, raw)
            if method == "DELETE" and (namespace is not None or not resource.namespaced):
                return self._delete_collection(request, resource, namespace or "", params, raw)
            raise errors.method_not_allowed()
        ns = namespace or ""
        if sub == "log":
            if method != "GET":
                raise errors.method_not_allowed()
            return await self._pod_log(request, ns, name, params)
        if method == "GET":
            return self._json(self._require(resource, ns, name))
        if method == "PUT":
            body = self._decode_body(request, resource, raw)
            obj, code = self._update(
                resource, ns, name, body, status=sub == "status", dry_run="dryRun" in params
            )
            return self._json(obj, code)
        if method == "PATCH":
            return self._patch(request, resource, ns, name, params, raw, status=sub == "status")
        if method == "DELETE" and sub is None:
            return self._delete_request(request, resource, ns, name, params, raw)
        raise errors.method_not_allowed()

    def _group_list(self) -> dict[str, Any]:
        groups = []
        for group_version in GROUP_VERSIONS:
            if "/" not in group_version:
                continue
            group, version = group_version.split("/")
            entry = {"groupVersion": group_version, "version": version}
            groups.append({"name": group, "versions": [entry], "preferredVersion": entry})
        return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}

    def _resource_list(self, group_version: str) -> dict[str, Any]:
        resources: list[dict[str, Any]] = []
        for plural in sorted(GROUP_VERSIONS[group_version]):
            resource = RESOURCES[plural]
            verbs = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
            resources.append(
                {
                    "name": plural,
                    "singularName": resource.singular,
                    "namespaced": resource.namespaced,
                    "kind": resource.kind,
                    "verbs": verbs,
                }
            )
            for sub in sorted(resource.subresources):
                resources.append(
                    {
                        "name": f"{plural}/{sub}",
                        "singularName": "",
                        "namespaced": resource.namespaced,
                        "kind": "Pod" if sub == "log" else resource.kind,
                        "verbs": ["get"] if sub == "log" else ["get", "patch", "update"],
                    }
                )
        return {
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": group_version,
            "resources": resources,
        }

    # ------------------------------------------------------------------------ decoding

    def _decode_body(self, request: web.Request, resource: Resource, raw: bytes) -> dict[str, Any]:
        content_type = (request.content_type or "application/json").lower()
        if not raw.strip():
            raise errors.cannot_decode(resource, "unexpected end of JSON input")
        try:
            if content_type in ("application/json", "*/*", "application/octet-stream"):
                body = json.loads(raw)
            elif content_type in ("application/yaml", "application/x-yaml", "text/yaml"):
                body = yaml.safe_load(raw)
            else:
                raise errors.unsupported_media_type(BODY_TYPES)
        except (ValueError, yaml.YAMLError) as error:
            raise errors.cannot_decode(resource, f"error decoding body: {error}") from None
        if not isinstance(body, dict):
            raise errors.cannot_decode(
                resource, f"json: cannot unmarshal {type(body).__name__} into Go value of type struct"
            )
        kind, api_version = body.get("kind"), body.get("apiVersion")
        if api_version and api_version != resource.api_version:
            raise errors.bad_request(
                f"the API version in the data ({api_version}) does not match the expected API version "
                f"({resource.api_version})"
            )
        if kind and kind != resource.kind:
            raise errors.bad_request(
                f"the kind in the data ({kind}) does not match the expected kind ({resource.kind})"
            )
        result = kinds.prune_nulls(body)
        assert isinstance(result, dict)
        return result

    def _decode_fields(self, resource: Resource, obj: dict[str, Any]) -> None:
        """Checks Go's decoder makes, plus the conversions (stringData) it performs."""
        try:
            kinds.check_types(resource, obj)
            if resource.plural == "secrets":
                kinds.decode_secret(obj)
            elif resource.plural == "configmaps":
                kinds.decode_configmap(obj)
            kinds.normalize_times(resource, obj)
        except DecodeError as error:
            raise errors.cannot_decode(resource, str(error)) from None

    # -------------------------------------------------------------------------- create

    async def _create(
        self, request: web.Request, resource: Resource, namespace: str, params: dict[str, str], raw: bytes
    ) -> web.Response:
        body = self._decode_body(request, resource, raw)
        obj = self._create_object(resource, namespace, body, dry_run="dryRun" in params)
        return self._json(obj, 201)

    def _create_object(
        self, resource: Resource, namespace: str, body: dict[str, Any], *, dry_run: bool = False
    ) -> dict[str, Any]:
        obj = copy.deepcopy(body)
        obj["kind"], obj["apiVersion"] = resource.kind, resource.api_version
        if not isinstance(obj.get("metadata", {}), dict):
            raise errors.cannot_decode(
                resource, "json: cannot unmarshal into Go struct field .metadata of type v1.ObjectMeta"
            )
        meta = obj.setdefault("metadata", {})
        if resource.namespaced:
            if meta.get("namespace") and meta["namespace"] != namespace:
                raise errors.bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request"
                )
            meta["namespace"] = namespace
            self._check_namespace(resource, namespace, meta.get("name") or meta.get("generateName") or "")
        else:
            meta.pop("namespace", None)
        if meta.get("resourceVersion"):
            raise errors.internal("resourceVersion should not be set on objects to be created")
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = _generate_name(meta["generateName"])
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = _ts(_now())
        for key in (
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "selfLink",
            "managedFields",
            "generation",
        ):
            meta.pop(key, None)
        self._decode_fields(resource, obj)
        name = meta.get("name") or ""
        self._admit_owner_references(resource, name, obj, None)
        kinds.prepare_create(resource, obj)
        problems = kinds.validate(resource, obj)
        if problems:
            raise errors.invalid(resource, name, problems)
        key = (namespace if resource.namespaced else "", name)
        if key in self._store[resource.plural]:
            raise errors.already_exists(resource, name)
        if dry_run:
            return kinds.canonical(resource, obj)
        return self._commit(resource, key, obj, "ADDED")

    def _check_namespace(self, resource: Resource, namespace: str, name: str) -> None:
        ns = self._store["namespaces"].get(("", namespace))
        if ns is None:
            raise errors.not_found(RESOURCES["namespaces"], namespace)
        if _meta(ns).get("deletionTimestamp"):
            message = f"unable to create new content in namespace {namespace} because it is being terminated"
            raise KubeError(
                403,
                "Forbidden",
                f"{resource.qualified} {errors.quoted(name)} is forbidden: {message}",
                errors.details(
                    resource,
                    name,
                    causes=[
                        {"reason": "NamespaceTerminating", "message": message, "field": "metadata.namespace"}
                    ],
                ),
            )

    def _admit_owner_references(
        self, resource: Resource, name: str, new: Mapping[str, Any], old: Mapping[str, Any] | None
    ) -> None:
        """OwnerReferencesPermissionEnforcement (plugin/pkg/admission/gc): changing an object's
        owner references needs `delete` on the object (on update), and each reference that newly
        sets blockOwnerDeletion needs `update` on its owner's `finalizers` subresource."""
        role = self.owner_references_role
        if role is None:
            return
        refs = _meta(new).get("ownerReferences") or []
        old_refs = (_meta(old).get("ownerReferences") or []) if old is not None else []
        if refs == old_refs:
            return
        if old is not None and not rbac.allows(role, "delete", resource.group, resource.plural, name=name):
            raise errors.forbidden(
                resource, name, "cannot set an ownerRef on a resource you can't delete: , <nil>"
            )
        blocking_before = {r.get("uid") for r in old_refs if r.get("blockOwnerDeletion") is True}
        for ref in refs:
            if ref.get("blockOwnerDeletion") is not True or ref.get("uid") in blocking_before:
                continue
            api_version, kind = str(ref.get("apiVersion", "")), str(ref.get("kind", ""))
            owner = next(
                (r for r in RESOURCES.values() if r.api_version == api_version and r.kind == kind), None
            )
            if owner is None:
                raise errors.forbidden(
                    resource,
                    name,
                    "cannot set blockOwnerDeletion in this case because cannot find RESTMapping for "
                    f'APIVersion {api_version} Kind {kind}: no matches for kind "{kind}" in version '
                    f'"{api_version}"',
                )
            if not rbac.allows(
                role, "update", owner.group, owner.plural, "finalizers", name=str(ref.get("name", ""))
            ):
                raise errors.forbidden(
                    resource,
                    name,
                    "cannot set blockOwnerDeletion if an ownerReference refers to a resource you can't "
                    "set finalizers on: , <nil>",
                )

    # -------------------------------------------------------------------------- update

    def _update(
        self,
        resource: Resource,
        namespace: str,
        name: str,
        body: dict[str, Any],
        *,
        status: bool = False,
        dry_run: bool = False,
    ) -> tuple[dict[str, Any], int]:
        """PUT semantics (also the tail of PATCH): optimistic concurrency, strategy, validation."""
        if not isinstance(body.get("metadata", {}), dict):
            raise errors.cannot_decode(
                resource, "json: cannot unmarshal into Go struct field .metadata of type v1.ObjectMeta"
            )
        meta = body.setdefault("metadata", {})
        if meta.get("name") and meta["name"] != name:
            raise errors.bad_request(
                f"the name of the object ({meta['name']}) does not match the name on the URL ({name})"
            )
        if resource.namespaced and meta.get("namespace") and meta["namespace"] != namespace:
            raise errors.bad_request(
                "the namespace of the provided object does not match the namespace sent on the request"
            )
        key = (namespace if resource.namespaced else "", name)
        old = self._store[resource.plural].get(key)
        if old is None:
            if resource.allow_create_on_update and not status:
                meta["name"] = name
                meta.pop("resourceVersion", None)
                return self._create_object(resource, namespace, body, dry_run=dry_run), 201
            raise errors.not_found(resource, name)
        old_meta = old["metadata"]
        requested = meta.get("resourceVersion")
        if not requested:
            if not resource.allow_unconditional_update:
                raise KubeError(
                    422,
                    "Invalid",
                    f"{resource.qualified} {errors.quoted(name)} is invalid: metadata.resourceVersion: "
                    "Invalid value: 0x0: must be specified for an update",
                    errors.details(
                        resource,
                        name,
                        causes=[
                            {
                                "reason": "FieldValueInvalid",
                                "message": "Invalid value: 0x0: must be specified for an update",
                                "field": "metadata.resourceVersion",
                            }
                        ],
                    ),
                )
        elif str(requested) != old_meta["resourceVersion"]:
            if not str(requested).isdigit():
                raise errors.bad_request(f'invalid resource version "{requested}"')
            raise errors.conflict(resource, name)
        new = copy.deepcopy(body)
        new["kind"], new["apiVersion"] = resource.kind, resource.api_version
        new_meta = new["metadata"]
        new_meta["name"] = name
        if resource.namespaced:
            new_meta["namespace"] = namespace
        if new_meta.get("uid") and new_meta["uid"] != old_meta["uid"]:
            raise errors.conflict(
                resource,
                name,
                f"Precondition failed: UID in precondition: {new_meta['uid']}, "
                f"UID in object meta: {old_meta['uid']}",
            )
        new_meta["uid"] = old_meta["uid"]
        new_meta["creationTimestamp"] = old_meta["creationTimestamp"]
        new_meta["resourceVersion"] = old_meta["resourceVersion"]
        for key_name in ("deletionTimestamp", "deletionGracePeriodSeconds"):
            if key_name in old_meta:
                new_meta[key_name] = old_meta[key_name]
            else:
                new_meta.pop(key_name, None)
        new_meta.pop("selfLink", None)
        new_meta.pop("managedFields", None)
        self._decode_fields(resource, new)
        if not (status and resource.plural == "pods"):  # the plugin lets pods/status through
            self._admit_owner_references(resource, name, new, old)
        kinds.prepare_update(resource, new, old, status=status)
        problems = kinds.validate_update(resource, new, old, status=status)
        if problems:
            raise errors.invalid(resource, name, problems)
        new = kinds.canonical(resource, new)
        if new == old:
            return copy.deepcopy(old), 200
        if dry_run:
            return new, 200
        if (
            new_meta.get("deletionTimestamp")
            and not new_meta.get("finalizers")
            and not new_meta.get("deletionGracePeriodSeconds")
        ):
            # The registry deletes instead of writing an object whose last finalizer is gone.
            self._commit(resource, key, None, "DELETED")
            return copy.deepcopy(old), 200
        return self._commit(resource, key, new, "MODIFIED"), 200

    # --------------------------------------------------------------------------- patch

    def _patch(
        self,
        request: web.Request,
        resource: Resource,
        namespace: str,
        name: str,
        params: dict[str, str],
        raw: bytes,
        *,
        status: bool,
    ) -> web.Response:
        content_type = (request.content_type or "").lower()
        if content_type not in PATCH_TYPES:
            raise errors.unsupported_media_type(PATCH_TYPES)
        dry_run = "dryRun" in params
        key = (namespace if resource.namespaced else "", name)
        old = self._store[resource.plural].get(key)
        if content_type == "application/apply-patch+yaml":
            if not params.get("fieldManager"):
                raise errors.bad_request(
                    "PATCH requests with the apply content type must specify a field manager"
                )
            try:
                patch_body = yaml.safe_load(raw)
            except yaml.YAMLError as error:
                raise errors.bad_request(f"error decoding YAML: {error}") from None
            if not isinstance(patch_body, dict):
                raise errors.bad_request("error decoding YAML: expected an object")
            patch_body = kinds.prune_nulls(patch_body)
            if old is None:
                if status:
                    raise errors.not_found(resource, name)
                patch_body.setdefault("metadata", {})["name"] = name
                return self._json(self._create_object(resource, namespace, patch_body, dry_run=dry_run), 201)
            patched = patching.strategic_merge_patch(copy.deepcopy(old), patch_body)
        else:
            if old is None:
                raise errors.not_found(resource, name)
            try:
                patch_body = json.loads(raw) if raw.strip() else None
            except ValueError as error:
                raise errors.bad_request(f"error decoding patch: {error}") from None
            try:
                if content_type == "application/json-patch+json":
                    patched = patching.json_patch(copy.deepcopy(old), patch_body)
                elif content_type == "application/merge-patch+json":
                    if not isinstance(patch_body, dict):
                        raise patching.PatchError("merge patch must be a JSON object", code=400)
                    patched = patching.merge_patch(copy.deepcopy(old), patch_body)
                else:
                    patched = patching.strategic_merge_patch(copy.deepcopy(old), patch_body)
            except patching.PatchError as error:
                if error.code == 400:
                    raise errors.bad_request(str(error)) from None
                raise KubeError(
                    422, "Invalid", "the server rejected our request due to an error in our request", {}
                ) from None
        if not isinstance(patched, dict):
            raise KubeError(
                422, "Invalid", "the server rejected our request due to an error in our request", {}
            )
        patched = kinds.prune_nulls(patched)
        obj, code = self._update(resource, namespace, name, patched, status=status, dry_run=dry_run)
        return self._json(obj, code)

    # -------------------------------------------------------------------------- delete

    def _delete_options(self, request: web.Request, params: dict[str, str], raw: bytes) -> dict[str, Any]:
        """DeleteOptions from the body if there is one, else from the query (as the server does)."""
        if raw.strip():
            try:
                options = json.loads(raw)
            except ValueError as error:
                raise errors.bad_request(f"error decoding DeleteOptions: {error}") from None
            if not isinstance(options, dict):
                raise errors.bad_request("DeleteOptions must be an object")
            return options
        options: dict[str, Any] = {}
        if "propagationPolicy" in params:
            options["propagationPolicy"] = params["propagationPolicy"]
        if "gracePeriodSeconds" in params:
            options["gracePeriodSeconds"] = _parse_int(params, "gracePeriodSeconds")
        if "orphanDependents" in params:
            options["orphanDependents"] = _parse_bool(params, "orphanDependents")
        if "dryRun" in params:
            options["dryRun"] = [params["dryRun"]]
        return options

    def _delete_request(
        self,
        request: web.Request,
        resource: Resource,
        namespace: str,
        name: str,
        params: dict[str, str],
        raw: bytes,
    ) -> web.Response:
        options = self._delete_options(request, params, raw)
        policy = self._policy(resource, options)
        key = (namespace if resource.namespaced else "", name)
        if key not in self._store[resource.plural]:
            raise errors.not_found(resource, name)
        if resource.plural == "namespaces" and name in ("default", "kube-system", "kube-public"):
            raise KubeError(
                403,
                "Forbidden",
                f'namespaces "{name}" is forbidden: this namespace may not be deleted',
                errors.details(resource, name),
            )
        obj, deleted = self._delete_object(
            resource,
            key,
            policy=policy,
            grace=options.get("gracePeriodSeconds"),
            preconditions=options.get("preconditions") or {},
            dry_run=bool(options.get("dryRun")),
        )
        headers = {}
        if (
            resource.plural == "jobs"
            and "propagationPolicy" not in options
            and "orphanDependents" not in options
        ):
            headers["Warning"] = JOB_DELETE_WARNING
        code = 202 if not deleted and options.get("orphanDependents") is False else 200
        if deleted and resource.plural != "pods":
            body: dict[str, Any] = {
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Success",
                "details": {**errors.details(resource, name), "uid": obj["metadata"]["uid"]},
            }
            return self._json(body, code, headers)
        return self._json(obj, code, headers)

    def _policy(self, resource: Resource, options: Mapping[str, Any]) -> str:
        policy = options.get("propagationPolicy")
        orphan = options.get("orphanDependents")
        if policy is not None and orphan is not None:
            raise errors.invalid(
                resource,
                "",
                [
                    validation.invalid(
                        "propagationPolicy",
                        policy,
                        "orphanDependents and deletionPropagation cannot be both set",
                    )
                ],
            )
        if policy is None:
            if orphan is not None:
                return "Orphan" if orphan else "Background"
            return "Orphan" if resource.plural == "jobs" else "Background"
        if policy not in ("Orphan", "Background", "Foreground"):
            raise KubeError(
                422,
                "Invalid",
                f'DeleteOptions.meta.k8s.io "" is invalid: propagationPolicy: Unsupported value: "{policy}": '
                'supported values: "Foreground", "Background", "Orphan", "nil"',
                {"group": "meta.k8s.io", "kind": "DeleteOptions"},
            )
        return str(policy)

    def _delete_object(
        self,
        resource: Resource,
        key: tuple[str, str],
        *,
        policy: str,
        grace: int | None = None,
        preconditions: Mapping[str, Any] | None = None,
        dry_run: bool = False,
    ) -> tuple[dict[str, Any], bool]:
        """Delete like the generic registry: finalizers and graceful pods defer it. Returns the
        object (its state when deleted, or the updated one) and whether it is gone already."""
        obj = copy.deepcopy(self._store[resource.plural][key])
        meta = obj["metadata"]
        name = meta["name"]
        preconditions = preconditions or {}
        if preconditions.get("uid") and preconditions["uid"] != meta["uid"]:
            raise errors.conflict(
                resource,
                name,
                f"Precondition failed: UID in precondition: {preconditions['uid']}, "
                f"UID in object meta: {meta['uid']}",
            )
        if (
            preconditions.get("resourceVersion")
            and preconditions["resourceVersion"] != meta["resourceVersion"]
        ):
            raise errors.conflict(
                resource,
                name,
                "Precondition failed: ResourceVersion in precondition: "
                f"{preconditions['resourceVersion']}, "
                f"ResourceVersion in object meta: {meta['resourceVersion']}",
            )
        if dry_run:
            return obj, True
        period = 0
        if resource.plural == "pods":
            period = grace if grace is not None else obj["spec"].get("terminationGracePeriodSeconds", 30)
            if not obj["spec"].get("nodeName") or (obj.get("status") or {}).get("phase") in _TERMINAL:
                period = 0
            period = 1 if period < 0 else period
        if meta.get("deletionTimestamp"):
            if resource.plural == "pods" and period < meta.get("deletionGracePeriodSeconds", 0):
                if period == 0:
                    return self._finish_pod(key)
                meta["deletionGracePeriodSeconds"] = period
                meta["deletionTimestamp"] = _ts(_now() + timedelta(seconds=period))
                return self._commit(resource, key, obj, "MODIFIED"), False
            return obj, False
        finalizers = list(meta.get("finalizers") or [])
        if policy == "Orphan" and "orphan" not in finalizers:
            finalizers.append("orphan")
        elif policy == "Foreground" and "foregroundDeletion" not in finalizers:
            finalizers.append("foregroundDeletion")
        if resource.plural == "namespaces":
            meta["deletionTimestamp"] = _ts(_now())
            meta["deletionGracePeriodSeconds"] = 0
            meta["finalizers"] = [f for f in finalizers if f != "orphan"]
            obj.setdefault("status", {})["phase"] = "Terminating"
            return self._commit(resource, key, obj, "MODIFIED"), False
        if resource.plural == "pods":
            # Pods always go through an update that marks them, even when deleted at once.
            meta["deletionTimestamp"] = _ts(_now() + timedelta(seconds=period))
            meta["deletionGracePeriodSeconds"] = period
            meta["finalizers"] = finalizers
            stored = self._commit(resource, key, obj, "MODIFIED")
            if period > 0:
                self._schedule_kubelet(key[0], key[1], meta["uid"])
                return stored, False
            return self._finish_pod(key)
        if finalizers:
            meta["deletionTimestamp"] = _ts(_now())
            meta["deletionGracePeriodSeconds"] = 0
            meta["finalizers"] = finalizers
            return self._commit(resource, key, obj, "MODIFIED"), False
        self._commit(resource, key, None, "DELETED")
        return obj, True

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

    def _delete_collection(
        self, request: web.Request, resource: Resource, namespace: str, params: dict[str, str], raw: bytes
    ) -> web.Response:
        options = self._delete_options(request, params, raw)
        policy = self._policy(resource, options)
        listed = self._list(resource, namespace if resource.namespaced else None, params)
        items = []
        for item in listed["items"]:
            item_meta = item["metadata"]
            key = (item_meta.get("namespace", ""), item_meta["name"])
            if key in self._store[resource.plural]:
                obj, _ = self._delete_object(
                    resource, key, policy=policy, grace=options.get("gracePeriodSeconds")
                )
                obj.pop("kind", None)
                obj.pop("apiVersion", None)
                items.append(obj)
        return self._json(
            {
                "kind": resource.list_kind,
                "apiVersion": resource.api_version,
                "metadata": {"resourceVersion": self.resource_version},
                "items": items,
            }
        )

    # ---------------------------------------------------------------------------- list

    def _selectors(
        self, resource: Resource, params: Mapping[str, str]
    ) -> tuple[LabelSelector, FieldSelector]:
        try:
            labels = parse_label_selector(params.get("labelSelector"))
            fields = parse_field_selector(params.get("fieldSelector"), resource.field_names)
        except SelectorError as error:
            raise errors.bad_request(str(error)) from None
        return labels, fields

    def _matches(
        self, resource: Resource, obj: Mapping[str, Any], labels: LabelSelector, fields: FieldSelector
    ) -> bool:
        if not labels.matches(_meta(obj).get("labels")):
            return False
        return fields.empty or fields.matches(object_fields(obj, resource.selectable))

    def _list(self, resource: Resource, namespace: str | None, params: Mapping[str, str]) -> dict[str, Any]:
        labels, fields = self._selectors(resource, params)
        limit = _parse_int(params, "limit") or 0
        token = params.get("continue")
        requested_rv = params.get("resourceVersion") or ""
        match = params.get("resourceVersionMatch") or ""
        start = ""
        prefix = f"{namespace}/" if namespace and resource.namespaced else ""
        if token:
            if requested_rv:
                raise errors.bad_request("specifying resource version is not allowed when using continue")
            list_rv, start = _decode_continue(token)
            if list_rv == -1:
                list_rv = self._rv
                state = self._store[resource.plural]
            elif list_rv < self._compacted:
                raise errors.expired(errors.INCONSISTENT_CONTINUE, continue_token=_encode_continue(-1, start))
            else:
                state = self._state_at(resource, list_rv)
        elif match == "Exact":
            list_rv = _parse_rv(requested_rv)
            if list_rv < self._compacted:
                raise errors.expired("The resourceVersion for the provided list is too old.")
            if list_rv > self._rv:
                raise _too_large(list_rv, self._rv)
            state = self._state_at(resource, list_rv)
        else:
            if match and match != "NotOlderThan":
                raise errors.bad_request(f'resourceVersionMatch: Unsupported value: "{match}"')
            if requested_rv not in ("", "0") and _parse_rv(requested_rv) > self._rv:
                raise _too_large(_parse_rv(requested_rv), self._rv)
            list_rv = self._rv
            state = self._store[resource.plural]
        entries = []
        for (ns, name), obj in state.items():
            if namespace is not None and resource.namespaced and ns != namespace:
                continue
            sort_key = _sort_key(ns, name)
            relative = sort_key[len(prefix) :] if prefix else sort_key
            if start and relative < start:
                continue
            if self._matches(resource, obj, labels, fields):
                entries.append((relative, obj))
        entries.sort(key=lambda entry: entry[0])
        meta: dict[str, Any] = {"resourceVersion": str(list_rv)}
        if limit > 0 and len(entries) > limit:
            meta["continue"] = _encode_continue(list_rv, entries[limit - 1][0] + "\x00")
            if labels.empty and fields.empty:
                meta["remainingItemCount"] = len(entries) - limit
            entries = entries[:limit]
        items = []
        for _, obj in entries:
            item = copy.deepcopy(obj)
            item.pop("kind", None)
            item.pop("apiVersion", None)
            items.append(item)
        return {
            "kind": resource.list_kind,
            "apiVersion": resource.api_version,
            "metadata": meta,
            "items": items,
        }

    # --------------------------------------------------------------------------- watch

    def _watch_event(self, watch: _Watch, event: _Event) -> dict[str, Any] | None:
        """The event a watcher sees, as the watch cache filters it: an object that stops
        matching the selectors is DELETED for this watcher, one that starts matching ADDED."""
        if event.resource != watch.resource.plural:
            return None
        if watch.namespace is not None and watch.resource.namespaced and event.namespace != watch.namespace:
            return None
        current = event.type != "DELETED" and self._matches(
            watch.resource, event.obj, watch.labels, watch.fields
        )
        previous = event.prev is not None and self._matches(
            watch.resource, event.prev, watch.labels, watch.fields
        )
        if not current and not previous:
            return None
        if current and not previous:
            return {"type": "ADDED", "object": copy.deepcopy(event.obj)}
        if current:
            return {"type": "MODIFIED", "object": copy.deepcopy(event.obj)}
        gone = copy.deepcopy(event.prev)
        assert gone is not None
        gone["metadata"]["resourceVersion"] = str(event.rv)
        return {"type": "DELETED", "object": gone}

    def _bookmark(self, resource: Resource, *, initial_end: bool = False) -> dict[str, Any]:
        meta: dict[str, Any] = {"resourceVersion": self.resource_version}
        if initial_end:
            meta["annotations"] = {"k8s.io/initial-events-end": "true"}
        return {
            "type": "BOOKMARK",
            "object": {"kind": resource.kind, "apiVersion": resource.api_version, "metadata": meta},
        }

    async def _watch(
        self, request: web.Request, resource: Resource, namespace: str | None, params: dict[str, str]
    ) -> web.StreamResponse:
        labels, fields = self._selectors(resource, params)
        bookmarks = bool(_parse_bool(params, "allowWatchBookmarks"))
        send_initial = _parse_bool(params, "sendInitialEvents")
        timeout = _parse_int(params, "timeoutSeconds")
        requested = params.get("resourceVersion") or ""
        if send_initial is not None and not bookmarks:
            raise KubeError(
                422,
                "Invalid",
                'ListOptions.meta.k8s.io "" is invalid: sendInitialEvents: Forbidden: sendInitialEvents '
                "requires setting allowWatchBookmarks to true",
                {"group": "meta.k8s.io", "kind": "ListOptions"},
            )
        if requested not in ("", "0"):
            since = _parse_rv(requested)
            if since > self._rv:
                # The watch cache waits up to 3 s to catch up with a resourceVersion from the future.
                deadline = time.monotonic() + 3.0
                while since > self._rv and time.monotonic() < deadline:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._changed.wait(), 0.1)
        watch = _Watch(resource, namespace if resource.namespaced else None, labels, fields, request)
        first: list[dict[str, Any]] = []
        if send_initial or (send_initial is None and requested in ("", "0")):
            for (ns, _), obj in sorted(self._store[resource.plural].items(), key=lambda e: _sort_key(*e[0])):
                if namespace is not None and resource.namespaced and ns != namespace:
                    continue
                if self._matches(resource, obj, labels, fields):
                    first.append({"type": "ADDED", "object": copy.deepcopy(obj)})
            if send_initial:
                first.append(self._bookmark(resource, initial_end=True))
        elif requested not in ("", "0"):
            since = _parse_rv(requested)
            if since < self._compacted:
                first.append(
                    {
                        "type": "ERROR",
                        "object": KubeError(
                            410, "Expired", f"too old resource version: {since} ({self._compacted})"
                        ).status(),
                    }
                )
            elif since > self._rv:
                first.append({"type": "ERROR", "object": _too_large(since, self._rv).status()})
            else:
                for event in self._history:
                    if event.rv > since:
                        message = self._watch_event(watch, event)
                        if message is not None:
                            first.append(message)
        ends_now = bool(first) and first[0]["type"] == "ERROR"
        record = WatchRecord(resource.plural, namespace, dict(params))
        self.watch_requests.append(record)
        watch_key = (resource.plural, namespace)
        if not ends_now:
            self._watches.append(watch)
            self.open_watches[watch_key] = self.open_watches.get(watch_key, 0) + 1
            self._notify()
        self._streams[id(request)] = request
        response = web.StreamResponse(status=200)
        response.content_type = "application/json"
        response.headers["Audit-Id"] = str(uuid.uuid4())
        response.headers["Cache-Control"] = "no-cache, private"
        response.enable_chunked_encoding()
        try:
            await response.prepare(request)
            for message in first:
                await response.write(_dumps(message))
            if ends_now:
                await response.write_eof()
                return response
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout if timeout else None
            next_bookmark = loop.time() + self.bookmark_interval
            while True:
                now = loop.time()
                wait = 0.25
                if deadline is not None:
                    wait = min(wait, deadline - now)
                if bookmarks:
                    wait = min(wait, next_bookmark - now)
                message: dict[str, Any] | None
                try:
                    message = watch.queue.get_nowait()
                except asyncio.QueueEmpty:
                    try:
                        message = await asyncio.wait_for(watch.queue.get(), max(wait, 0.001))
                    except TimeoutError:
                        message = {}
                if message is None:
                    break
                if message or not watch.queue.empty():
                    if message:
                        await response.write(_dumps(message))
                    continue
                if request.transport is None or request.transport.is_closing():
                    break
                now = loop.time()
                if deadline is not None and now >= deadline:
                    break
                if bookmarks and now >= next_bookmark:
                    await response.write(_dumps(self._bookmark(resource)))
                    next_bookmark = now + self.bookmark_interval
            await response.write_eof()
            return response
        except (ConnectionResetError, ConnectionError):
            return response
        finally:
            self._streams.pop(id(request), None)
            if watch in self._watches:
                self._watches.remove(watch)
                remaining = self.open_watches.get(watch_key, 1) - 1
                if remaining > 0:
                    self.open_watches[watch_key] = remaining
                else:
                    self.open_watches.pop(watch_key, None)
                self._notify()

    # ---------------------------------------------------------------------------- logs

    def _container_names(self, pod: Mapping[str, Any]) -> list[str]:
        spec = pod.get("spec") or {}
        return [
            c.get("name", "")
            for group in ("initContainers", "containers", "ephemeralContainers")
            for c in spec.get(group) or []
        ]

    def _find_status(self, pod: Mapping[str, Any], container: str) -> dict[str, Any] | None:
        status = pod.get("status") or {}
        for group in ("containerStatuses", "initContainerStatuses", "ephemeralContainerStatuses"):
            for entry in status.get(group) or []:
                if entry.get("name") == container:
                    return dict(entry)
        return None

    def _log_gate(self, pod: Mapping[str, Any], container: str, previous: bool) -> str | None:
        """The kubelet's refusal to serve logs, or None when it would."""
        pod_name = pod["metadata"]["name"]
        entry = self._find_status(pod, container)
        if entry is None:
            spec = pod.get("spec") or {}
            is_init = any(c.get("name") == container for c in spec.get("initContainers") or [])
            reason = "PodInitializing" if (is_init or spec.get("initContainers")) else "ContainerCreating"
            if previous:
                return f'previous terminated container "{container}" in pod "{pod_name}" not found'
            return f'container "{container}" in pod "{pod_name}" is waiting to start: {reason}'
        state = entry.get("state") or {}
        last = (entry.get("lastState") or {}).get("terminated")
        if previous:
            if not last or not last.get("containerID"):
                return f'previous terminated container "{container}" in pod "{pod_name}" not found'
            return None
        if "running" in state or "terminated" in state:
            return None
        if last and last.get("containerID"):
            return None
        reason = (state.get("waiting") or {}).get("reason", "")
        if "waiting" in state:
            text = _WAITING_MESSAGES.get(reason, reason)
            return f'container "{container}" in pod "{pod_name}" is waiting to start: {text}'
        return f'container "{container}" in pod "{pod_name}" is waiting to start - no logs yet'

    async def _pod_log(
        self, request: web.Request, namespace: str, name: str, params: dict[str, str]
    ) -> web.StreamResponse:
        pods = RESOURCES["pods"]
        pod = self._require(pods, namespace, name)
        container = params.get("container") or ""
        names = self._container_names(pod)
        if not container:
            regular = [c.get("name", "") for c in (pod.get("spec") or {}).get("containers") or []]
            if len(regular) == 1:
                container = regular[0]
            elif not regular:
                raise errors.bad_request(f"a container name must be specified for pod {name}")
            else:
                raise errors.bad_request(
                    f"a container name must be specified for pod {name}, choose one of: [{' '.join(names)}]"
                )
        elif container not in names:
            raise errors.bad_request(f"container {container} is not valid for pod {name}")
        follow = bool(_parse_bool(params, "follow"))
        previous = bool(_parse_bool(params, "previous"))
        timestamps = bool(_parse_bool(params, "timestamps"))
        tail = _parse_int(params, "tailLines")
        since_seconds = _parse_int(params, "sinceSeconds")
        limit_bytes = _parse_int(params, "limitBytes")
        since_time = params.get("sinceTime")
        problems = []
        if tail is not None and tail < 0:
            problems.append(validation.invalid("tailLines", tail, "must be greater than or equal to 0"))
        if limit_bytes is not None and limit_bytes < 1:
            problems.append(validation.invalid("limitBytes", limit_bytes, "must be greater than 0"))
        if since_seconds is not None and since_seconds < 1:
            problems.append(validation.invalid("sinceSeconds", since_seconds, "must be greater than 0"))
        if since_seconds is not None and since_time:
            problems.append(
                validation.forbidden("", "at most one of `sinceTime` or `sinceSeconds` may be specified")
            )
        if problems:
            raise KubeError(
                422,
                "Invalid",
                f'PodLogOptions "{name}" is invalid: {validation.aggregate(problems)}',
                {"name": name, "kind": "PodLogOptions", "causes": [p.cause() for p in problems]},
            )
        if not (pod.get("spec") or {}).get("nodeName"):
            return web.Response(body=b"", content_type="text/plain")
        refusal = self._log_gate(pod, container, previous)
        if refusal:
            raise errors.bad_request(refusal)
        since_ns = 0
        if since_seconds is not None:
            since_ns = time.time_ns() - since_seconds * 1_000_000_000
        elif since_time:
            try:
                since_ns = int(
                    datetime.fromisoformat(
                        kinds.normalize_time(since_time, micro=True).replace("Z", "+00:00")
                    ).timestamp()
                    * 1e9
                )
            except DecodeError as error:
                raise errors.bad_request(str(error)) from None
        uid = pod["metadata"]["uid"]

        def entries() -> list[tuple[int, str]]:
            log = self._logs.get((uid, container), _ContainerLog())
            return log.previous if previous else log.lines

        def render(lines: Iterable[tuple[int, str]]) -> bytes:
            return b"".join(
                ((_rfc3339_nano(stamp) + " ") if timestamps else "").encode() + text.encode()
                for stamp, text in lines
            )

        lines = [entry for entry in entries() if entry[0] >= since_ns]
        sent = len(entries())
        if tail is not None:
            lines = lines[-tail:] if tail else []
        body = render(lines)
        budget = limit_bytes
        if budget is not None:
            body = body[:budget]
            budget -= len(body)
        if not follow or previous or self._terminated(namespace, name, uid, container):
            return web.Response(body=body, content_type="text/plain")
        response = web.StreamResponse(status=200)
        response.content_type = "text/plain"
        response.enable_chunked_encoding()
        self._streams[id(request)] = request
        try:
            await response.prepare(request)
            if body:
                await response.write(body)
            while budget is None or budget > 0:
                changed = self._changed
                current = entries()
                pod_now = self._store["pods"].get((namespace, name))
                if pod_now is None or pod_now["metadata"]["uid"] != uid:
                    break
                if len(current) > sent:
                    chunk = render(current[sent:])
                    sent = len(current)
                    if budget is not None:
                        chunk = chunk[:budget]
                        budget -= len(chunk)
                    await response.write(chunk)
                    continue
                if self._terminated(namespace, name, uid, container):
                    break
                if request.transport is None or request.transport.is_closing():
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(changed.wait(), 0.25)
            await response.write_eof()
        except (ConnectionResetError, ConnectionError):
            pass
        finally:
            self._streams.pop(id(request), None)
        return response

    def _terminated(self, namespace: str, pod: str, uid: str, container: str) -> bool:
        obj = self._store["pods"].get((namespace, pod))
        if obj is None or obj["metadata"]["uid"] != uid:
            return True
        entry = self._find_status(obj, container)
        return bool(entry and "terminated" in (entry.get("state") or {}))

    # ------------------------------------------------------------------ kubelet model

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
        now = _ts(_now())
        is_init = any(
            c.get("name") == entry["name"] for c in (pod.get("spec") or {}).get("initContainers") or []
        )
        current = entry.get("state") or {}
        uid = pod["metadata"]["uid"]
        if restart_count is not None and restart_count > entry.get("restartCount", 0):
            if "terminated" in current:
                entry["lastState"] = {"terminated": current["terminated"]}
            log = self._logs.setdefault((uid, entry["name"]), _ContainerLog())
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
        status["startTime"] = _ts(_now())

    def _set_condition(
        self,
        status: dict[str, Any],
        type_: str,
        value: str,
        reason: str | None = None,
        message: str | None = None,
        *,
        probe: bool = False,
    ) -> None:
        now = _ts(_now())
        conditions = status.setdefault("conditions", [])
        condition = next((c for c in conditions if c.get("type") == type_), None)
        if condition is None:
            condition = {"type": type_}
            conditions.append(condition)
        if condition.get("status") != value:
            condition["lastTransitionTime"] = now
        condition["status"] = value
        condition["lastProbeTime"] = now if probe else None
        for key, text in (("reason", reason), ("message", message)):
            if text is None:
                condition.pop(key, None)
            else:
                condition[key] = text
        ordered = {
            k: condition[k]
            for k in ("type", "status", "lastProbeTime", "lastTransitionTime")
            if k in condition
        }
        ordered.update({k: v for k, v in condition.items() if k not in ordered})
        condition.clear()
        condition.update(ordered)

    def _kubelet_conditions(self, pod: dict[str, Any]) -> None:
        """Initialized / ContainersReady / Ready as the kubelet derives them from container states."""
        status = pod.setdefault("status", {})
        if not status.get("containerStatuses") and not status.get("initContainerStatuses"):
            return
        terminal = status.get("phase") in _TERMINAL
        init = status.get("initContainerStatuses") or []
        pending_init = [
            e["name"] for e in init if (e.get("state") or {}).get("terminated", {}).get("exitCode", 1) != 0
        ]
        unready = [e["name"] for e in status.get("containerStatuses") or [] if not e.get("ready")]
        sandbox = any(
            "running" in (e.get("state") or {}) or "terminated" in (e.get("state") or {})
            for e in [*init, *(status.get("containerStatuses") or [])]
        )
        self._set_condition(
            status, "PodReadyToStartContainers", "True" if sandbox and not terminal else "False"
        )
        if pending_init and not terminal:
            self._set_condition(
                status,
                "Initialized",
                "False",
                "ContainersNotInitialized",
                f"containers with incomplete status: [{' '.join(pending_init)}]",
            )
        else:
            self._set_condition(status, "Initialized", "True")
        if terminal:
            for name in ("Ready", "ContainersReady"):
                self._set_condition(status, name, "False", "PodCompleted")
        elif unready:
            message = f"containers with unready status: [{' '.join(unready)}]"
            self._set_condition(status, "Ready", "False", "ContainersNotReady", message)
            self._set_condition(status, "ContainersReady", "False", "ContainersNotReady", message)
        else:
            self._set_condition(status, "Ready", "True")
            self._set_condition(status, "ContainersReady", "True")
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
        if status.get("phase") not in _TERMINAL:
            status["phase"] = "Failed"
        self._kubelet_conditions(obj)
        stored = self._commit(pods, key, obj, "MODIFIED")
        self._sync_job_of(stored)  # the Job controller counts the pod and drops its finalizer
        if key in self._store["pods"]:
            self._finish_pod(key)

    # --------------------------------------------------------------- controllers

    def _schedule_reconcile(self) -> None:
        if self._reconcile_handle is not None or self._reconciling:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._reconcile_handle = loop.call_later(self.gc_delay, self._reconcile)

    def _reconcile(self) -> None:
        """Garbage collector, namespace cleaner and Job counting, run to a fixpoint."""
        self._reconcile_handle = None
        self._reconciling = True
        try:
            for _ in range(1000):
                before = self._rv
                self._reconcile_once()
                dirty, self._dirty_jobs = self._dirty_jobs, set()
                for namespace, uid in dirty:
                    self._sync_job(namespace, uid)
                if self._rv == before:
                    break
        finally:
            self._reconciling = False

    def _uids(self) -> dict[str, tuple[Resource, tuple[str, str]]]:
        return {
            obj["metadata"]["uid"]: (RESOURCES[plural], key)
            for plural, table in self._store.items()
            for key, obj in table.items()
        }

    def _dependents(self, uid: str) -> list[tuple[Resource, tuple[str, str], dict[str, Any]]]:
        found = []
        for plural, table in self._store.items():
            for key, obj in table.items():
                if any(ref.get("uid") == uid for ref in obj["metadata"].get("ownerReferences") or []):
                    found.append((RESOURCES[plural], key, obj))
        return found

    def _reconcile_once(self) -> bool:
        for plural, table in self._store.items():
            resource = RESOURCES[plural]
            for key, obj in list(table.items()):
                meta = obj["metadata"]
                finalizers = meta.get("finalizers") or []
                if not meta.get("deletionTimestamp"):
                    continue
                if "orphan" in finalizers:
                    for dep_resource, dep_key, dependent in self._dependents(meta["uid"]):
                        updated = copy.deepcopy(dependent)
                        updated["metadata"]["ownerReferences"] = [
                            ref
                            for ref in dependent["metadata"]["ownerReferences"]
                            if ref.get("uid") != meta["uid"]
                        ]
                        self._commit(dep_resource, dep_key, updated, "MODIFIED")
                    self._remove_finalizer(resource, key, "orphan")
                    return True
                if "foregroundDeletion" in finalizers:
                    blocking = False
                    progressed = False
                    for dep_resource, dep_key, dependent in self._dependents(meta["uid"]):
                        ref = next(
                            r for r in dependent["metadata"]["ownerReferences"] if r.get("uid") == meta["uid"]
                        )
                        blocking = blocking or bool(ref.get("blockOwnerDeletion"))
                        if not dependent["metadata"].get("deletionTimestamp"):
                            # Dependents without dependents of their own go in the background.
                            policy = (
                                "Foreground"
                                if self._dependents(dependent["metadata"]["uid"])
                                else "Background"
                            )
                            self._delete_object(dep_resource, dep_key, policy=policy)
                            progressed = True
                    if not blocking:
                        self._remove_finalizer(resource, key, "foregroundDeletion")
                        return True
                    if progressed:
                        return True
                if plural == "namespaces" and self._clean_namespace(key[1]):
                    return True
        uids = self._uids()
        for plural, table in self._store.items():
            resource = RESOURCES[plural]
            for key, obj in list(table.items()):
                refs = obj["metadata"].get("ownerReferences") or []
                if not refs:
                    continue
                present = [ref for ref in refs if ref.get("uid") in uids]
                if present:
                    continue
                if obj["metadata"].get("deletionTimestamp"):
                    continue
                self._delete_object(resource, key, policy="Background")
                return True
        return False

    def _remove_finalizer(self, resource: Resource, key: tuple[str, str], finalizer: str) -> None:
        obj = copy.deepcopy(self._store[resource.plural][key])
        meta = obj["metadata"]
        meta["finalizers"] = [f for f in meta.get("finalizers") or [] if f != finalizer]
        if not meta["finalizers"] and not meta.get("deletionGracePeriodSeconds"):
            self._commit(resource, key, None, "DELETED")
        else:
            self._commit(resource, key, obj, "MODIFIED")

    def _clean_namespace(self, namespace: str) -> bool:
        """The namespace controller: delete the content, then the namespace itself."""
        progressed = False
        remaining = False
        for plural, table in self._store.items():
            resource = RESOURCES[plural]
            if not resource.namespaced:
                continue
            for key, obj in list(table.items()):
                if key[0] != namespace:
                    continue
                remaining = True
                if not obj["metadata"].get("deletionTimestamp"):
                    self._delete_object(resource, key, policy="Background")
                    progressed = True
        if remaining:
            return progressed
        namespaces = RESOURCES["namespaces"]
        key = ("", namespace)
        obj = copy.deepcopy(self._store["namespaces"][key])
        if obj["metadata"].get("finalizers"):
            return False
        obj["spec"] = {}
        self._commit(namespaces, key, obj, "MODIFIED")
        self._commit(namespaces, key, None, "DELETED")
        return True

    def _sync_job_of(self, pod: Mapping[str, Any]) -> dict[str, Any] | None:
        for ref in _meta(pod).get("ownerReferences") or []:
            if ref.get("kind") == "Job" and ref.get("controller"):
                return self._sync_job(_meta(pod)["namespace"], ref["uid"])
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
            if phase in _TERMINAL and JOB_TRACKING_FINALIZER in (pod["metadata"].get("finalizers") or []):
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
            if (pod.get("status") or {}).get("phase") not in _TERMINAL
            and not pod["metadata"].get("deletionTimestamp")
        ]
        terminating = [
            pod
            for _, pod in owned
            if (pod.get("status") or {}).get("phase") not in _TERMINAL
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
            status.setdefault("startTime", _ts(_now()))
            status["ready"] = len(ready)
            status["terminating"] = len(terminating)
            status.setdefault("uncountedTerminatedPods", {})
        if job == self._store["jobs"][job_key]:
            return job
        return self._commit(jobs, job_key, job, "MODIFIED")


# ------------------------------------------------------------------------------- helpers


def _parse_bool(params: Mapping[str, str], key: str) -> bool | None:
    value = params.get(key)
    if value is None:
        return None
    if value in ("1", "t", "T", "true", "TRUE", "True"):
        return True
    if value in ("", "0", "f", "F", "false", "FALSE", "False"):
        return False
    raise errors.bad_request(f'strconv.ParseBool: parsing "{value}": invalid syntax')


def _parse_int(params: Mapping[str, str], key: str) -> int | None:
    value = params.get(key)
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise errors.bad_request(f'strconv.ParseInt: parsing "{value}": invalid syntax') from None


def _parse_rv(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise errors.bad_request(f'invalid resource version "{value}"') from None
    if number < 0:
        raise errors.bad_request(f'invalid resource version "{value}"')
    return number


def _too_large(requested: int, current: int) -> KubeError:
    return KubeError(
        504,
        "Timeout",
        f"Timeout: Too large resource version: {requested}, current: {current}",
        {
            "causes": [{"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}],
            "retryAfterSeconds": 1,
        },
    )


def _encode_continue(rv: int, start: str) -> str:
    raw = json.dumps({"v": "meta.k8s.io/v1", "rv": rv, "start": start}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _decode_continue(token: str) -> tuple[int, str]:
    try:
        padded = token + "=" * (-len(token) % 4)
        data = json.loads(base64.urlsafe_b64decode(padded.encode()))
        if data.get("v") != "meta.k8s.io/v1":
            raise ValueError(
                "continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)"
            )
        rv, start = int(data["rv"]), str(data["start"])
        if not start:
            raise ValueError("continue key is not valid: encoded start key is empty")
    except (ValueError, KeyError, TypeError) as error:
        message = (
            str(error) if str(error).startswith("continue key") else f"continue key is not valid: {error}"
        )
        raise errors.bad_request(message) from None
    return rv, start


def _parse_logged_body(raw: bytes) -> Any:
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        try:
            return raw.decode()
        except UnicodeDecodeError:
            return raw
