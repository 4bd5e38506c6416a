"""Handing an execution to compute, with the storage access its job gets; a submission that
fails is reported as the backend's events are (SYSTEM_ERROR, reason Submit)."""

from __future__ import annotations

from provider.domain.assets import Asset
from provider.domain.executions import Execution, Reason, State
from provider.domain.workspaces import Workspace
from provider.services.executions.shared import Dependencies, Shared, log
from provider.services.ports import ComputeEvent, EventSink, JobSpec, StorageAccess


class Submission:
    def __init__(self, deps: Dependencies, shared: Shared, report: EventSink) -> None:
        self.deps = deps
        self.shared = shared
        self.report = report

    async def submit(self, execution: Execution, asset: Asset, workspace: Workspace) -> None:
        try:
            access = await self._access(workspace, execution, asset)
            await self.deps.compute.submit(
                JobSpec(
                    execution.id,
                    execution.tenant_id,
                    asset,
                    execution.inputs,
                    execution.env,
                    access,
                    execution.version,
                    execution.attempt,
                    execution.program,
                )
            )
        except Exception as exc:
            log.exception("could not submit execution", extra={"execution_id": execution.id})
            await self.report(
                ComputeEvent(
                    execution.id,
                    State.SYSTEM_ERROR,
                    reason=Reason.SUBMIT,
                    message=f"{type(exc).__name__}: {exc}",
                )
            )

    async def _access(self, workspace: Workspace, execution: Execution, asset: Asset) -> StorageAccess:
        """Scoped credentials for the job's sidecar: this workspace only, for the job's lifetime."""
        lifetime = asset.max_run_seconds + self.deps.policy.token_margin_seconds
        access = await self.deps.storage.job_access(workspace.location, lifetime)
        if access is not None:
            return access
        issued = await self.deps.workspaces.issue_job_token(workspace.id, lifetime)
        self.shared.job_tokens[execution.id] = issued.record.id
        return StorageAccess.objects_api(self.deps.policy.api_url, workspace.id, issued.token)
