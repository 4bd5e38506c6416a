"""Server-side validation of the kinds the fake serves, worded like the real API server.

Each check returns `FieldError`s; the server turns a non-empty list into a 422 `Invalid`
Status whose message and `details.causes` read like Kubernetes' own, so code that surfaces or
parses them is tested against realistic text. Only the rules a compute backend is likely to
trip over are covered, not the whole of Kubernetes' validation.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from tests.fake_kube.selectors import label_key_errors, label_value_errors, parse_label_selector

_OMIT = object()

_TYPE_TEXT = {
    "FieldValueRequired": "Required value",
    "FieldValueInvalid": "Invalid value",
    "FieldValueNotSupported": "Unsupported value",
    "FieldValueDuplicate": "Duplicate value",
    "FieldValueForbidden": "Forbidden",
    "FieldValueTooLong": "Too long",
    "FieldValueNotFound": "Not found",
}
_BODY_WITHOUT_VALUE = {"FieldValueRequired", "FieldValueForbidden", "FieldValueTooLong"}

DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
CONFIG_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")

LABEL_MESSAGE = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must "
    "start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for "
    "validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
)
SUBDOMAIN_MESSAGE = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', "
    "and must start and end with an alphanumeric character (e.g. 'example.com', regex used for "
    "validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
)
CONFIG_KEY_MESSAGE = (
    "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  "
    "or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')"
)


def _render(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)
    if value is None:
        return "null"
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


@dataclass
class FieldError:
    """One entry of a Go `field.ErrorList`."""

    type: str
    field: str
    value: Any = field(default=_OMIT)
    detail: str = ""

    def body(self) -> str:
        text = _TYPE_TEXT[self.type]
        if self.type not in _BODY_WITHOUT_VALUE and self.value is not _OMIT:
            text = f"{text}: {_render(self.value)}"
        if self.detail:
            text = f"{text}: {self.detail}"
        return text

    def __str__(self) -> str:
        return f"{self.field}: {self.body()}"

    def cause(self) -> dict[str, str]:
        return {"reason": self.type, "message": self.body(), "field": self.field}


def required(path: str, detail: str = "") -> FieldError:
    return FieldError("FieldValueRequired", path, detail=detail)


def invalid(path: str, value: Any, detail: str) -> FieldError:
    return FieldError("FieldValueInvalid", path, value, detail)


def not_supported(path: str, value: Any, supported: Iterable[str]) -> FieldError:
    return FieldError(
        "FieldValueNotSupported",
        path,
        value,
        "supported values: " + ", ".join(json.dumps(v) for v in supported),
    )


def forbidden(path: str, detail: str) -> FieldError:
    return FieldError("FieldValueForbidden", path, detail=detail)


def duplicate(path: str, value: Any) -> FieldError:
    return FieldError("FieldValueDuplicate", path, value)


def not_found(path: str, value: Any) -> FieldError:
    return FieldError("FieldValueNotFound", path, value)


def aggregate(errors: list[FieldError]) -> str:
    """Go's `ErrorList.ToAggregate().Error()`: duplicates dropped, several wrapped in brackets."""
    seen: list[str] = []
    for error in errors:
        text = str(error)
        if text not in seen:
            seen.append(text)
    return seen[0] if len(seen) == 1 else "[" + ", ".join(seen) + "]"


# ------------------------------------------------------------------------------- names


def dns_subdomain_errors(name: str, *, prefix: bool = False) -> list[str]:
    value = name[:-1] if prefix and name.endswith("-") else name
    problems: list[str] = []
    if len(value) > 253:
        problems.append("must be no more than 253 characters")
    if not DNS1123_SUBDOMAIN.match(value):
        problems.append(SUBDOMAIN_MESSAGE)
    return problems


def dns_label_errors(name: str, *, prefix: bool = False) -> list[str]:
    value = name[:-1] if prefix and name.endswith("-") else name
    problems: list[str] = []
    if len(value) > 63:
        problems.append("must be no more than 63 characters")
    if not DNS1123_LABEL.match(value):
        problems.append(LABEL_MESSAGE)
    return problems


