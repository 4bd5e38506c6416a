"""The resources the fake serves and the per-kind behaviour of their registry strategies:
defaults applied on create, fields reset on update, validation and selectable fields."""

from __future__ import annotations

import base64
import copy
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from tests.fake_kube import validation

JOB_TRACKING_FINALIZER = "batch.kubernetes.io/job-tracking"


@dataclass(frozen=True)
class Resource:
    """One REST resource: where it lives and how the server names it in messages."""

    plural: str
    singular: str
    kind: str
    group: str = ""
    version: str = "v1"
    namespaced: bool = True
    subresources: frozenset[str] = frozenset()
    allow_create_on_update: bool = False
    allow_unconditional_update: bool = True
    has_generation: bool = False
    selectable: Mapping[str, Callable[[Mapping[str, Any]], str]] = field(default_factory=dict)

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def qualified(self) -> str:
        """GroupResource as Go prints it: `jobs.batch`, `pods`."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def qualified_kind(self) -> str:
        """GroupKind as Go prints it: `Job.batch`, `Pod`."""
        return f"{self.kind}.{self.group}" if self.group else self.kind

    @property
    def list_kind(self) -> str:
        return f"{self.kind}List"

    @property
    def field_names(self) -> frozenset[str]:
        return frozenset({"metadata.name", "metadata.namespace", *self.selectable})


def _path(obj: Mapping[str, Any], *keys: str, default: Any = "") -> Any:
    node: Any = obj
    for key in keys:
        if not isinstance(node, Mapping) or key not in node:
            return default
        node = node[key]
    return node


def _pod_host_network(pod: Mapping[str, Any]) -> str:
    return "true" if _path(pod, "spec", "hostNetwork", default=False) else "false"


def _pod_ip(pod: Mapping[str, Any]) -> str:
    ips = _path(pod, "status", "podIPs", default=[]) or []
    return str(ips[0].get("ip", "")) if ips else ""


POD_FIELDS: dict[str, Callable[[Mapping[str, Any]], str]] = {
    "spec.nodeName": lambda o: str(_path(o, "spec", "nodeName")),
    "spec.restartPolicy": lambda o: str(_path(o, "spec", "restartPolicy")),
    "spec.schedulerName": lambda o: str(_path(o, "spec", "schedulerName")),
    "spec.serviceAccountName": lambda o: str(_path(o, "spec", "serviceAccountName")),
    "spec.hostNetwork": _pod_host_network,
    "status.phase": lambda o: str(_path(o, "status", "phase")),
    "status.podIP": _pod_ip,
    "status.nominatedNodeName": lambda o: str(_path(o, "status", "nominatedNodeName")),
}


def _involved(key: str) -> Callable[[Mapping[str, Any]], str]:
    return lambda event: str(_path(event, "involvedObject", key))


# pkg/registry/core/event GetAttrs: what an events list or watch may select on.
EVENT_FIELDS: dict[str, Callable[[Mapping[str, Any]], str]] = {
    **{
        f"involvedObject.{key}": _involved(key)
        for key in ("kind", "namespace", "name", "uid", "apiVersion", "resourceVersion", "fieldPath")
    },
    "reason": lambda o: str(o.get("reason", "")),
    "reportingComponent": lambda o: str(o.get("reportingComponent", "")),
    "source": lambda o: str(_path(o, "source", "component") or o.get("reportingComponent", "")),
    "type": lambda o: str(o.get("type", "")),
}

RESOURCES: dict[str, Resource] = {
    r.plural: r
    for r in (
        Resource(
            "namespaces",
            "namespace",
            "Namespace",
            namespaced=False,
            subresources=frozenset({"status"}),
            selectable={"status.phase": lambda o: str(_path(o, "status", "phase"))},
        ),
        Resource(
            "pods",
            "pod",
            "Pod",
            subresources=frozenset({"status", "log"}),
            has_generation=True,
            selectable=POD_FIELDS,
        ),
        Resource("configmaps", "configmap", "ConfigMap"),
        Resource("events", "event", "Event", selectable=EVENT_FIELDS),
        Resource("secrets", "secret", "Secret", selectable={"type": lambda o: str(o.get("type", ""))}),
        Resource(
            "jobs",
            "job",
            "Job",
            group="batch",
            subresources=frozenset({"status"}),
            has_generation=True,
            selectable={"status.successful": lambda o: str(_path(o, "status", "succeeded", default=0) or 0)},
        ),
        Resource(
            "leases",
            "lease",
            "Lease",
            group="coordination.k8s.io",
            allow_create_on_update=True,
            allow_unconditional_update=False,
        ),
    )
}

GROUP_VERSIONS: dict[str, frozenset[str]] = {
    "v1": frozenset({"namespaces", "pods", "configmaps", "secrets", "events"}),
    "batch/v1": frozenset({"jobs"}),
    "coordination.k8s.io/v1": frozenset({"leases"}),
}


def resolve(kind: str) -> Resource:
    """A resource from its plural, singular or kind name, case-insensitively."""
    wanted = kind.lower()
    for resource in RESOURCES.values():
        if wanted in (resource.plural, resource.singular, resource.kind.lower()):
            return resource
    raise KeyError(f"unknown kind {kind!r}")


# ------------------------------------------------------------------------------ ordering

_META_ORDER = (
    "name",
    "generateName",
    "namespace",
    "selfLink",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "labels",
    "annotations",
    "ownerReferences",
    "finalizers",
    "managedFields",
)
_TOP_ORDER = {
    "secrets": ("kind", "apiVersion", "metadata", "immutable", "data", "type"),
    "configmaps": ("kind", "apiVersion", "metadata", "immutable", "data", "binaryData"),
}
_DEFAULT_TOP_ORDER = ("kind", "apiVersion", "metadata", "spec", "status")


def _ordered(mapping: Mapping[str, Any], order: tuple[str, ...]) -> dict[str, Any]:
    result = {key: mapping[key] for key in order if key in mapping}
    result.update({key: value for key, value in mapping.items() if key not in result})
    return result


def canonical(resource: Resource, obj: Mapping[str, Any]) -> dict[str, Any]:
    """Field order and omitted empties as Go's encoder would write the object."""
    meta = dict(obj.get("metadata") or {})
    for key in ("labels", "annotations", "ownerReferences", "finalizers", "managedFields"):
        if key in meta and not meta[key]:
            del meta[key]
    result = dict(obj)
    result["metadata"] = _ordered(meta, _META_ORDER)
    spec = result.get("spec")
    if resource.plural == "jobs" and isinstance(spec, dict) and isinstance(spec.get("template"), dict):
        result["spec"] = {**spec, "template": _ordered(spec["template"], ("metadata", "spec"))}
    return _ordered(result, _TOP_ORDER.get(resource.plural, _DEFAULT_TOP_ORDER))


