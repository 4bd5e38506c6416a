"""core/v1 Events as client-go's event recorder writes them."""

from __future__ import annotations

import copy
import time
import uuid
from collections.abc import Mapping
from typing import Any

from tests.fake_kube.kinds import RESOURCES
from tests.fake_kube.objects import metadata_of, timestamp, utc_now
from tests.fake_kube.store import Store


class Events(Store):
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
        meta = metadata_of(involved)
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
        now = timestamp(utc_now())
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
