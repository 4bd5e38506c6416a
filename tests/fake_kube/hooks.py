"""Hooks that write or wait as a client or the cluster would, beside those of each resource
(jobs.py, pods.py, events.py), the faults (faults.py) and the watches (watches.py)."""

from __future__ import annotations

import asyncio
import copy
import time
from collections.abc import Callable, Mapping
from typing import Any

from tests.conftest import WAIT_SECONDS
from tests.fake_kube import errors, kinds
from tests.fake_kube.controllers import Controllers
from tests.fake_kube.registry import Registry


class ObjectHooks(Controllers, Registry):
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

    def add_finalizer(self, kind: str, namespace: str | None, name: str, finalizer: str) -> dict[str, Any]:
        """Another controller holds the object: once deleted, it stays until `remove_finalizer`."""
        return self._edit_finalizers(kind, namespace, name, lambda held: [*held, finalizer])

    def remove_finalizer(self, kind: str, namespace: str | None, name: str, finalizer: str) -> dict[str, Any]:
        """That controller lets go, as its update would: a deleted object whose last finalizer goes
        is gone (DELETED)."""
        return self._edit_finalizers(kind, namespace, name, lambda held: [f for f in held if f != finalizer])

    def _edit_finalizers(
        self, kind: str, namespace: str | None, name: str, edit: Callable[[list[str]], list[str]]
    ) -> dict[str, Any]:
        resource = kinds.resolve(kind)
        obj = self._require(resource, namespace, name)
        obj["metadata"]["finalizers"] = edit(list(obj["metadata"].get("finalizers") or []))
        namespace = (namespace or "") if resource.namespaced else ""
        updated, _ = self._update(resource, namespace, name, obj)
        return updated

    async def settle(self, within: float = WAIT_SECONDS) -> None:
        """Wait until the garbage collector and the fake kubelet have nothing left to do."""
        deadline = time.monotonic() + within
        while self._reconcile_handle is not None or self._kubelet_handles:
            if time.monotonic() > deadline:
                raise TimeoutError("controllers did not settle")
            await asyncio.sleep(0.005)