def prune_nulls(value: Any) -> Any:
    """Drop null members, as decoding into Go structs and encoding back with omitempty does."""
    if isinstance(value, dict):
        return {key: prune_nulls(item) for key, item in value.items() if item is not None}
    if isinstance(value, list):
        return [prune_nulls(item) for item in value]
    return value


# ------------------------------------------------------------------------------ decoding


class DecodeError(ValueError):
    """The body does not decode into the Go type; the server answers 400 BadRequest."""


_TIME = re.compile(r"^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?(Z|[+-]\d{2}:\d{2})$")


def normalize_time(value: Any, *, micro: bool) -> str:
    """Parse RFC 3339 like metav1.Time/MicroTime and re-encode in UTC the way Go does."""
    from datetime import UTC, datetime, timedelta

    if not isinstance(value, str):
        raise DecodeError(f"parsing time {value!r}: expected a string")
    match = _TIME.match(value)
    if not match:
        raise DecodeError(
            f'parsing time "{value}" as "2006-01-02T15:04:05Z07:00": '
            f'cannot parse "{value}" as "2006-01-02T15:04:05Z07:00"'
        )
    year, month, day, hour, minute, second, fraction, zone = match.groups()
    micros = int((fraction or "0")[:6].ljust(6, "0"))
    moment = datetime(
        int(year), int(month), int(day), int(hour), int(minute), int(second), micros, tzinfo=UTC
    )
    if zone != "Z":
        sign = 1 if zone[0] == "+" else -1
        moment -= sign * timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6]))
    if micro:
        return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _normalize_conditions(status: dict[str, Any]) -> None:
    for condition in status.get("conditions") or []:
        if isinstance(condition, dict):
            for key in ("lastProbeTime", "lastTransitionTime", "lastUpdateTime"):
                if condition.get(key) is not None:
                    condition[key] = normalize_time(condition[key], micro=False)


