"""Watches as the watch cache serves them: replay from a resourceVersion (or `410 Expired` after
compaction), initial events, bookmarks, selectors applied to each change (an object that stops
matching is DELETED for that watcher), timeouts, and hooks to drop them."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.conftest import WAIT_SECONDS
from tests.fake_kube import kinds
from tests.fake_kube.errors import KubeError
from tests.fake_kube.kinds import Resource
from tests.fake_kube.lists import parse_selectors, selected
from tests.fake_kube.objects import etcd_key
from tests.fake_kube.selectors import FieldSelector, LabelSelector
from tests.fake_kube.store import Change, Store
from tests.fake_kube.wire import json_line, parse_bool, parse_int, parse_rv, too_large


class WatchRecord(dict[str, Any]):
    """One watch request: its query parameters, plus `resource` and `namespace` (None for a
    watch across all namespaces), readable as keys or as attributes."""

    def __init__(self, resource: str, namespace: str | None, params: Mapping[str, str]) -> None:
        super().__init__(params)
        self["resource"] = resource
        self["namespace"] = namespace
        self._params = dict(params)

    @property
    def resource(self) -> str:
        return str(self["resource"])

    @property
    def namespace(self) -> str | None:
        value = self["namespace"]
        return None if value is None else str(value)

    @property
    def params(self) -> dict[str, str]:
        """The query parameters alone."""
        return dict(self._params)


@dataclass(eq=False)
class Watch:
    """One open watch: what it selects, and the messages waiting to be written to it."""

    resource: Resource
    namespace: str | None
    labels: LabelSelector
    fields: FieldSelector
    request: web.Request
    queue: asyncio.Queue[dict[str, Any] | None] = field(default_factory=asyncio.Queue)


class Watches(Store):
    bookmark_interval: float = 1.0

    def __init__(self) -> None:
        super().__init__()
        self.open_watches: dict[tuple[str, str | None], int] = {}
        self.watch_requests: list[WatchRecord] = []
        self._watches: list[Watch] = []

    async def wait_for_watches(
        self, kind: str, namespace: str | None, count: int = 1, within: float = WAIT_SECONDS
    ) -> None:
        """Wait until at least `count` watches on that collection are open."""
        key = (kinds.resolve(kind).plural, namespace)
        try:
            await self.wait_until(lambda: self.open_watches.get(key, 0) >= count, within)
        except TimeoutError:
            raise TimeoutError(f"{count} watch(es) on {key} not open; open: {self.open_watches}") from None

    def drop_watches(self, *, abrupt: bool = True) -> int:
        """End every open watch: `abrupt` cuts the connection mid-stream, else the stream ends cleanly."""
        count = 0
        for watch in list(self._watches):
            count += 1
            if abrupt:
                if watch.request.transport is not None:
                    watch.request.transport.abort()
            else:
                watch.queue.put_nowait(None)
        return count

    def _committed(self, change: Change) -> None:
        super()._committed(change)
        for watch in list(self._watches):
            message = self._watch_event(watch, change)
            if message is not None:
                watch.queue.put_nowait(message)

    def _watch_event(self, watch: Watch, event: Change) -> dict[str, Any] | None:
        """The event a watcher sees, as the watch cache filters it: an object that stops
        matching the selectors is DELETED for this watcher, one that starts matching ADDED."""
        if event.resource != watch.resource.plural:
            return None
        if watch.namespace is not None and watch.resource.namespaced and event.namespace != watch.namespace:
            return None
        current = event.type != "DELETED" and selected(watch.resource, event.obj, watch.labels, watch.fields)
        previous = event.prev is not None and selected(watch.resource, event.prev, watch.labels, watch.fields)
        if not current and not previous:
            return None
        if current and not previous:
            return {"type": "ADDED", "object": copy.deepcopy(event.obj)}
        if current:
            return {"type": "MODIFIED", "object": copy.deepcopy(event.obj)}
        gone = copy.deepcopy(event.prev)
        assert gone is not None
        gone["metadata"]["resourceVersion"] = str(event.rv)
        return {"type": "DELETED", "object": gone}

    def _bookmark(self, resource: Resource, *, initial_end: bool = False) -> dict[str, Any]:
        meta: dict[str, Any] = {"resourceVersion": self.resource_version}
        if initial_end:
            meta["annotations"] = {"k8s.io/initial-events-end": "true"}
        return {
            "type": "BOOKMARK",
            "object": {"kind": resource.kind, "apiVersion": resource.api_version, "metadata": meta},
        }

    async def _watch(
        self, request: web.Request, resource: Resource, namespace: str | None, params: dict[str, str]
    ) -> web.StreamResponse:
        labels, fields = parse_selectors(resource, params)
        bookmarks = bool(parse_bool(params, "allowWatchBookmarks"))
        send_initial = parse_bool(params, "sendInitialEvents")
        timeout = parse_int(params, "timeoutSeconds")
        requested = params.get("resourceVersion") or ""
        if send_initial is not None and not bookmarks:
            raise KubeError(
                422,
                "Invalid",
                'ListOptions.meta.k8s.io "" is invalid: sendInitialEvents: Forbidden: sendInitialEvents '
                "requires setting allowWatchBookmarks to true",
                {"group": "meta.k8s.io", "kind": "ListOptions"},
            )
        if requested not in ("", "0"):
            since = parse_rv(requested)
            if since > self._rv:
                # The watch cache waits up to 3 s to catch up with a resourceVersion from the future.
                deadline = time.monotonic() + 3.0
                while since > self._rv and time.monotonic() < deadline:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._changed.wait(), 0.1)
        watch = Watch(resource, namespace if resource.namespaced else None, labels, fields, request)
        first: list[dict[str, Any]] = []
        if send_initial or (send_initial is None and requested in ("", "0")):
            for (ns, _), obj in sorted(self._store[resource.plural].items(), key=lambda e: etcd_key(*e[0])):
                if namespace is not None and resource.namespaced and ns != namespace:
                    continue
                if selected(resource, obj, labels, fields):
                    first.append({"type": "ADDED", "object": copy.deepcopy(obj)})
            if send_initial:
                first.append(self._bookmark(resource, initial_end=True))
        elif requested not in ("", "0"):
            since = parse_rv(requested)
            if since < self._compacted:
                first.append(
                    {
                        "type": "ERROR",
                        "object": KubeError(
                            410, "Expired", f"too old resource version: {since} ({self._compacted})"
                        ).status(),
                    }
                )
            elif since > self._rv:
                first.append({"type": "ERROR", "object": too_large(since, self._rv).status()})
            else:
                for event in self._history:
                    if event.rv > since:
                        message = self._watch_event(watch, event)
                        if message is not None:
                            first.append(message)
        ends_now = bool(first) and first[0]["type"] == "ERROR"
        record = WatchRecord(resource.plural, namespace, dict(params))
        self.watch_requests.append(record)
        watch_key = (resource.plural, namespace)
        if not ends_now:
            self._watches.append(watch)
            self.open_watches[watch_key] = self.open_watches.get(watch_key, 0) + 1
            self._notify()
        self._streams[id(request)] = request
        response = web.StreamResponse(status=200)
        response.content_type = "application/json"
        response.headers["Audit-Id"] = str(uuid.uuid4())
        response.headers["Cache-Control"] = "no-cache, private"
        response.enable_chunked_encoding()
        try:
            await response.prepare(request)
            for message in first:
                await response.write(json_line(message))
            if ends_now:
                await response.write_eof()
                return response
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout if timeout else None
            next_bookmark = loop.time() + self.bookmark_interval
            while True:
                now = loop.time()
                wait = 0.25
                if deadline is not None:
                    wait = min(wait, deadline - now)
                if bookmarks:
                    wait = min(wait, next_bookmark - now)
                message: dict[str, Any] | None
                try:
                    message = watch.queue.get_nowait()
                except asyncio.QueueEmpty:
                    try:
                        message = await asyncio.wait_for(watch.queue.get(), max(wait, 0.001))
                    except TimeoutError:
                        message = {}
                if message is None:
                    break
                if message or not watch.queue.empty():
                    if message:
                        await response.write(json_line(message))
                    continue
                if request.transport is None or request.transport.is_closing():
                    break
                now = loop.time()
                if deadline is not None and now >= deadline:
                    break
                if bookmarks and now >= next_bookmark:
                    await response.write(json_line(self._bookmark(resource)))
                    next_bookmark = now + self.bookmark_interval
            await response.write_eof()
            return response
        except (ConnectionResetError, ConnectionError):
            return response
        finally:
            self._streams.pop(id(request), None)
            if watch in self._watches:
                self._watches.remove(watch)
                remaining = self.open_watches.get(watch_key, 1) - 1
                if remaining > 0:
                    self.open_watches[watch_key] = remaining
                else:
                    self.open_watches.pop(watch_key, None)
                self._notify()
