"""JSON representations of the resources the domain models, for the HTTP API and the events.

An event carries a resource exactly as `GET` returns it, so both are built here, below the API
and the services; the API-only ones live here too, so that each resource has one shape in one
place. The domain cannot name the storage port's values (object metadata, temporary
credentials): those are represented in provider/api/schemas.py, beside the page envelope.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from provider.domain.assets import Asset
from provider.domain.dataflows import DataFlow
from provider.domain.executions import Execution
from provider.domain.imports import Import
from provider.domain.notifications import Delivery, Subscription
from provider.domain.provisioning import Provisioning, TransferRegistration
from provider.domain.tenants import ApiKey, Principal, Tenant
from provider.domain.tokens import WorkspaceToken
from provider.domain.workspaces import Workspace


def timestamp(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value else None


def execution_out(e: Execution) -> dict[str, Any]:
    return {
        "id": e.id,
        "tenant_id": e.tenant_id,
        "workspace_id": e.workspace_id,
        "asset": {"id": e.asset_id, "version": e.asset_version},
        "inputs": e.inputs,
        "env": e.env,
        "labels": e.labels,
        "state": e.state.value,
        "version": e.version,
        "attempt": e.attempt,
        "exit_code": e.exit_code,
        "reason": e.reason,
        "message": e.message,
        "history": [{"state": h.state.value, "at": timestamp(h.at), "reason": h.reason} for h in e.history],
        "outputs": [{"name": o.name, "key": o.key, "size": o.size, "sha256": o.sha256} for o in e.outputs],
        "logs_key": e.logs_key,
        "attempts": [
            {
                "attempt": a.number,
                "state": a.state.value,
                "reason": a.reason,
                "message": a.message,
                "exit_code": a.exit_code,
                "started_at": timestamp(a.started_at),
                "ended_at": timestamp(a.ended_at),
                "logs_key": a.logs_key,
            }
            for a in e.attempts
        ],
        "retry_at": timestamp(e.retry_at),
        "created_at": timestamp(e.created_at),
        "updated_at": timestamp(e.updated_at),
    }


def import_out(item: Import) -> dict[str, Any]:
    return {
        "id": item.id,
        "workspace_id": item.workspace_id,
        "source_url": item.source_url,
        "header_names": sorted(item.headers),  # values may be credentials: never shown
        "target_key": item.target_key,
        "state": item.state.value,
        "bytes_done": item.bytes_done,
        "bytes_total": item.bytes_total,
        "expected_sha256": item.expected_sha256,
        "sha256": item.sha256,
        "attempts": item.attempts,
        "upstream_status": item.upstream_status,
        "error": item.error,
        "created_at": timestamp(item.created_at),
        "updated_at": timestamp(item.updated_at),
        "finished_at": timestamp(item.finished_at),
    }


def workspace_out(ws: Workspace, storage_backend: str) -> dict[str, Any]:
    return {
        "id": ws.id,
        "tenant_id": ws.tenant_id,
        "name": ws.name,
        "labels": ws.labels,
        "state": ws.state.value,
        "storage": {"backend": storage_backend, "location": ws.location},
        "quota": {"bytes": ws.quota.max_bytes, "objects": ws.quota.max_objects},
        "allowed_assets": None if ws.allowed_assets is None else sorted(ws.allowed_assets),
        "usage": {
            "bytes": ws.usage.bytes,
            "objects": ws.usage.objects,
            "counted_at": timestamp(ws.usage_checked_at),
        },
        "created_at": timestamp(ws.created_at),
        "updated_at": timestamp(ws.updated_at),
    }


def tenant_out(tenant: Tenant) -> dict[str, Any]:
    return {
        "id": tenant.id,
        "participant_id": tenant.participant_id,
        "display_name": tenant.display_name,
        "allowed_assets": None if tenant.allowed_assets is None else sorted(tenant.allowed_assets),
        "created_at": timestamp(tenant.created_at),
    }


def api_key_out(key: ApiKey, secret: str | None = None) -> dict[str, Any]:
    out = {
        "id": key.id,
        "tenant_id": key.tenant_id,
        "role": key.role.value,
        "name": key.name,
        "prefix": key.prefix,
        "created_at": timestamp(key.created_at),
        "expires_at": timestamp(key.expires_at),
        "revoked_at": timestamp(key.revoked_at),
    }
    if secret is not None:
        out["key"] = secret
    return out


def principal_out(principal: Principal, tenant: Tenant) -> dict[str, Any]:
    return {
        "tenant": tenant_out(tenant),
        "role": principal.role.value,
        "credential": {"kind": principal.kind.value, "id": principal.credential_id},
        "workspace_id": principal.workspace_id,
        "scopes": sorted(principal.scopes),
    }


def asset_out(asset: Asset) -> dict[str, Any]:
    out = asset.model_dump(mode="json")
    out["created_at"] = timestamp(asset.created_at)
    out["updated_at"] = timestamp(asset.updated_at)
    return out


def token_out(token: WorkspaceToken, jwt: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": token.id,
        "workspace_id": token.workspace_id,
        "name": token.name,
        "scopes": sorted(s.value for s in token.scopes),
        "created_at": timestamp(token.created_at),
        "expires_at": timestamp(token.expires_at),
        "revoked_at": timestamp(token.revoked_at),
    }
    if jwt is not None:
        out["token"] = jwt
    return out


def subscription_out(item: Subscription, secret: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": item.id,
        "tenant_id": item.tenant_id,
        "workspace_id": item.owner_workspace_id,
        "url": item.url,
        "events": list(item.events),
        "filter": {
            "execution_id": item.execution_id,
            "workspace_id": item.workspace_id,
            "labels": item.labels,
        },
        "state": item.state.value,
        "disabled_reason": item.disabled_reason,
        "created_at": timestamp(item.created_at),
        "updated_at": timestamp(item.updated_at),
    }
    if secret is not None:
        out["secret"] = secret
    return out


def delivery_out(item: Delivery) -> dict[str, Any]:
    return {
        "id": item.id,
        "subscription_id": item.subscription_id,
        "event_id": item.event_id,
        "event_type": item.event_type,
        "state": item.state.value,
        "attempt_count": item.attempts,
        "next_attempt_at": timestamp(item.next_attempt_at) if item.state.value == "pending" else None,
        "last_error": item.last_error,
        "created_at": timestamp(item.created_at),
        "finished_at": timestamp(item.finished_at),
        "attempts": [
            {
                "at": timestamp(a.at),
                "duration_ms": a.duration_ms,
                "response_status": a.status,
                "error": a.error,
            }
            for a in item.history
        ],
    }


def provisioning_out(item: Provisioning) -> dict[str, Any]:
    """A provisioning as operators see it: everything but the access code's hash."""
    return {
        "id": item.id,
        "kind": item.kind.value,
        "connector": item.connector,
        "transfer_process_id": item.transfer_process_id,
        "resource_definition_id": item.resource_definition_id,
        "asset_id": item.asset_id,
        "participant_id": item.participant_id,
        "tenant_id": item.tenant_id,
        "workspace_id": item.workspace_id,
        "callback_address": item.callback_address,
        "state": item.state.value,
        "pending_callback": item.pending.value if item.pending else None,
        "attempts": item.attempts,
        "next_attempt_at": timestamp(item.next_attempt_at),
        "deadline_at": timestamp(item.deadline_at),
        "last_status": item.last_status,
        "error": item.error,
        "delete_after": timestamp(item.delete_after),
        "created_at": timestamp(item.created_at),
        "updated_at": timestamp(item.updated_at),
    }


