"""Reactions between services: what one service does when another's objects change.

Services never call each other for these; the composition root wires them here, in one table,
so that a reaction cannot be forgotten on one path and kept on another (deleting a workspace
through the API and deprovisioning it through EDC both run the `workspace.deleting` row).

| event                     | who reacts | what it does                                         |
| ------------------------- | ---------- | ---------------------------------------------------- |
| workspace.deleting        | imports    | cancels the workspace's imports                      |
| workspace.deleting        | executions | cancels its active executions (jobs are stopped)     |
| workspace.deleting        | signaling  | ends its provider data flow; tells the control plane |
| import.changed            | signaling  | a consumer data flow's import ended: completed/errored |
| import.changed            | tes        | a TES task's http(s) input arrived: it is submitted, or fails |
| workspace.tokens_revoked  | auth cache | forgets the revoked tokens at once on this replica   |
| tenant.key_revoked        | auth cache | forgets the revoked API key at once on this replica  |
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from provider.services.auth import PrincipalCache
from provider.services.executions import ExecutionService
from provider.services.imports import ImportService
from provider.services.signaling import SignalingService
from provider.services.tenants import TenantService
from provider.services.tes import TesService
from provider.services.workspaces import WorkspaceService


@dataclass(frozen=True)
class Reaction:
    event: str
    reactor: str
    action: Callable[..., Any]


def wire(
    tenants: TenantService,
    workspaces: WorkspaceService,
    imports: ImportService,
    executions: ExecutionService,
    key_cache: PrincipalCache,
    token_cache: PrincipalCache,
    signaling: SignalingService,
    tes: TesService,
) -> list[Reaction]:
    """Connect every row of the table above; returns the rows, so tests can check each one."""
    table = [
        Reaction("workspace.deleting", "imports", imports.cancel_workspace),
        Reaction(
            "workspace.deleting",
            "executions",
            partial(executions.cancel_workspace, message="the workspace was deleted"),
        ),
        Reaction("workspace.deleting", "signaling", signaling.workspace_deleting),
        Reaction("import.changed", "signaling", signaling.on_import),
        Reaction("import.changed", "tes", tes.on_import),
        Reaction("workspace.tokens_revoked", "auth cache", token_cache.forget),
        Reaction("tenant.key_revoked", "auth cache", lambda key_id: key_cache.forget([key_id])),
    ]
    for reaction in table:
        if reaction.event == "workspace.deleting":
            workspaces.before_delete.append(reaction.action)
        elif reaction.event == "import.changed":
            imports.listeners.append(reaction.action)
        elif reaction.event == "workspace.tokens_revoked":
            workspaces.on_tokens_revoked = reaction.action
        elif reaction.event == "tenant.key_revoked":
            tenants.on_key_revoked = reaction.action
        else:  # pragma: no cover - a row nobody listens for is a mistake in this table
            raise ValueError(f"no service emits {reaction.event}")
    return table
