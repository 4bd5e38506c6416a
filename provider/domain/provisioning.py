"""Provisionings: one EDC transfer's workspace, and the connector callback that announces it."""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace
from datetime import datetime, timedelta


class ProvisionerKind(enum.StrEnum):
    CONTROL = "control"  # control-plane HTTP provisioner (provision-http)
    DATA_PLANE = "dataplane"  # data-plane HTTP provisioner (data-plane-provision-http)


class PendingCallback(enum.StrEnum):
    PROVISION = "provision"
    DEPROVISION = "deprovision"  # data plane only: EDC waits for it


class ProvisioningState(enum.StrEnum):
    CALLBACK_PENDING = "callback_pending"  # workspace made; the connector has not accepted the callback yet
    PROVISIONED = "provisioned"  # the connector accepted the callback
    FAILED = "failed"  # the callback could not be delivered before the deadline, or was refused
    DEPROVISIONING = "deprovisioning"  # stopping executions, revoking, deleting (after retention)
    DEPROVISIONED = "deprovisioned"


@dataclass(frozen=True)
class Provisioning:
    id: str
    connector: str
    transfer_process_id: str
    resource_definition_id: str
    asset_id: str
    callback_address: str
    participant_id: str
    tenant_id: str
    workspace_id: str
    access_code_hash: str
    state: ProvisioningState
    attempts: int
    next_attempt_at: datetime | None
    deadline_at: datetime
    created_at: datetime
    updated_at: datetime
    last_status: int | None = None
    error: str | None = None
    delete_after: datetime | None = None
    kind: ProvisionerKind = ProvisionerKind.CONTROL
    pending: PendingCallback | None = PendingCallback.PROVISION

    def callback_again(self, at: datetime) -> Provisioning:
        """A repeated provision request: send the callback again, from a fresh deadline."""
        return replace(
            self,
            state=ProvisioningState.CALLBACK_PENDING,
            pending=PendingCallback.PROVISION,
            next_attempt_at=at,
            deadline_at=at + (self.deadline_at - self.created_at),
            updated_at=at,
        )

    def give_up(self, at: datetime, status: int | None, error: str) -> Provisioning:
        """The connector refused the callback for good (e.g. 404: it does not know the process)."""
        return replace(
            self,
            state=ProvisioningState.FAILED if self.pending is PendingCallback.PROVISION else self.state,
            pending=None,
            attempts=self.attempts + 1,
            next_attempt_at=None,
            last_status=status,
            error=error,
            updated_at=at,
        )

    def attempt_failed(
        self, at: datetime, status: int | None, error: str, retry_in: timedelta
    ) -> Provisioning:
        if at + retry_in > self.deadline_at:
            # A provision callback that never lands fails the provisioning; a deprovision callback
            # that never lands leaves the deprovisioning to go on without it.
            return self.give_up(at, status, f"gave up at the deadline: {error}")
        return replace(
            self,
            attempts=self.attempts + 1,
            next_attempt_at=at + retry_in,
            last_status=status,
            error=error,
            updated_at=at,
        )


@dataclass(frozen=True)
class TransferRegistration:
    """A consumer's word that an EDC transfer (by process or contract id) fills its workspace."""

    id: str
    workspace_id: str
    tenant_id: str
    transfer_process_id: str | None
    contract_id: str | None
    target_key: str
    created_at: datetime
    import_id: str | None = None
    started_at: datetime | None = None
    # EDC's data plane takes the EDR's token as the whole Authorization header; a data plane
    # that wants a scheme before it (`Bearer`) gets one only when the registration says so.
    authorization_scheme: str | None = None

    def authorization_header(self, token: str) -> str:
        scheme = self.authorization_scheme
        if scheme is None or token.lower().startswith(scheme.lower() + " "):
            return token
        return f"{scheme} {token}"