def _normalize_container_states(status: dict[str, Any]) -> None:
    for group in ("initContainerStatuses", "containerStatuses", "ephemeralContainerStatuses"):
        for entry in status.get(group) or []:
            for state_key in ("state", "lastState"):
                for state in (entry.get(state_key) or {}).values():
                    if isinstance(state, dict):
                        for key in ("startedAt", "finishedAt"):
                            if state.get(key) is not None:
                                state[key] = normalize_time(state[key], micro=False)


def normalize_times(resource: Resource, obj: dict[str, Any]) -> None:
    """Re-encode the time fields the served kinds have; raise DecodeError for bad ones."""
    spec = obj.get("spec") if isinstance(obj.get("spec"), dict) else {}
    status = obj.get("status") if isinstance(obj.get("status"), dict) else {}
    if resource.plural == "leases":
        for key in ("acquireTime", "renewTime"):
            if spec.get(key) is not None:
                spec[key] = normalize_time(spec[key], micro=True)
    if resource.plural == "events":
        for key in ("firstTimestamp", "lastTimestamp"):
            if obj.get(key) is not None:
                obj[key] = normalize_time(obj[key], micro=False)
        if obj.get("eventTime") is not None:
            obj["eventTime"] = normalize_time(obj["eventTime"], micro=True)
    if resource.plural in ("jobs", "pods", "namespaces"):
        for key in ("startTime", "completionTime"):
            if status.get(key) is not None:
                status[key] = normalize_time(status[key], micro=False)
        _normalize_conditions(status)
    if resource.plural == "pods":
        _normalize_container_states(status)


def _base64_error(value: Any) -> str | None:
    if not isinstance(value, str):
        return "json: cannot unmarshal into Go value of type []uint8"
    alphabet = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")
    stripped = value.replace("\r", "").replace("\n", "")
    body = stripped.rstrip("=")
    for index, char in enumerate(body):
        if char not in alphabet:
            return f"illegal base64 data at input byte {index}"
    padding = len(stripped) - len(body)
    if padding > 2 or len(stripped) % 4 != 0:
        return f"illegal base64 data at input byte {len(body) - len(body) % 4 if padding == 0 else len(body)}"
    try:
        base64.b64decode(stripped, validate=True)
    except ValueError:
        return f"illegal base64 data at input byte {len(body)}"
    return None


def decode_secret(secret: dict[str, Any]) -> None:
    """Check `data` is base64 and fold `stringData` into it, as v1 -> internal conversion does."""
    data = secret.get("data")
    if data is not None and not isinstance(data, dict):
        raise DecodeError(
            "json: cannot unmarshal into Go struct field Secret.data of type map[string][]uint8"
        )
    for value in (data or {}).values():
        problem = _base64_error(value)
        if problem:
            raise DecodeError(problem)
    string_data = secret.pop("stringData", None) or {}
    if string_data:
        merged = dict(data or {})
        for key, value in string_data.items():
            merged[key] = base64.b64encode(str(value).encode()).decode()
        secret["data"] = merged


def decode_configmap(configmap: dict[str, Any]) -> None:
    for value in (configmap.get("binaryData") or {}).values():
        problem = _base64_error(value)
        if problem:
            raise DecodeError(problem)
    for value in (configmap.get("data") or {}).values():
        if not isinstance(value, str):
            raise DecodeError("json: cannot unmarshal into Go struct field ConfigMap.data of type string")


_INT_FIELDS: dict[str, tuple[tuple[tuple[str, ...], str], ...]] = {
    "jobs": (
        (("spec", "parallelism"), "int32"),
        (("spec", "completions"), "int32"),
        (("spec", "backoffLimit"), "int32"),
        (("spec", "activeDeadlineSeconds"), "int64"),
        (("spec", "ttlSecondsAfterFinished"), "int32"),
    ),
    "leases": ((("spec", "leaseDurationSeconds"), "int32"), (("spec", "leaseTransitions"), "int32")),
    "pods": (
        (("spec", "terminationGracePeriodSeconds"), "int64"),
        (("spec", "activeDeadlineSeconds"), "int64"),
    ),
}