def validate_object_meta(meta: Mapping[str, Any], *, label_names: bool = False) -> list[FieldError]:
    """ValidateObjectMeta: name or generateName, labels, annotations, owners, finalizers."""
    errors: list[FieldError] = []
    name = meta.get("name") or ""
    generate_name = meta.get("generateName") or ""
    check = dns_label_errors if label_names else dns_subdomain_errors
    if generate_name:
        for problem in check(generate_name, prefix=True):
            errors.append(invalid("metadata.generateName", generate_name, problem))
    if not name:
        if not generate_name:
            errors.append(required("metadata.name", "name or generateName is required"))
    else:
        for problem in check(name):
            errors.append(invalid("metadata.name", name, problem))
    labels = meta.get("labels") or {}
    if not isinstance(labels, dict):
        errors.append(invalid("metadata.labels", labels, "must be a map of strings"))
        labels = {}
    errors.extend(validate_labels(labels, "metadata.labels"))
    annotations = meta.get("annotations") or {}
    if isinstance(annotations, dict):
        total = 0
        for key, value in annotations.items():
            for problem in label_key_errors(str(key).lower()):
                errors.append(invalid("metadata.annotations", key, problem))
            total += len(str(key)) + len(str(value))
        if total > 256 * 1024:
            errors.append(
                FieldError(
                    "FieldValueTooLong", "metadata.annotations", detail="must have at most 262144 bytes"
                )
            )
    owners = meta.get("ownerReferences") or []
    controllers = []
    for index, owner in enumerate(owners):
        path = f"metadata.ownerReferences[{index}]"
        for key in ("apiVersion", "kind", "name", "uid"):
            if not (isinstance(owner, dict) and owner.get(key)):
                errors.append(
                    required(
                        f"{path}.{key}",
                        f"{key} must not be empty" if key != "uid" else "uid must not be empty",
                    )
                )
        if isinstance(owner, dict) and owner.get("controller") is True:
            controllers.append(f"{owner.get('kind')}/{owner.get('name')}")
    if len(controllers) > 1:
        errors.append(
            invalid(
                "metadata.ownerReferences",
                owners,
                'Only one reference can have Controller set to true. Found "true" in references for '
                + " and ".join(controllers),
            )
        )
    for index, finalizer in enumerate(meta.get("finalizers") or []):
        for problem in label_key_errors(str(finalizer)):
            errors.append(invalid(f"metadata.finalizers[{index}]", finalizer, problem))
    return errors


def validate_labels(labels: Mapping[str, Any], path: str) -> list[FieldError]:
    errors: list[FieldError] = []
    for key, value in labels.items():
        for problem in label_key_errors(str(key)):
            errors.append(invalid(path, key, problem))
        if not isinstance(value, str):
            errors.append(invalid(path, value, "label values must be strings"))
            continue
        for problem in label_value_errors(value):
            errors.append(invalid(path, value, problem))
    return errors


def validate_meta_update(new: Mapping[str, Any], old: Mapping[str, Any]) -> list[FieldError]:
    """ValidateObjectMetaUpdate: immutable identity and no new finalizers while deleting."""
    errors: list[FieldError] = []
    if old.get("deletionTimestamp"):
        added = [f for f in new.get("finalizers") or [] if f not in (old.get("finalizers") or [])]
        if added:
            errors.append(
                forbidden(
                    "metadata.finalizers",
                    "no new finalizers can be added if the object is being deleted, found new finalizers "
                    + "[]string{"
                    + ", ".join(json.dumps(f) for f in added)
                    + "}",
                )
            )
    return errors


# ------------------------------------------------------------------------------ pod spec

RESTART_POLICIES = ("Always", "OnFailure", "Never")
PULL_POLICIES = ("Always", "IfNotPresent", "Never")


