"""The controllers that run by themselves after each write (`gc_delay` seconds later): the
garbage collector (owner references, orphan and foreground deletion), the namespace controller,
and the Job controller's counting."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

from tests.fake_kube.deletion import Deletion
from tests.fake_kube.kinds import RESOURCES, Resource
from tests.fake_kube.store import Change


class Controllers(Deletion):
    gc_delay: float = 0.0

    def __init__(self) -> None:
        super().__init__()
        self._reconcile_handle: asyncio.Handle | None = None
        self._reconciling = False

    def _committed(self, change: Change) -> None:
        super()._committed(change)
        self._schedule_reconcile()

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
                self._sync_dirty_jobs()
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
