"""The API server's storage: every object by resource and key, one global resourceVersion, the
history of changes that watches replay, and the one write path every change goes through."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from tests.conftest import WAIT_SECONDS
from tests.fake_kube import errors, kinds
from tests.fake_kube.kinds import RESOURCES, Resource
from tests.fake_kube.objects import etcd_key, metadata_of, timestamp, utc_now


@dataclass
class Change:
    """One committed write, as the history keeps it for watches."""

    rv: int
    type: str
    resource: str
    namespace: str
    name: str
    obj: dict[str, Any]
    prev: dict[str, Any] | None

    @property
    def stored(self) -> dict[str, Any] | None:
        """The object as stored after the change; None once it is deleted."""
        return None if self.type == "DELETED" else self.obj


class Store:
    """Objects, history and the write path; the other parts of the fake react to each write
    through `_committed`."""

    history_limit: int = 10_000

    def __init__(self) -> None:
        self._store: dict[str, dict[tuple[str, str], dict[str, Any]]] = {plural: {} for plural in RESOURCES}
        self._rv = 0
        self._compacted = 0
        self._history: list[Change] = []
        self._changed = asyncio.Event()
        # Open streaming answers (watches, followed logs), cut when the server stops.
        self._streams: dict[int, web.Request] = {}

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
        return sorted(
            items, key=lambda o: etcd_key(metadata_of(o).get("namespace", ""), metadata_of(o)["name"])
        )

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
        meta.setdefault("uid", metadata_of(old).get("uid") if old else str(uuid.uuid4()))
        meta.setdefault(
            "creationTimestamp", metadata_of(old).get("creationTimestamp") if old else timestamp(utc_now())
        )
        return self._commit(resource, key, new, "MODIFIED" if old else "ADDED")

    async def wait_until(self, predicate: Callable[[], bool], within: float = WAIT_SECONDS) -> None:
        """Wait until `predicate()` holds, re-checking on every change; TimeoutError after `within` s."""
        async with asyncio.timeout(within):
            while not predicate():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), 0.05)

    def compact(self) -> int:
        """Forget the event history: every resourceVersion below the current one becomes too old."""
        self._compacted = self._rv
        self._history.clear()
        return self._compacted

    def _require(self, resource: Resource, namespace: str | None, name: str) -> dict[str, Any]:
        obj = self._store[resource.plural].get(((namespace or "") if resource.namespaced else "", name))
        if obj is None:
            raise errors.not_found(resource, name)
        return copy.deepcopy(obj)

    def _create_namespace(self, name: str) -> None:
        namespace = {"kind": "Namespace", "apiVersion": "v1", "metadata": {"name": name}}
        meta = namespace["metadata"]
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = timestamp(utc_now())
        kinds.prepare_create(RESOURCES["namespaces"], namespace)
        self._commit(RESOURCES["namespaces"], ("", name), namespace, "ADDED")

    def _commit(
        self, resource: Resource, key: tuple[str, str], new: dict[str, Any] | None, event_type: str
    ) -> dict[str, Any]:
        """The single write path: bump the resourceVersion, store, record history, let the watches
        and controllers react (`_committed`), notify."""
        table = self._store[resource.plural]
        prev = table.get(key)
        self._rv += 1
        if new is None:
            assert prev is not None
            obj = copy.deepcopy(prev)
            obj["metadata"]["resourceVersion"] = str(self._rv)
            del table[key]
        else:
            obj = copy.deepcopy(new)
            obj.setdefault("metadata", {})["resourceVersion"] = str(self._rv)
            obj = kinds.canonical(resource, obj)
            table[key] = obj
        change = Change(self._rv, event_type, resource.plural, key[0], key[1], obj, prev)
        self._history.append(change)
        if len(self._history) > self.history_limit:
            dropped = self._history[: len(self._history) - self.history_limit]
            del self._history[: len(dropped)]
            self._compacted = dropped[-1].rv
        self._committed(change)
        self._notify()
        return copy.deepcopy(obj)

    def _committed(self, change: Change) -> None:
        """Called after every write; watches and controllers extend it (calling super)."""

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