def validate_pod_spec(spec: Any, path: str) -> list[FieldError]:
    """The parts of ValidatePodSpec that catch malformed containers, volumes and env."""
    if not isinstance(spec, dict):
        return [required(path)]
    errors: list[FieldError] = []
    volumes = spec.get("volumes") or []
    volume_names: set[str] = set()
    for index, volume in enumerate(volumes):
        vpath = f"{path}.volumes[{index}]"
        vname = volume.get("name") if isinstance(volume, dict) else None
        if not vname:
            errors.append(required(f"{vpath}.name"))
            continue
        for problem in dns_label_errors(vname):
            errors.append(invalid(f"{vpath}.name", vname, problem))
        if vname in volume_names:
            errors.append(duplicate(f"{vpath}.name", vname))
        volume_names.add(vname)
    seen: set[str] = set()
    init = spec.get("initContainers") or []
    containers = spec.get("containers") or []
    for group, items in (("initContainers", init), ("containers", containers)):
        for index, container in enumerate(items):
            errors.extend(_validate_container(container, f"{path}.{group}[{index}]", seen, volume_names))
    if not containers:
        errors.append(required(f"{path}.containers"))
    policy = spec.get("restartPolicy")
    if policy is not None and policy not in RESTART_POLICIES:
        errors.append(not_supported(f"{path}.restartPolicy", policy, RESTART_POLICIES))
    for key in ("terminationGracePeriodSeconds", "activeDeadlineSeconds"):
        value = spec.get(key)
        if value is not None and (not isinstance(value, int) or value < 0):
            errors.append(invalid(f"{path}.{key}", value, "must be greater than or equal to 0"))
    return errors


def _validate_container(container: Any, path: str, seen: set[str], volumes: set[str]) -> list[FieldError]:
    errors: list[FieldError] = []
    if not isinstance(container, dict):
        return [required(f"{path}.name"), required(f"{path}.image")]
    name = container.get("name")
    if not name:
        errors.append(required(f"{path}.name"))
    else:
        for problem in dns_label_errors(name):
            errors.append(invalid(f"{path}.name", name, problem))
        if name in seen:
            errors.append(duplicate(f"{path}.name", name))
        seen.add(name)
    image = container.get("image")
    if not image:
        errors.append(required(f"{path}.image"))
    elif image != image.strip():
        errors.append(invalid(f"{path}.image", image, "must not have leading or trailing whitespace"))
    pull = container.get("imagePullPolicy")
    if pull is not None and pull not in PULL_POLICIES:
        errors.append(not_supported(f"{path}.imagePullPolicy", pull, PULL_POLICIES))
    for index, env in enumerate(container.get("env") or []):
        if not (isinstance(env, dict) and env.get("name")):
            errors.append(required(f"{path}.env[{index}].name"))
    for index, mount in enumerate(container.get("volumeMounts") or []):
        mpath = f"{path}.volumeMounts[{index}]"
        mname = mount.get("name") if isinstance(mount, dict) else None
        if not mname:
            errors.append(required(f"{mpath}.name"))
        elif mname not in volumes:
            errors.append(not_found(f"{mpath}.name", mname))
        if not (isinstance(mount, dict) and mount.get("mountPath")):
            errors.append(required(f"{mpath}.mountPath"))
    for index, port in enumerate(container.get("ports") or []):
        number = port.get("containerPort") if isinstance(port, dict) else None
        if not isinstance(number, int) or not 1 <= number <= 65535:
            errors.append(
                invalid(
                    f"{path}.ports[{index}].containerPort", number, "must be between 1 and 65535, inclusive"
                )
            )
    return errors


POD_MUTABLE_MESSAGE = (
    "pod updates may not change fields other than `spec.containers[*].image`,"
    "`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions "
    "to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was "
    "previously negative)"
)


def validate_pod_spec_update(new: Mapping[str, Any], old: Mapping[str, Any]) -> list[FieldError]:
    """A pod's spec is immutable apart from images, the deadline and added tolerations."""
    mutable_new = json.loads(json.dumps(new))
    mutable_old = json.loads(json.dumps(old))
    for spec in (mutable_new, mutable_old):
        for group in ("containers", "initContainers"):
            for container in spec.get(group) or []:
                if isinstance(container, dict):
                    container.pop("image", None)
        spec.pop("activeDeadlineSeconds", None)
        spec.pop("terminationGracePeriodSeconds", None)
        spec.pop("schedulingGates", None)
    old_tolerations = mutable_old.pop("tolerations", None) or []
    new_tolerations = mutable_new.pop("tolerations", None) or []
    errors: list[FieldError] = []
    if mutable_new != mutable_old or any(t not in new_tolerations for t in old_tolerations):
        errors.append(forbidden("spec", POD_MUTABLE_MESSAGE))
    return errors


