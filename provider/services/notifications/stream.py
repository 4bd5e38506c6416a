"""The live event stream (SSE): events a caller may see, read from the event log as they are
committed, after a Last-Event-ID when the caller resumes."""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import AsyncGenerator, Iterable

from provider.aio import wait_event
from provider.domain.errors import FieldProblem, InvalidInput, NotFound
from provider.domain.ids import id_floor, id_millis
from provider.domain.notifications import Event, EventFilter, check_types, expand_types
from provider.domain.tenants import CredentialKind, Principal
from provider.services.notifications.outbox import EventLog
from provider.services.ports import Store

# How far back a stream re-reads on its periodic poll: a transaction on another replica may
# commit an event a little after events with later ids were already sent.
STREAM_LOOKBACK_SECONDS = 2.0


class EventStream:
    """Opens streams of the events a caller may see; each reads the store, woken by commits."""

    def __init__(self, store: Store, events: EventLog) -> None:
        self.store = store
        self.events = events

    async def open(
        self,
        principal: Principal,
        types: Iterable[str],
        execution_id: str | None,
        workspace_id: str | None,
        last_event_id: str | None,
        poll_seconds: float,
        heartbeat_seconds: float,
    ) -> AsyncGenerator[Event | None, None]:
        """Events the caller may see as they are committed, after `last_event_id` when given;
        None whenever `heartbeat_seconds` passed without one."""
        patterns = check_types(types, "query.types")
        if principal.kind is CredentialKind.WORKSPACE_TOKEN and workspace_id not in (
            None,
            principal.workspace_id,
        ):
            raise NotFound("workspace", workspace_id or "")
        where = EventFilter(
            types=expand_types(patterns),
            tenant_id=None if principal.is_admin else principal.tenant_id,
            owner_workspace_id=principal.workspace_id,
            execution_id=execution_id,
            workspace_id=workspace_id,
        )
        if last_event_id is not None and id_millis(last_event_id) is None:
            raise InvalidInput(
                "Last-Event-ID is not an event id", [FieldProblem("header.Last-Event-ID", "not an event id")]
            )
        return self._follow(where, last_event_id, poll_seconds, heartbeat_seconds)

    async def _follow(
        self, where: EventFilter, cursor: str | None, poll_seconds: float, heartbeat_seconds: float
    ) -> AsyncGenerator[Event | None, None]:
        loop = asyncio.get_running_loop()
        cursor = cursor or id_floor("evt", int(time.time() * 1000))
        seen: OrderedDict[str, None] = OrderedDict()
        waiter = self.events.signal.register()
        last_poll = last_sent = loop.time()
        try:
            while True:
                now = loop.time()
                periodic = now - last_poll >= poll_seconds
                start = cursor
                if periodic:
                    last_poll = now
                    lookback = id_floor("evt", int((time.time() - STREAM_LOOKBACK_SECONDS) * 1000))
                    start = min(cursor, lookback)
                waiter.clear()
                async with self.store.read() as uow:
                    found = await uow.events.after(where, start, 500)
                for event in found:
                    if event.id in seen:
                        continue
                    seen[event.id] = None
                    if len(seen) > 10_000:
                        seen.popitem(last=False)
                    cursor = max(cursor, event.id)
                    last_sent = loop.time()
                    yield event
                if len(found) == 500:
                    continue
                if loop.time() - last_sent >= heartbeat_seconds:
                    last_sent = loop.time()
                    yield None
                timeout = min(
                    poll_seconds - (loop.time() - last_poll), heartbeat_seconds - (loop.time() - last_sent)
                )
                await wait_event(waiter, max(0.01, timeout))
                await asyncio.sleep(0.02)  # gather the events of a burst into one read
        finally:
            self.events.signal.unregister(waiter)
