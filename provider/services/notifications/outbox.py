"""The outbox: events and their deliveries, written inside the transaction of the change they
report, so that an event exists exactly when its change was committed."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from provider.domain.executions import Execution, State
from provider.domain.ids import new_id
from provider.domain.imports import Import, ImportState
from provider.domain.notifications import Event, EventType, event_document
from provider.domain.representations import execution_out, import_out, timestamp, workspace_out
from provider.domain.workspaces import Workspace, WorkspaceState
from provider.services.notifications.signals import Signal
from provider.services.ports import Clock, UnitOfWork

FINAL_EXECUTION_TYPES = {
    State.COMPLETE: EventType.EXECUTION_COMPLETED,
    State.EXECUTOR_ERROR: EventType.EXECUTION_FAILED,
    State.SYSTEM_ERROR: EventType.EXECUTION_FAILED,
    State.CANCELED: EventType.EXECUTION_CANCELED,
}
FINAL_IMPORT_TYPES = {
    ImportState.SUCCEEDED: EventType.IMPORT_SUCCEEDED,
    ImportState.FAILED: EventType.IMPORT_FAILED,
    ImportState.CANCELED: EventType.IMPORT_CANCELED,
}


class EventLog:
    """Writes events and their deliveries into the caller's transaction."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.signal = Signal()  # every commit with events: event streams
        self.queued = Signal()  # commits that queued deliveries: the delivery worker

    async def record(
        self,
        uow: UnitOfWork,
        event_type: EventType,
        tenant_id: str,
        workspace_id: str | None,
        subject_id: str,
        labels: dict[str, str],
        data: dict[str, Any],
        occurred_at: datetime,
    ) -> bool:
        """Write the event and a delivery per matching subscription; whether any was queued."""
        event_id = new_id("evt")
        document = event_document(event_id, event_type.value, timestamp(occurred_at), data)
        event = Event(
            id=event_id,
            type=event_type.value,
            tenant_id=tenant_id,
            workspace_id=workspace_id,
            subject_id=subject_id,
            labels=labels,
            occurred_at=occurred_at,
            body=json.dumps(document, separators=(",", ":")),
        )
        seq = await uow.events.add(event)
        rows = [
            {
                "id": new_id("msg"),
                "subscription_id": subscription.id,
                "event_id": event.id,
                "event_seq": seq,
                "event_type": event.type,
                "created_at": occurred_at,
            }
            for subscription in await uow.subscriptions.candidates(event)
            if subscription.filter.matches(event)
        ]
        await uow.deliveries.add_many(rows)
        return bool(rows)

    async def execution_changed(self, uow: UnitOfWork, execution: Execution) -> bool:
        """An execution entered a new state: `execution.state_changed`, and its end if it ended.
        Whether deliveries were queued (pass it to `committed`)."""
        types = [EventType.EXECUTION_STATE_CHANGED]
        if execution.state in FINAL_EXECUTION_TYPES:
            types.append(FINAL_EXECUTION_TYPES[execution.state])
        data = execution_out(execution)
        queued = False
        for event_type in types:
            queued |= await self.record(
                uow,
                event_type,
                execution.tenant_id,
                execution.workspace_id,
                execution.id,
                execution.labels,
                data,
                execution.updated_at,
            )
        return queued

    async def import_changed(self, uow: UnitOfWork, item: Import) -> None:
        types = [EventType.IMPORT_STATE_CHANGED]
        if item.state in FINAL_IMPORT_TYPES:
            types.append(FINAL_IMPORT_TYPES[item.state])
        for event_type in types:
            await self.record(
                uow,
                event_type,
                item.tenant_id,
                item.workspace_id,
                item.id,
                {},
                import_out(item),
                item.updated_at,
            )

    async def workspace_changed(self, uow: UnitOfWork, workspace: Workspace, storage_backend: str) -> None:
        if workspace.state is WorkspaceState.ACTIVE:
            event_type = EventType.WORKSPACE_CREATED
        elif workspace.state is WorkspaceState.DELETED:
            event_type = EventType.WORKSPACE_DELETED
        else:
            return
        await self.record(
            uow,
            event_type,
            workspace.tenant_id,
            workspace.id,
            workspace.id,
            {},
            workspace_out(workspace, storage_backend),
            workspace.updated_at,
        )

    def committed(self, queued: bool = True) -> None:
        """Call after the transaction that recorded events committed: stream at once, and deliver
        at once if it queued deliveries (most commits do not: waking the worker for them would
        cost a read each)."""
        self.signal.notify()
        if queued:
            self.queued.notify()
