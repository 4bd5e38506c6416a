"""EDC provisionings."""

from __future__ import annotations

import builtins
from collections.abc import Collection
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from provider.backends.sql import tables as t
from provider.backends.sql.common import id_page, insert_row
from provider.domain.pagination import Page, PageRequest
from provider.domain.provisioning import (
    PendingCallback,
    ProvisionerKind,
    Provisioning,
    ProvisioningState,
    TransferRegistration,
)

_FIELDS = (
    "connector", "transfer_process_id", "resource_definition_id", "asset_id", "callback_address",
    "participant_id", "tenant_id", "workspace_id", "access_code_hash", "attempts", "next_attempt_at",
    "deadline_at", "last_status", "error", "delete_after", "created_at", "updated_at",
)  # fmt: skip


def _values(item: Provisioning) -> dict[str, Any]:
    return {
        **{name: getattr(item, name) for name in _FIELDS},
        "state": item.state.value,
        "kind": item.kind.value,
        "pending": item.pending.value if item.pending else None,
    }


def _row(row: sa.Row[Any]) -> Provisioning:
    return Provisioning(
        id=row.id,
        state=ProvisioningState(row.state),
        kind=ProvisionerKind(row.kind),
        pending=PendingCallback(row.pending) if row.pending else None,
        **{n: getattr(row, n) for n in _FIELDS},
    )


class SqlProvisioningRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def add(self, item: Provisioning) -> None:
        stmt = t.provisionings.insert().values(id=item.id, **_values(item))
        await insert_row(self.conn, stmt, "a provisioning for this transfer")

    async def find(
        self, connector: str, transfer_process_id: str, resource_definition_id: str
    ) -> Provisioning | None:
        c = t.provisionings.c
        query = t.provisionings.select().where(
            c.connector == connector,
            c.transfer_process_id == transfer_process_id,
            c.resource_definition_id == resource_definition_id,
        )
        row = (await self.conn.execute(query)).first()
        return _row(row) if row else None

    async def for_transfer(self, connector: str, transfer_process_id: str) -> builtins.list[Provisioning]:
        c = t.provisionings.c
        query = t.provisionings.select().where(
            c.connector == connector, c.transfer_process_id == transfer_process_id
        )
        return [_row(r) for r in await self.conn.execute(query)]

    async def list(self, page: PageRequest, state: str | None = None) -> Page[Provisioning]:
        query = t.provisionings.select()
        if state is not None:
            query = query.where(t.provisionings.c.state == state)
        return await id_page(self.conn, query, t.provisionings.c.id, page, _row, newest_first=True)

    async def for_workspace(self, workspace_id: str) -> Provisioning | None:
        query = t.provisionings.select().where(t.provisionings.c.workspace_id == workspace_id)
        row = (await self.conn.execute(query)).first()
        return _row(row) if row else None

    async def update(self, item: Provisioning) -> None:
        await self.conn.execute(
            t.provisionings.update().where(t.provisionings.c.id == item.id).values(**_values(item))
        )

    async def due(self, now: datetime) -> builtins.list[Provisioning]:
        """Callbacks to send and deletions whose retention ended."""
        c = t.provisionings.c
        query = t.provisionings.select().where(
            sa.or_(
                sa.and_(c.pending.is_not(None), c.next_attempt_at <= now),
                sa.and_(c.state == ProvisioningState.DEPROVISIONING.value, c.delete_after <= now),
            )
        )
        return [_row(r) for r in await self.conn.execute(query.order_by(c.id))]

    async def next_due(self, excluding: Collection[str] = ()) -> datetime | None:
        c = t.provisionings.c
        others = ~c.id.in_(sorted(excluding)) if excluding else sa.true()
        pending = sa.select(sa.func.min(c.next_attempt_at)).where(c.pending.is_not(None), others)
        deleting = sa.select(sa.func.min(c.delete_after)).where(
            c.state == ProvisioningState.DEPROVISIONING.value, others
        )
        times = [(await self.conn.execute(q)).scalar_one() for q in (pending, deleting)]
        known = [time for time in times if time is not None]
        return min(known) if known else None


_REGISTRATION_FIELDS = (
    "workspace_id", "tenant_id", "transfer_process_id", "contract_id", "target_key", "import_id",
    "created_at", "started_at", "authorization_scheme",
)  # fmt: skip


def _registration(row: sa.Row[Any]) -> TransferRegistration:
    return TransferRegistration(id=row.id, **{n: getattr(row, n) for n in _REGISTRATION_FIELDS})


class SqlTransferRegistrationRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def add(self, item: TransferRegistration) -> None:
        values = {n: getattr(item, n) for n in _REGISTRATION_FIELDS}
        await insert_row(
            self.conn, t.edc_transfers.insert().values(id=item.id, **values), "this registration"
        )

    async def matching(
        self, transfer_process_id: str, contract_id: str | None
    ) -> builtins.list[TransferRegistration]:
        """Registrations not yet started that name this transfer process (or its contract)."""
        c = t.edc_transfers.c
        names = c.transfer_process_id == transfer_process_id
        if contract_id:
            names = sa.or_(names, c.contract_id == contract_id)
        query = t.edc_transfers.select().where(names, c.started_at.is_(None)).order_by(c.id)
        return [_registration(r) for r in await self.conn.execute(query)]

    async def for_workspace(self, workspace_id: str) -> builtins.list[TransferRegistration]:
        query = t.edc_transfers.select().where(t.edc_transfers.c.workspace_id == workspace_id)
        return [_registration(r) for r in await self.conn.execute(query.order_by(t.edc_transfers.c.id))]

    async def started(self, registration_id: str, import_id: str | None, at: datetime) -> bool:
        c = t.edc_transfers.c
        result = await self.conn.execute(
            t.edc_transfers.update()
            .where(c.id == registration_id, c.started_at.is_(None))
            .values(import_id=import_id, started_at=at)
        )
        return bool(result.rowcount)
