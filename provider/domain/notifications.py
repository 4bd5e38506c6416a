"""Notifications: events about executions, imports and workspaces, the subscriptions that want
them, and the signed deliveries (Standard Webhooks) that carry them to a receiver."""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import hmac
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from provider.domain.errors import FieldProblem, InvalidInput

EVENT_VERSION = 1
SECRET_PREFIX = "whsec_"  # noqa: S105 - the format's prefix, not a secret


class EventType(enum.StrEnum):
    EXECUTION_STATE_CHANGED = "execution.state_changed"
    EXECUTION_COMPLETED = "execution.completed"
    EXECUTION_FAILED = "execution.failed"
    EXECUTION_CANCELED = "execution.canceled"
    IMPORT_STATE_CHANGED = "import.state_changed"
    IMPORT_SUCCEEDED = "import.succeeded"
    IMPORT_FAILED = "import.failed"
    IMPORT_CANCELED = "import.canceled"
    WORKSPACE_CREATED = "workspace.created"
    WORKSPACE_DELETED = "workspace.deleted"


FAMILIES = ("execution", "import", "workspace")
EVENT_PATTERNS = sorted([*(t.value for t in EventType), *(f"{f}.*" for f in FAMILIES)])


def expand_types(patterns: Iterable[str]) -> frozenset[str]:
    """The concrete event types named by types and family wildcards (`execution.*`)."""
    result: set[str] = set()
    for pattern in patterns:
        if pattern.endswith(".*"):
            family = pattern[:-2]
            result.update(t.value for t in EventType if t.value.startswith(family + "."))
        else:
            result.add(EventType(pattern).value)
    return frozenset(result)


def type_problem(pattern: str) -> str | None:
    """Why `pattern` names no event type, or None."""
    if pattern in EVENT_PATTERNS:
        return None
    return f"unknown event type {pattern!r} (known: {', '.join(EVENT_PATTERNS)})"


def check_types(patterns: Iterable[str], field: str) -> tuple[str, ...]:
    """The patterns, if there is at least one and each names event types; else InvalidInput."""
    patterns = tuple(patterns)
    problems = [FieldProblem(f"{field}.{i}", p) for i, x in enumerate(patterns) if (p := type_problem(x))]
    if not patterns:
        problems.append(FieldProblem(field, "name at least one event type"))
    if problems:
        raise InvalidInput("unknown event types", problems)
    return patterns


# --- secrets and signatures (https://www.standardwebhooks.com) ---------------------------------


def generate_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def secret_problem(secret: str) -> str | None:
    """Why `secret` is not a Standard Webhooks secret (`whsec_` + base64 of 24-64 bytes), or None."""
    if not secret.startswith(SECRET_PREFIX):
        return "must start with 'whsec_'"
    encoded = secret[len(SECRET_PREFIX) :]
    # Whole groups of four with at most two '=': Python's decoder also takes padding beyond them.
    if len(encoded) % 4 or encoded.endswith("==="):
        return "must be 'whsec_' followed by standard base64"
    try:
        raw = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        return "must be 'whsec_' followed by standard base64"
    if not 24 <= len(raw) <= 64:
        return f"must encode 24 to 64 bytes (encodes {len(raw)})"
    return None


def secret_bytes(secret: str) -> bytes:
    return base64.b64decode(secret[len(SECRET_PREFIX) :])


def sign(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` header value: `v1,` and the base64 HMAC-SHA256 of id.timestamp.body."""
    signed = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret_bytes(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


# --- events -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Event:
    """Something that happened to one resource; `body` is the JSON every receiver gets."""

    id: str
    type: str
    tenant_id: str
    workspace_id: str | None
    subject_id: str  # the execution, import or workspace the event is about
    labels: dict[str, str]  # the execution's labels (subscription filters match them)
    occurred_at: datetime
    body: str  # {id, type, occurred_at, data, version}, serialised once: every attempt sends these bytes


@dataclass(frozen=True)
class EventFilter:
    """Which events a subscription or a stream wants, within what its owner may see."""

    types: frozenset[str]
    tenant_id: str | None  # None: every tenant (operators)
    owner_workspace_id: str | None = None  # a workspace token sees its workspace only
    execution_id: str | None = None
    workspace_id: str | None = None
    labels: tuple[tuple[str, str], ...] = ()

    def matches(self, event: Event) -> bool:
        if event.type not in self.types:
            return False
        if self.tenant_id is not None and event.tenant_id != self.tenant_id:
            return False
        for wanted in (self.owner_workspace_id, self.workspace_id):
            if wanted is not None and event.workspace_id != wanted:
                return False
        if self.execution_id is not None and (
            not event.type.startswith("execution.") or event.subject_id != self.execution_id
        ):
            return False
        return all(event.labels.get(k) == v for k, v in self.labels)


# --- subscriptions and deliveries ---------------------------------------------------------------


class SubscriptionState(enum.StrEnum):
    ACTIVE = "active"
    DISABLED = "disabled"  # the receiver answered 410 Gone: nothing more is sent


@dataclass(frozen=True)
class Subscription:
    id: str
    tenant_id: str
    owner_workspace_id: str | None  # set when a workspace token created it
    url: str
    events: tuple[str, ...]  # as given (types and family wildcards)
    execution_id: str | None
    workspace_id: str | None
    labels: dict[str, str]
    secret: str = field(repr=False)
    state: SubscriptionState
    created_at: datetime
    updated_at: datetime
    disabled_reason: str | None = None

    @property
    def filter(self) -> EventFilter:
        return EventFilter(
            types=expand_types(self.events),
            tenant_id=self.tenant_id,
            owner_workspace_id=self.owner_workspace_id,
            execution_id=self.execution_id,
            workspace_id=self.workspace_id,
            labels=tuple(sorted(self.labels.items())),
        )


class DeliveryState(enum.StrEnum):
    PENDING = "pending"  # waiting for its turn, its next attempt, or in flight
    SUCCEEDED = "succeeded"
    DEAD = "dead"  # out of attempts or too old: a dead letter, retried only on request


@dataclass(frozen=True)
class Attempt:
    at: datetime
    duration_ms: int
    status: int | None  # the receiver's HTTP status, None when there was no answer
    error: str | None


@dataclass(frozen=True)
class Delivery:
    """One event for one subscription. Its id is the `webhook-id`: the same on every attempt."""

    id: str
    subscription_id: str
    event_id: str
    event_type: str
    state: DeliveryState
    attempts: int
    next_attempt_at: datetime
    created_at: datetime
    finished_at: datetime | None = None
    last_error: str | None = None
    history: tuple[Attempt, ...] = ()


@dataclass(frozen=True)
class ClaimedDelivery:
    """A delivery this worker holds a lease on, with what it sends."""

    id: str
    subscription_id: str
    url: str
    secret: str = field(repr=False)
    body: str
    attempts: int
    created_at: datetime
    occurred_at: datetime


@dataclass(frozen=True)
class Outcome:
    """What one attempt came to, for the batched bookkeeping."""

    delivery_id: str
    subscription_id: str
    attempt: Attempt
    state: DeliveryState
    next_attempt_at: datetime | None = None  # pending: when to try again
    disable_reason: str | None = None  # 410 Gone: the subscription is disabled


def event_document(event_id: str, event_type: str, occurred_at: str | None, data: Any) -> dict[str, Any]:
    return {
        "id": event_id,
        "type": event_type,
        "occurred_at": occurred_at,
        "data": data,
        "version": EVENT_VERSION,
    }