# ---------------------------------------------------------------------------------- kinds


def _nonnegative(spec: Mapping[str, Any], key: str, path: str) -> list[FieldError]:
    value = spec.get(key)
    if value is None:
        return []
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        return [invalid(f"{path}.{key}", value, "must be greater than or equal to 0")]
    return []


def validate_pod(pod: Mapping[str, Any]) -> list[FieldError]:
    errors = validate_object_meta(pod.get("metadata") or {})
    errors.extend(validate_pod_spec(pod.get("spec"), "spec"))
    return errors


def validate_job(job: Mapping[str, Any]) -> list[FieldError]:
    meta = job.get("metadata") or {}
    errors = validate_object_meta(meta)
    spec = job.get("spec")
    if not isinstance(spec, dict):
        return [*errors, required("spec.template.spec.containers")]
    for key in (
        "parallelism",
        "completions",
        "backoffLimit",
        "activeDeadlineSeconds",
        "ttlSecondsAfterFinished",
    ):
        errors.extend(_nonnegative(spec, key, "spec"))
    template = spec.get("template")
    if not isinstance(template, dict):
        errors.append(required("spec.template.spec.containers"))
        return errors
    template_meta = template.get("metadata") or {}
    template_labels = template_meta.get("labels") or {}
    errors.extend(validate_labels(template_labels, "spec.template.labels"))
    errors.extend(validate_pod_spec(template.get("spec"), "spec.template.spec"))
    policy = (template.get("spec") or {}).get("restartPolicy")
    if policy not in ("OnFailure", "Never"):
        errors.append(not_supported("spec.template.spec.restartPolicy", policy, ("OnFailure", "Never")))
    selector = spec.get("selector")
    if selector is None:
        errors.append(required("spec.selector"))
    elif isinstance(selector, dict):
        parsed = _selector_from_object(selector)
        if parsed is None:
            errors.append(invalid("spec.selector", selector, "invalid label selector"))
        else:
            if not spec.get("manualSelector"):
                uid, name = meta.get("uid", ""), meta.get("name", "")
                expected = {
                    "controller-uid": uid,
                    "batch.kubernetes.io/controller-uid": uid,
                    "job-name": name,
                    "batch.kubernetes.io/job-name": name,
                }
                if not parsed(expected):
                    errors.append(invalid("spec.selector", selector, "`selector` not auto-generated"))
            if not parsed(template_labels):
                errors.append(
                    invalid(
                        "spec.template.metadata.labels",
                        template_labels,
                        "`selector` does not match template `labels`",
                    )
                )
    return errors


def _selector_from_object(selector: Mapping[str, Any]) -> Any:
    """A metav1.LabelSelector as a predicate on a label map, or None when malformed."""
    clauses = [f"{key}={value}" for key, value in (selector.get("matchLabels") or {}).items()]
    operators = {"In": "in", "NotIn": "notin"}
    for expression in selector.get("matchExpressions") or []:
        key, operator, values = (
            expression.get("key"),
            expression.get("operator"),
            expression.get("values") or [],
        )
        if operator in operators:
            clauses.append(f"{key} {operators[operator]} ({','.join(values)})")
        elif operator == "Exists":
            clauses.append(str(key))
        elif operator == "DoesNotExist":
            clauses.append(f"!{key}")
        else:
            return None
    try:
        parsed = parse_label_selector(",".join(clauses))
    except ValueError:
        return None
    return parsed.matches


