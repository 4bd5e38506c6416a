"""Helpers for the stored objects: times as the API server writes them, keys, generated names and
conditions as controllers write them."""

from __future__ import annotations

import random
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

# Phases after which a pod's containers run no more.
TERMINAL = ("Succeeded", "Failed")
_NAME_CHARS = "bcdfghjklmnpqrstvwxz2456789"


def utc_now() -> datetime:
    return datetime.now(UTC)


def timestamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _random_suffix(length: int = 5) -> str:
    return "".join(random.choice(_NAME_CHARS) for _ in range(length))


def generate_name(base: str) -> str:
    return base[:58] + _random_suffix()


def etcd_key(namespace: str, name: str) -> str:
    """The order etcd keeps objects in: lists and initial watch events follow it."""
    return f"{namespace}/{name}" if namespace else name


def metadata_of(obj: Mapping[str, Any]) -> dict[str, Any]:
    meta = obj.get("metadata")
    return meta if isinstance(meta, dict) else {}


def set_condition(
    status: dict[str, Any],
    type_: str,
    value: str,
    reason: str | None = None,
    message: str | None = None,
    *,
    probe: bool = False,
) -> None:
    """Write a condition as controllers do: its transition time moves only when its status
    does, and its keys keep the API server's order."""
    now = timestamp(utc_now())
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
        k: condition[k] for k in ("type", "status", "lastProbeTime", "lastTransitionTime") if k in condition
    }
    ordered.update({k: v for k, v in condition.items() if k not in ordered})
    condition.clear()
    condition.update(ordered)
