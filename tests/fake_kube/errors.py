"""`Status` errors worded the way k8s.io/apimachinery/pkg/api/errors words them."""

from __future__ import annotations

from typing import Any

from tests.fake_kube.kinds import Resource
from tests.fake_kube.validation import FieldError, aggregate

OPTIMISTIC_LOCK = (
    "the object has been modified; please apply your changes to the latest version and try again"
)
INCONSISTENT_CONTINUE = (
    "The provided continue parameter is too old to display a consistent list result. You can start a new "
    "list without the continue parameter, or use the continue token in this response to retrieve the "
    "remainder of the results. Continuing with the provided token results in an inconsistent list - "
    "objects that were created, modified, or deleted between the time the first chunk was returned and "
    "now may show up in the list."
)

DEFAULT_REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    406: "NotAcceptable",
    409: "Conflict",
    410: "Expired",
    413: "RequestEntityTooLarge",
    415: "UnsupportedMediaType",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}


class KubeError(Exception):
    """An API error; `status()` is the body the server sends."""

    def __init__(
        self,
        code: int,
        reason: str,
        message: str,
        details: dict[str, Any] | None = None,
        *,
        list_meta: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details
        self.list_meta = list_meta or {}
        self.headers = headers or {}

    def status(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": dict(self.list_meta),
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
        }
        if self.details is not None:
            body["details"] = self.details
        body["code"] = self.code
        return body


def details(
    resource: Resource | None,
    name: str = "",
    *,
    kind: str | None = None,
    causes: list[dict[str, str]] | None = None,
) -> dict[str, Any]:
    """StatusDetails with Go's omitempty: empty name and group are left out."""
    result: dict[str, Any] = {}
    if name:
        result["name"] = name
    if resource is not None and resource.group:
        result["group"] = resource.group
    if kind or resource is not None:
        result["kind"] = kind or (resource.plural if resource else "")
    if causes:
        result["causes"] = causes
    return result


def quoted(name: str) -> str:
    """Go's %q for the simple strings names are."""
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def not_found(resource: Resource, name: str) -> KubeError:
    return KubeError(
        404, "NotFound", f"{resource.qualified} {quoted(name)} not found", details(resource, name)
    )


def already_exists(resource: Resource, name: str) -> KubeError:
    return KubeError(
        409, "AlreadyExists", f"{resource.qualified} {quoted(name)} already exists", details(resource, name)
    )


def conflict(resource: Resource, name: str, problem: str = OPTIMISTIC_LOCK) -> KubeError:
    return KubeError(
        409,
        "Conflict",
        f"Operation cannot be fulfilled on {resource.qualified} {quoted(name)}: {problem}",
        details(resource, name),
    )


def invalid(
    resource: Resource, name: str, errors: list[FieldError], *, by_resource: bool = False
) -> KubeError:
    """NewInvalid; `by_resource` names the GroupResource instead of the kind, as a few call sites do."""
    label = resource.qualified if by_resource else resource.qualified_kind
    return KubeError(
        422,
        "Invalid",
        f"{label} {quoted(name)} is invalid: {aggregate(errors)}",
        details(
            resource,
            name,
            kind=resource.plural if by_resource else resource.kind,
            causes=[e.cause() for e in errors],
        ),
    )


def forbidden(resource: Resource, name: str, problem: str) -> KubeError:
    """NewForbidden, as admission plugins answer."""
    subject = f"{resource.qualified} {quoted(name)}" if name else resource.qualified
    return KubeError(403, "Forbidden", f"{subject} is forbidden: {problem}", details(resource, name))


def bad_request(message: str) -> KubeError:
    return KubeError(400, "BadRequest", message)


def internal(message: str) -> KubeError:
    return KubeError(
        500, "InternalError", f"Internal error occurred: {message}", {"causes": [{"message": message}]}
    )


def expired(message: str, *, continue_token: str | None = None) -> KubeError:
    meta = {"continue": continue_token} if continue_token else None
    return KubeError(410, "Expired", message, list_meta=meta)


def resource_not_found() -> KubeError:
    return KubeError(404, "NotFound", "the server could not find the requested resource", {})


def method_not_allowed() -> KubeError:
    return KubeError(
        405, "MethodNotAllowed", "the server does not allow this method on the requested resource", {}
    )


def unsupported_media_type(accepted: list[str]) -> KubeError:
    return KubeError(
        415,
        "UnsupportedMediaType",
        "the body of the request was in an unknown format - accepted media types include: "
        + ", ".join(accepted),
    )


def cannot_decode(resource: Resource, problem: str) -> KubeError:
    return bad_request(
        f'{resource.kind} in version "{resource.version}" cannot be handled as a {resource.kind}: {problem}'
    )
