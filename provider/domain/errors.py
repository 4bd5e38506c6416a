"""Errors the domain and services raise; the API layer maps each kind to one HTTP status."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class FieldProblem:
    """One problem with one input field; `field` is a dotted path such as `body.inputs.data`."""

    field: str
    message: str


class DomainError(Exception):
    """Base class: carries a human-readable detail and optional field problems."""

    def __init__(self, detail: str, problems: list[FieldProblem] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.problems = list(problems or [])


class NotFound(DomainError):
    """The resource does not exist, or the caller may not know that it exists."""

    def __init__(self, kind: str, ident: str) -> None:
        super().__init__(f"{kind} {ident!r} not found")
        self.kind = kind
        self.ident = ident


class Conflict(DomainError):
    """The request clashes with the current state (a duplicate, or a state that forbids it)."""


class InvalidInput(DomainError):
    """Well-formed input that breaks a rule; `problems` names every offending field."""


class BadRequest(InvalidInput):
    """Input that is refused outright (answered 400 rather than 422); `slug` names the rule."""

    slug = "bad-request"


class InvalidKey(BadRequest):
    """An object key or prefix that breaks the key rules."""

    slug = "invalid-key"


class ForbiddenAddress(BadRequest):
    """An outbound URL (import source, callback) that the SSRF guard refuses."""

    slug = "forbidden-address"


class Unauthenticated(DomainError):
    """No credential, or one that is unknown, expired or revoked."""


class Forbidden(DomainError):
    """A valid credential that lacks the role or scope the operation needs."""


class AssetNotGranted(Forbidden):
    """The asset is outside what the workspace's offering, or the tenant's allowance, grants."""

    slug = "asset-not-granted"


class OfferingNotGranted(BadRequest):
    """A provisioning request for an offering that grants no catalog asset (EDC: fatal, no retry)."""

    slug = "offering-not-granted"


class PayloadTooLarge(DomainError):
    """More bytes than a quota or limit allows; nothing was stored."""


class ChecksumMismatch(DomainError):
    """The bytes received do not match the checksum the client declared; nothing was stored."""


class RangeNotSatisfiable(DomainError):
    """A byte range outside the object."""

    def __init__(self, size: int) -> None:
        super().__init__(f"the range lies outside the object's {size} bytes")
        self.size = size


class NotSupported(DomainError):
    """The configured backend cannot do this (e.g. temporary S3 credentials on the filesystem)."""


class Unavailable(DomainError):
    """A backend the operation needs did not answer; the client may retry later."""


@dataclass
class ProblemCollector:
    """Collects every field problem before failing, so a caller sees all of them at once."""

    problems: list[FieldProblem] = field(default_factory=list)

    def add(self, field_path: str, message: str) -> None:
        self.problems.append(FieldProblem(field_path, message))

    def raise_if_any(self, detail: str) -> None:
        if self.problems:
            raise InvalidInput(detail, self.problems)
