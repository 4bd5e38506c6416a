"""JSON representations of resources, shared by the HTTP API and the events that report them.

An event carries a resource exactly as `GET` returns it, so both are built here, below the
API and the services.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from provider.domain.executions import Execution
from provider.domain.imports import Import
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
