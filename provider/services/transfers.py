"""Event-driven imports: an EDC transfer that fills a workspace starts an import when the
consumer's connector reports it started, with the EDR (endpoint and authorization) it carries.
The connector's JSON is read at the edge (provider/api/handlers/edc.py) into TransferStarted."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from provider.domain.errors import DomainError, FieldProblem, InvalidInput
from provider.domain.ids import new_id
from provider.domain.provisioning import TransferRegistration
from provider.domain.tenants import Principal
from provider.domain.workspaces import check_key
from provider.services.imports import ImportService
from provider.services.ports import Clock, Store
from provider.services.workspaces import WorkspaceService

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TransferStarted:
    """A connector reports that a transfer started, with the EDR its data address carries."""

    process_id: str  # empty when the event named none
    contract_id: str | None
    endpoint: str | None  # where the data is fetched from
    authorization: str | None = field(repr=False)  # the Authorization header, as given (a secret)
    auth_type: str | None  # EDC says "bearer"; its data plane still wants the bare token


class TransferService:
    def __init__(
        self,
        store: Store,
        workspaces: WorkspaceService,
        imports: ImportService,
        clock: Clock,
        participants: frozenset[str] = frozenset(),
    ) -> None:
        self.store = store
        self.workspaces = workspaces
        self.imports = imports
        self.clock = clock
        # Whom the connector that sends events acts for (empty: anyone): another tenant that
        # registered the same transfer id must not receive a copy of the data.
        self.participants = participants

    async def register(
        self,
        principal: Principal,
        workspace_id: str,
        transfer_process_id: str | None,
        contract_id: str | None,
        target_key: str,
        authorization_scheme: str | None = None,
    ) -> TransferRegistration:
        if not transfer_process_id and not contract_id:
            raise InvalidInput(
                "name the transfer",
                [FieldProblem("body.transfer_process_id", "give transfer_process_id or contract_id")],
            )
        check_key(target_key, "body.target_key")
        workspace = await self.workspaces.get(principal, workspace_id)
        item = TransferRegistration(
            id=new_id("xfr"),
            workspace_id=workspace.id,
            tenant_id=workspace.tenant_id,
            transfer_process_id=transfer_process_id,
            contract_id=contract_id,
            target_key=target_key,
            created_at=self.clock(),
            authorization_scheme=authorization_scheme,
        )
        async with self.store.transaction() as uow:
            await uow.transfers.add(item)
        return item

    async def list(self, principal: Principal, workspace_id: str) -> list[TransferRegistration]:
        workspace = await self.workspaces.get(principal, workspace_id)
        async with self.store.read() as uow:
            return await uow.transfers.for_workspace(workspace.id)

    async def started(self, event: TransferStarted) -> int:
        """Start an import for each registration of this transfer; how many started. Unknown
        transfers are acknowledged and logged."""
        process = event.process_id
        async with self.store.read() as uow:
            registrations = await uow.transfers.matching(process, event.contract_id)
            if self.participants:
                tenants = {r.tenant_id: await uow.tenants.get(r.tenant_id) for r in registrations}
                registrations = [
                    r
                    for r in registrations
                    if (tenant := tenants[r.tenant_id]) is not None
                    and tenant.participant_id in self.participants
                ]
        if not registrations:
            log.info(
                "EDC transfer started that no workspace registered", extra={"transfer_process_id": process}
            )
            return 0
        if len({r.tenant_id for r in registrations}) > 1:
            # One transfer is one consumer's: registrations of several tenants mean that one of
            # them is not its owner, and which one cannot be told here. Nobody gets the data.
            log.warning(
                "EDC transfer registered by several tenants: no import started "
                "(set edc.events.participants to the participants the connector acts for)",
                extra={"transfer_process_id": process},
            )
            return 0
        if not event.endpoint:
            log.warning("EDC transfer started without an endpoint", extra={"transfer_process_id": process})
            return 0
        started = 0
        for registration in registrations:
            # EDC's public data plane hands the header to its token verifier untouched: the EDR's
            # `authorization` goes as given, whatever `authType` says (bearer is only a label).
            headers: dict[str, str] = {}
            if event.authorization:
                headers["Authorization"] = registration.authorization_header(event.authorization)
            try:
                item = await self.imports.create(
                    None, registration.workspace_id, event.endpoint, headers, registration.target_key
                )
            except DomainError as exc:
                log.warning(
                    "could not import an EDC transfer",
                    extra={"transfer_process_id": process, "problem": exc.detail},
                )
                continue
            async with self.store.transaction() as uow:
                await uow.transfers.started(registration.id, item.id, self.clock())
            started += 1
        return started
