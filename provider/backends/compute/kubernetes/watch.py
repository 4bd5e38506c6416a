"""One list-then-watch loop per resource and namespace, however many executions there are.

Objects are selected by label, or by field where they carry no labels of ours (Events).

It lists once, then watches from the list's resourceVersion with bookmarks on, so that a
reconnect resumes where the stream stopped. `410 Gone` (the server no longer has that version)
means a relist: the handler receives the complete set again and reconciles the difference.
Errors back off exponentially with full jitter.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Generic

from provider.aio import Backoff
from provider.backends.compute.kubernetes.client import Collection, Kube, KubeError, KubeGone
from provider.backends.compute.kubernetes.objects import KubeObject, ObjectT

log = logging.getLogger(__name__)


class NamespaceWatch(Generic[ObjectT]):
    def __init__(
        self,
        kube: Kube,
        collection: Collection[ObjectT],
        selector: str,
        on_event: Callable[[str, ObjectT], Awaitable[None]],
        on_sync: Callable[[list[ObjectT]], Awaitable[None]],
        timeout_seconds: int = 300,
        max_backoff: float = 30.0,
        fields: str | None = None,
        on_restart: Callable[[str, str], None] | None = None,
    ) -> None:
        self.kube = kube
        self.collection = collection
        self.resource = collection.plural
        self.selector = selector
        self.fields = fields
        self.on_event = on_event
        self.on_sync = on_sync
        self.timeout_seconds = timeout_seconds
        self.max_backoff = max_backoff
        self.resource_version: str | None = None
        self.synced = asyncio.Event()  # the first complete list was handled
        self.relists = 0
        self.reconnects = 0
        self.on_restart = on_restart or (lambda resource, cause: None)  # (resource, expired | error)

    async def run(self) -> None:
        failures = 0
        while True:
            try:
                if self.resource_version is None:
                    items, self.resource_version = await self.kube.list(
                        self.collection, self.selector, self.fields
                    )
                    self.relists += 1
                    await self.on_sync(items)
                    self.synced.set()
                await self._follow()
                failures = 0  # the server ended the stream (timeout): go on from where it stopped
            except KubeGone:
                log.info("watch %s: resourceVersion expired; listing again", self.resource)
                self.on_restart(self.resource, "expired")
                self.resource_version = None
                continue
            except KubeError as exc:
                failures += 1
                self.on_restart(self.resource, "error")
                delay = Backoff(0.4, self.max_backoff).delay(failures)
                log.warning(
                    "watch %s failed (%s); again in %.1f s", self.resource, exc.message or exc.reason, delay
                )
                await asyncio.sleep(delay)
            self.reconnects += 1

    async def _follow(self) -> None:
        assert self.resource_version is not None
        async for event in self.kube.watch(
            self.collection, self.selector, self.resource_version, self.timeout_seconds, self.fields
        ):
            kind, obj = event["type"], event["object"]
            seen: KubeObject = obj
            version = (seen.get("metadata") or {}).get("resourceVersion")
            if version:
                self.resource_version = str(version)
            if kind in ("ADDED", "MODIFIED", "DELETED"):
                await self.on_event(kind, obj)
