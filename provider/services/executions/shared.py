"""What the parts of the execution service share: what they work with (`Dependencies`) and
what this process keeps in memory between calls (`Shared`)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from provider.aio import SingleFlight, Tasks, wait_event
from provider.domain.executions import Execution
from provider.services.assets import AssetService
from provider.services.notifications import EventLog, SubscriptionService
from provider.services.ports import Clock, Compute, Storage, Store
from provider.services.workspaces import WorkspaceService

# One logger for the whole service, whichever part writes.
log = logging.getLogger("provider.services.executions")


@dataclass(frozen=True)
class ExecutionPolicy:
    api_url: str  # where job sidecars reach the objects API (filesystem storage)
    token_margin_seconds: int  # job credentials outlive the run time by this much
    max_wait_seconds: float
    cache_seconds: float = 1.0  # how long a read may be served from memory
    max_attempts: int = 1  # attempts per execution for failures that are not the consumer's
    retry_backoff_seconds: float = 5.0
    retry_max_backoff_seconds: float = 300.0


@dataclass
class Dependencies:
    """The ports and services every part of the execution service calls, and its policy."""

    store: Store
    compute: Compute
    storage: Storage
    workspaces: WorkspaceService
    assets: AssetService
    clock: Clock
    policy: ExecutionPolicy
    events: EventLog | None = None
    subscriptions: SubscriptionService | None = None


class ExecutionCache:
    """Recent executions in memory, so that hot polling does not cost a database round trip.

    Every change this process makes is written here after it is committed, so this replica
    never serves an older version than it wrote; changes made by other replicas are seen once
    an entry is older than `seconds`.
    """

    def __init__(self, seconds: float, size: int = 20_000) -> None:
        self.seconds = seconds
        self.size = size
        self._entries: OrderedDict[str, tuple[float, Execution]] = OrderedDict()

    def lookup(self, execution_id: str) -> tuple[float, Execution] | None:
        """The entry and its age in seconds, however old."""
        entry = self._entries.get(execution_id)
        return (time.monotonic() - entry[0], entry[1]) if entry is not None else None

    def peek(self, execution_id: str) -> Execution | None:
        """The entry however old it is."""
        entry = self._entries.get(execution_id)
        return entry[1] if entry is not None else None

    def put(self, execution: Execution) -> None:
        current = self._entries.get(execution.id)
        if current is not None and current[1].version > execution.version:
            return  # never replace a newer version with an older read
        self._entries[execution.id] = (time.monotonic(), execution)
        self._entries.move_to_end(execution.id)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)


class ChangeNotifier:
    """Wakes long-poll waiters of one execution when it changes in this process."""

    def __init__(self) -> None:
        self._events: dict[str, asyncio.Event] = {}

    def changed(self, execution_id: str) -> None:
        event = self._events.pop(execution_id, None)
        if event is not None:
            event.set()

    async def wait(self, execution_id: str, seconds: float) -> None:
        event = self._events.setdefault(execution_id, asyncio.Event())
        await wait_event(event, seconds)


class Shared:
    """What this process keeps about executions, for every part of the service."""

    def __init__(self, cache_seconds: float) -> None:
        self.cache = ExecutionCache(cache_seconds)
        self.loads: SingleFlight[str, Execution | None] = SingleFlight(log)  # store reads by id
        self.notifier = ChangeNotifier()
        # execution id -> the id of the workspace token its running job holds (filesystem
        # storage), revoked when the attempt ends
        self.job_tokens: dict[str, str] = {}
        # Background work of this process: a waiting resubmission under its execution's id, and
        # the version poller of long-poll waiters.
        self.tasks = Tasks(log)
        self.listeners: list[Callable[[Execution], Awaitable[None] | None]] = []