def validate_job_update(new: Mapping[str, Any], old: Mapping[str, Any]) -> list[FieldError]:
    errors: list[FieldError] = []
    new_spec, old_spec = new.get("spec") or {}, old.get("spec") or {}
    for key in ("completions", "selector", "template", "completionMode", "podFailurePolicy"):
        if new_spec.get(key) != old_spec.get(key):
            if key == "template" and old_spec.get("suspend") and _only_scheduling_changed(new_spec, old_spec):
                continue
            errors.append(invalid(f"spec.{key}", new_spec.get(key), "field is immutable"))
    return errors


def _only_scheduling_changed(new_spec: Mapping[str, Any], old_spec: Mapping[str, Any]) -> bool:
    """A suspended Job may change its template's scheduling directives and metadata."""
    new_template = json.loads(json.dumps(new_spec.get("template") or {}))
    old_template = json.loads(json.dumps(old_spec.get("template") or {}))
    for template in (new_template, old_template):
        template.pop("metadata", None)
        pod_spec = template.get("spec") or {}
        for key in ("nodeSelector", "tolerations", "affinity", "schedulingGates"):
            pod_spec.pop(key, None)
    return bool(new_template == old_template)


def validate_config_data(obj: Mapping[str, Any], keys: Iterable[str]) -> list[FieldError]:
    errors: list[FieldError] = []
    seen: dict[str, str] = {}
    for section in keys:
        for key in obj.get(section) or {}:
            if not CONFIG_KEY.match(key) or key in (".", ".."):
                detail = CONFIG_KEY_MESSAGE if key not in (".", "..") else f"must not be '{key}'"
                errors.append(invalid(f"{section}[{key}]", key, detail))
            if key in seen:
                errors.append(invalid(f"{section}[{key}]", key, f"duplicate of key present in {seen[key]}"))
            seen[key] = section
    return errors


def validate_secret(secret: Mapping[str, Any]) -> list[FieldError]:
    errors = validate_object_meta(secret.get("metadata") or {})
    errors.extend(validate_config_data(secret, ("data",)))
    total = sum(len(value) * 3 // 4 for value in (secret.get("data") or {}).values())
    if total > 1024 * 1024:
        errors.append(FieldError("FieldValueTooLong", "data", detail="must have at most 1048576 bytes"))
    return errors


def validate_configmap(configmap: Mapping[str, Any]) -> list[FieldError]:
    errors = validate_object_meta(configmap.get("metadata") or {})
    errors.extend(validate_config_data(configmap, ("data", "binaryData")))
    return errors


def validate_immutable_data(
    new: Mapping[str, Any], old: Mapping[str, Any], sections: Iterable[str]
) -> list[FieldError]:
    """Secrets and ConfigMaps marked `immutable: true` keep their data and the flag itself."""
    errors: list[FieldError] = []
    if old.get("immutable") is True:
        for section in sections:
            if (new.get(section) or {}) != (old.get(section) or {}):
                errors.append(forbidden(section, "field is immutable when `immutable` is set"))
        if new.get("immutable") is not True:
            errors.append(forbidden("immutable", "field is immutable when `immutable` is set"))
    return errors


def validate_lease(lease: Mapping[str, Any]) -> list[FieldError]:
    errors = validate_object_meta(lease.get("metadata") or {})
    spec = lease.get("spec") or {}
    duration = spec.get("leaseDurationSeconds")
    if duration is not None and (not isinstance(duration, int) or duration <= 0):
        errors.append(invalid("spec.leaseDurationSeconds", duration, "must be greater than 0"))
    errors.extend(_nonnegative(spec, "leaseTransitions", "spec"))
    return errors


def validate_event(event: Mapping[str, Any]) -> list[FieldError]:
    """ValidateEvent (core/v1) for what a recorder writes: an involved object in the event's namespace."""
    meta = event.get("metadata") or {}
    errors = validate_object_meta(meta)
    involved = event.get("involvedObject") or {}
    if involved.get("namespace", "") not in ("", meta.get("namespace")):
        errors.append(
            invalid("involvedObject.namespace", involved.get("namespace"), "does not match event.namespace")
        )
    return errors


def validate_namespace(namespace: Mapping[str, Any]) -> list[FieldError]:
    return validate_object_meta(namespace.get("metadata") or {}, label_names=True)
