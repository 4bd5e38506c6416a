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
from provider.domain.executions import Execution
from provider.domain.imports import Import
from provider.domain.notifications import Delivery, Subscription
from provider.domain.provisioning import TransferRegistration
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