def check_types(resource: Resource, obj: Mapping[str, Any]) -> None:
    """The type errors Go's decoder reports for the integer fields a backend sets."""
    if not isinstance(obj.get("metadata", {}), dict):
        raise DecodeError("json: cannot unmarshal into Go struct field .metadata of type v1.ObjectMeta")
    for path, go_type in _INT_FIELDS.get(resource.plural, ()):
        value = _path(obj, *path, default=None)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
            kind = {"str": "string", "float": "number", "bool": "bool"}.get(type(value).__name__, "object")
            raise DecodeError(
                f"json: cannot unmarshal {kind} into Go struct field "
                f"{resource.kind}{path[0].capitalize()}.{'.'.join(path)} of type {go_type}"
            )


# ------------------------------------------------------------------------------ defaults


def _image_pull_policy(image: str) -> str:
    if "@" in image:
        return "IfNotPresent"
    last = image.rsplit("/", 1)[-1]
    tag = last.split(":", 1)[1] if ":" in last else ""
    return "Always" if tag in ("", "latest") else "IfNotPresent"


def default_pod_spec(spec: dict[str, Any], *, for_pod: bool) -> None:
    """SetDefaults_PodSpec (and the pod-only admission defaults when `for_pod`)."""
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("securityContext", {})
    spec.setdefault("schedulerName", "default-scheduler")
    for group in ("initContainers", "containers"):
        for container in spec.get(group) or []:
            if not isinstance(container, dict):
                continue
            container.setdefault("resources", {})
            container.setdefault("terminationMessagePath", "/dev/termination-log")
            container.setdefault("terminationMessagePolicy", "File")
            if isinstance(container.get("image"), str) and container["image"]:
                container.setdefault("imagePullPolicy", _image_pull_policy(container["image"]))
            for port in container.get("ports") or []:
                if isinstance(port, dict):
                    port.setdefault("protocol", "TCP")
    if for_pod:
        spec.setdefault("serviceAccountName", "default")
        spec.setdefault("serviceAccount", spec["serviceAccountName"])
        spec.setdefault("enableServiceLinks", True)
        spec.setdefault("priority", 0)
        spec.setdefault("preemptionPolicy", "PreemptLowerPriority")
        tolerations = spec.setdefault("tolerations", [])
        for taint in ("node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"):
            if not any(isinstance(t, dict) and t.get("key") == taint for t in tolerations):
                tolerations.append(
                    {"key": taint, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}
                )


def qos_class(spec: Mapping[str, Any]) -> str:
    containers = [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]
    any_set = False
    guaranteed = True
    for container in containers:
        resources = (container or {}).get("resources") or {}
        requests = resources.get("requests") or {}
        limits = resources.get("limits") or {}
        if any(key in requests or key in limits for key in ("cpu", "memory")):
            any_set = True
        for key in ("cpu", "memory"):
            if key not in limits or (key in requests and requests[key] != limits[key]):
                guaranteed = False
    if not any_set:
        return "BestEffort"
    return "Guaranteed" if guaranteed else "Burstable"


def prepare_create(resource: Resource, obj: dict[str, Any]) -> None:
    """The strategy's PrepareForCreate plus defaulting; `obj` has its name and uid already."""
    meta = obj["metadata"]
    if resource.has_generation:
        meta["generation"] = 1
    if resource.plural == "pods":
        spec = obj.setdefault("spec", {})
        if isinstance(spec, dict):
            default_pod_spec(spec, for_pod=True)
        obj["status"] = {"phase": "Pending", "qosClass": qos_class(spec if isinstance(spec, dict) else {})}
    elif resource.plural == "jobs":
        _prepare_job(obj)
    elif resource.plural == "secrets":
        obj.setdefault("type", "Opaque")
    elif resource.plural == "namespaces":
        labels = meta.setdefault("labels", {})
        labels["kubernetes.io/metadata.name"] = meta["name"]
        obj["spec"] = {"finalizers": ["kubernetes"]}
        obj["status"] = {"phase": "Active"}


