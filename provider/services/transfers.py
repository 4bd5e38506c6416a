"""Event-driven imports: an EDC transfer that fills a workspace starts an import when the
consumer's connector reports it started, with the EDR (endpoint and authorization) it carries."""

from __future__ import annotations

import logging
from typing import Any

from provider.domain.errors import DomainError, FieldProblem, InvalidInput
from provider.domain.ids import new_id
from provider.domain.provisioning import TransferRegistration
from provider.domain.tenants import Principal
from provider.domain.workspaces import check_key
from provider.services.imports import ImportService
from provider.services.ports import Clock, Store
from provider.services.workspaces import WorkspaceService

log = logging.getLogger(__name__)
EDC_NAMESPACE = "https://w3id.org/edc/v0.0.1/ns/"


def edc_property(properties: dict[str, Any], name: str) -> Any:
    """A data address property, plain (`endpoint`) or namespaced (`https://w3id.org/edc/v0.0.1/ns/endpoint`)."""
    return properties.get(name, properties.get(EDC_NAMESPACE + name))


class TransferService:
    def __init__(
        self, store: Store, workspaces: WorkspaceService, imports: ImportService, clock: Clock
    ) -> None:
        self.store = store
        self.workspaces = workspaces
        self.imports = imports
        self.clock = clock

    async def register(
        self,
        principal: Principal,
        workspace_id: str,
        transfer_process_id: str | None,
        contract_id: str | None,
        target_key: str,
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
        )
        async with self.store.transaction() as uow:
            await uow.transfers.add(item)
        return item

    async def list(self, principal: Principal, workspace_id: str) -> list[TransferRegistration]:
        workspace = await self.workspaces.get(principal, workspace_id)
        async with self.store.read() as uow:
            return await uow.transfers.for_workspace(workspace.id)

    async def on_event(self, event: dict[str, Any]) -> int:
        """Handle a connector event; returns how many imports it started. Unknown transfers and
        other event types are acknowledged and logged."""
        if event.get("type") != "TransferProcessStarted":
            log.info("EDC event ignored", extra={"event_type": str(event.get("type"))[:100]})
            return 0
        payload = event.get("payload") or {}
        process = str(payload.get("transferProcessId") or "")
        contract = payload.get("contractId")
        properties = ((payload.get("dataAddress") or {}).get("properties")) or {}
        endpoint = edc_property(properties, "endpoint")
        authorization = edc_property(properties, "authorization")
        auth_type = str(edc_property(properties, "authType") or "")
        async with self.store.read() as uow:
            registrations = await uow.transfers.matching(process, str(contract) if contract else None)
        if not registrations:
            log.info(
                "EDC transfer started that no workspace registered", extra={"transfer_process_id": process}
            )
            return 0
        if not endpoint:
            log.warning("EDC transfer started without an endpoint", extra={"transfer_process_id": process})
            return 0
        headers: dict[str, str] = {}
        if authorization:
            value = str(authorization)
            # Sent exactly as given, unless the EDR says it is a bearer token without the prefix.
            if auth_type.lower() == "bearer" and not value.lower().startswith("bearer "):
                value = f"Bearer {value}"
            headers["Authorization"] = value
        started = 0
        for registration in registrations:
            try:
                item = await self.imports.create_system(
                    registration.workspace_id, str(endpoint), headers, registration.target_key
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