def dataflow_out(flow: DataFlow) -> dict[str, Any]:
    return {
        "id": flow.id,
        "control_plane": flow.control_plane,
        "role": flow.role.value,
        "state": flow.state.value,
        "profile": flow.profile,
        "participant_id": flow.participant_id,
        "counter_party_id": flow.counter_party_id,
        "agreement_id": flow.agreement_id,
        "dataset_id": flow.dataset_id,
        "tenant_id": flow.tenant_id,
        "workspace_id": flow.workspace_id,
        "target_key": flow.target_key,
        "import_id": flow.import_id,
        "error": flow.error,
        "notice": flow.notice.value if flow.notice else None,
        "notice_attempts": flow.notice_attempts,
        "next_notice_at": timestamp(flow.next_notice_at),
        "notice_error": flow.notice_error,
        "delete_after": timestamp(flow.delete_after),
        "created_at": timestamp(flow.created_at),
        "updated_at": timestamp(flow.updated_at),
    }


def registration_out(item: TransferRegistration) -> dict[str, Any]:
    return {
        "id": item.id,
        "workspace_id": item.workspace_id,
        "transfer_process_id": item.transfer_process_id,
        "contract_id": item.contract_id,
        "target_key": item.target_key,
        "authorization_scheme": item.authorization_scheme,
        "import_id": item.import_id,
        "created_at": timestamp(item.created_at),
        "started_at": timestamp(item.started_at),
    }