def _prepare_job(job: dict[str, Any]) -> None:
    meta = job["metadata"]
    spec = job.setdefault("spec", {})
    job["status"] = {}
    if not isinstance(spec, dict):
        return
    if spec.get("completions") is None and spec.get("parallelism") is None:
        spec["completions"] = 1
    spec.setdefault("parallelism", 1)
    spec.setdefault("backoffLimit", 2147483647 if spec.get("backoffLimitPerIndex") is not None else 6)
    spec.setdefault("completionMode", "NonIndexed")
    spec.setdefault("suspend", False)
    spec.setdefault(
        "podReplacementPolicy", "Failed" if spec.get("podFailurePolicy") else "TerminatingOrFailed"
    )
    template = spec.get("template")
    if not isinstance(template, dict):
        return
    template_meta = template.setdefault("metadata", {})
    labels = template_meta.setdefault("labels", {})
    if labels and not meta.get("labels"):
        meta["labels"] = dict(labels)
    pod_spec = template.get("spec")
    if isinstance(pod_spec, dict):
        default_pod_spec(pod_spec, for_pod=False)
    if not spec.get("manualSelector"):
        for key in ("batch.kubernetes.io/controller-uid", "controller-uid"):
            labels.setdefault(key, meta["uid"])
        for key in ("batch.kubernetes.io/job-name", "job-name"):
            labels.setdefault(key, meta["name"])
        selector = spec.get("selector")
        if not isinstance(selector, dict):
            selector = spec["selector"] = {}
        match_labels = selector.setdefault("matchLabels", {})
        match_labels.setdefault("batch.kubernetes.io/controller-uid", meta["uid"])


def prepare_update(resource: Resource, new: dict[str, Any], old: Mapping[str, Any], *, status: bool) -> None:
    """PrepareForUpdate: the main resource keeps the old status, `/status` the old spec."""
    if resource.plural in ("pods", "jobs", "namespaces"):
        if status:
            if "spec" in old:
                new["spec"] = copy.deepcopy(old["spec"])
            else:
                new.pop("spec", None)
            if resource.plural == "pods":
                owners = (old.get("metadata") or {}).get("ownerReferences")
                if owners:
                    new["metadata"]["ownerReferences"] = copy.deepcopy(owners)
                else:
                    new["metadata"].pop("ownerReferences", None)
                if not (new.get("status") or {}).get("qosClass") and (old.get("status") or {}).get(
                    "qosClass"
                ):
                    new.setdefault("status", {})["qosClass"] = old["status"]["qosClass"]
        else:
            if "status" in old:
                new["status"] = copy.deepcopy(old["status"])
            else:
                new.pop("status", None)
    if resource.plural == "pods" and not status:
        spec = new.get("spec")
        if isinstance(spec, dict):
            default_pod_spec(spec, for_pod=True)
    if resource.plural == "jobs" and not status:
        pod_spec = ((new.get("spec") or {}).get("template") or {}).get("spec")
        if isinstance(pod_spec, dict):
            default_pod_spec(pod_spec, for_pod=False)
    if resource.has_generation:
        generation = (old.get("metadata") or {}).get("generation", 1)
        if not status and new.get("spec") != old.get("spec"):
            generation += 1
        new["metadata"]["generation"] = generation


def validate(resource: Resource, obj: Mapping[str, Any]) -> list[validation.FieldError]:
    if resource.plural == "pods":
        return validation.validate_pod(obj)
    if resource.plural == "jobs":
        return validation.validate_job(obj)
    if resource.plural == "secrets":
        return validation.validate_secret(obj)
    if resource.plural == "configmaps":
        return validation.validate_configmap(obj)
    if resource.plural == "leases":
        return validation.validate_lease(obj)
    if resource.plural == "events":
        return validation.validate_event(obj)
    return validation.validate_namespace(obj)


def validate_update(
    resource: Resource, new: Mapping[str, Any], old: Mapping[str, Any], *, status: bool
) -> list[validation.FieldError]:
    errors = [] if status else validate(resource, new)
    if status:
        errors.extend(
            validation.validate_object_meta(
                new.get("metadata") or {}, label_names=resource.plural == "namespaces"
            )
        )
    errors.extend(validation.validate_meta_update(new.get("metadata") or {}, old.get("metadata") or {}))
    if status:
        return errors
    if resource.plural == "pods":
        errors.extend(validation.validate_pod_spec_update(new.get("spec") or {}, old.get("spec") or {}))
    elif resource.plural == "jobs":
        errors.extend(validation.validate_job_update(new, old))
    elif resource.plural == "secrets":
        errors.extend(validation.validate_immutable_data(new, old, ("data",)))
        if new.get("type") != old.get("type"):
            errors.append(validation.invalid("type", new.get("type"), "field is immutable"))
    elif resource.plural == "configmaps":
        errors.extend(validation.validate_immutable_data(new, old, ("data", "binaryData")))
    return errors
