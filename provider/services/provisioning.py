"""EDC provisioning: the connector's HTTP provisioner creates a workspace per transfer, we answer
with a data address pointing at the workspace's access document, and deprovisioning ends it.

Everything after the webhook's answer is persisted first and done by a background worker, so
that pending callbacks and deletions survive a restart.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import secrets
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any

from provider.aio import Backoff, Tasks, wait_event
from provider.domain.errors import Conflict, ForbiddenAddress, NotFound, OfferingNotGranted, Unauthenticated
from provider.domain.ids import new_id
from provider.domain.pagination import Page, PageRequest
from provider.domain.provisioning import PendingCallback, ProvisionerKind, Provisioning, ProvisioningState
from provider.domain.tenants import hash_secret
from provider.domain.workspaces import Scope, Workspace
from provider.services.assets import AssetService
from provider.services.executions import ExecutionService
from provider.services.ports import Clock, JsonPoster, Storage, Store, UnitOfWork
from provider.services.tenants import TenantService
from provider.services.workspaces import WorkspaceService

log = logging.getLogger(__name__)

CALLBACK_TYPE = "dataspaceconnector:provisioner-callback-request"
ACCESS_HEADER = "X-Access-Code"
RETRY_STATUS = {409, 429, 500, 501, 502, 503, 504}


@dataclass(frozen=True)
class ProvisionRequest:
    asset_id: str
    transfer_process_id: str
    resource_definition_id: str
    callback_address: str
    participant_id: str


@dataclass(frozen=True)
class ProvisioningPolicy:
    public_url: str
    deadline_seconds: int
    backoff_seconds: float
    max_backoff_seconds: float
    retention_seconds: int
    access_token_ttl_seconds: int
    api_keys: dict[str, str]  # connector -> management API key for callbacks
    # connector -> the catalog assets its data-plane provisioner grants (its requests name no asset)
    dataplane_assets: dict[str, frozenset[str]] = field(default_factory=dict)
    content_address: str = "access_document"  # or "amazon_s3": the bucket itself (S3 storage)


class ProvisioningService:
    def __init__(
        self,
        store: Store,
        tenants: TenantService,
        workspaces: WorkspaceService,
        executions: ExecutionService,
        storage: Storage,
        poster: JsonPoster,
        clock: Clock,
        policy: ProvisioningPolicy,
        assets: AssetService,
    ) -> None:
        self.assets = assets
        self.store = store
        self.tenants = tenants
        self.workspaces = workspaces
        self.executions = executions
        self.storage = storage
        self.poster = poster
        self.clock = clock
        self.policy = policy
        self._wake = asyncio.Event()
        self._tasks = Tasks(log)
        self._codes: dict[str, str] = {}  # access codes not yet delivered, by provisioning id

    # --- webhooks -----------------------------------------------------------------------------

    async def provision(
        self, connector: str, request: ProvisionRequest, kind: ProvisionerKind = ProvisionerKind.CONTROL
    ) -> Provisioning:
        """Create the workspace (or find it again) and schedule the callback; the webhook answers 200.
        A callback address the connector's settings do not allow is refused before anything is made."""
        await self.poster.check(connector, request.callback_address, "body.callbackAddress")
        async with self.store.read() as uow:
            existing = await uow.provisionings.find(
                connector, request.transfer_process_id, request.resource_definition_id
            )
        if existing is not None:
            if existing.state in (ProvisioningState.DEPROVISIONING, ProvisioningState.DEPROVISIONED):
                raise Conflict(f"transfer {request.transfer_process_id} was deprovisioned")
            again = existing.callback_again(self.clock())
            async with self.store.transaction() as uow:
                await uow.provisionings.update(again)
            self._wake.set()
            return again
        granted = await self._granted(connector, request.asset_id, kind)
        tenant = await self.tenants.find_or_create(request.participant_id, request.participant_id)
        code = secrets.token_urlsafe(32)
        made: list[Provisioning] = []

        async def record(uow: UnitOfWork, workspace: Workspace) -> None:
            now = self.clock()
            item = Provisioning(
                id=new_id("prv"),
                connector=connector,
                transfer_process_id=request.transfer_process_id,
                resource_definition_id=request.resource_definition_id,
                asset_id=request.asset_id,
                callback_address=request.callback_address,
                participant_id=request.participant_id,
                tenant_id=tenant.id,
                workspace_id=workspace.id,
                access_code_hash=hash_secret(code),
                state=ProvisioningState.CALLBACK_PENDING,
                attempts=0,
                next_attempt_at=now,
                deadline_at=now + timedelta(seconds=self.policy.deadline_seconds),
                created_at=now,
                updated_at=now,
                kind=kind,
            )
            await uow.provisionings.add(item)  # Conflict: the same request raced in
            made.append(item)

        try:
            workspace = await self.workspaces.create(
                tenant.id,
                f"EDC transfer {request.transfer_process_id}"[:200],
                {"edc.connector": connector[:256], "edc.asset": request.asset_id[:256]},
                allowed_assets=granted,
                with_it=record,
            )
        except Conflict:  # the first one stands (its bucket was kept, this one's removed)
            return await self.provision(connector, request, kind)
        [item] = made
        self._codes[item.id] = code
        log.info(
            "provisioned",
            extra={"transfer_process_id": request.transfer_process_id, "workspace_id": workspace.id},
        )
        self._wake.set()
        return item

    async def _granted(self, connector: str, offering: str, kind: ProvisionerKind) -> frozenset[str]:
        """The catalog assets the transfer grants; a transfer that grants none is refused before
        anything is made (EDC takes the 400 as final and fails the transfer)."""
        if kind is ProvisionerKind.DATA_PLANE:
            granted = self.policy.dataplane_assets.get(connector, frozenset())
            rule = f"edc.connectors.{connector}.dataplane_assets is empty"
        else:
            granted = await self.assets.granted_by(offering)
            rule = f"no catalog asset names EDC asset {offering!r} in its offerings"
        if not granted:
            log.warning(
                "provision request for an offering that grants no asset",
                extra={"connector": connector, "edc_asset": offering, "provisioner": kind.value},
            )
            raise OfferingNotGranted(
                f"this transfer grants no compute asset: {rule} "
                "(docs/edc.md, 'Which assets a transfer grants')"
            )
        return granted

    async def deprovision(
        self, connector: str, transfer_process_id: str, resource_definition_id: str
    ) -> None:
        """Stop executions and revoke tokens now; delete the data after the retention period."""
        async with self.store.read() as uow:
            item = await uow.provisionings.find(connector, transfer_process_id, resource_definition_id)
        if item is None:
            log.warning(
                "deprovision of an unknown transfer", extra={"transfer_process_id": transfer_process_id}
            )
            return
        if item.state in (ProvisioningState.DEPROVISIONING, ProvisioningState.DEPROVISIONED):
            return
        now = self.clock()
        updated = replace(
            item,
            state=ProvisioningState.DEPROVISIONING,
            pending=None,
            next_attempt_at=None,
            delete_after=now + timedelta(seconds=self.policy.retention_seconds),
            updated_at=now,
        )
        if item.kind is ProvisionerKind.DATA_PLANE:  # the data plane waits for a deprovision callback
            updated = replace(
                updated,
                pending=PendingCallback.DEPROVISION,
                next_attempt_at=now,
                attempts=0,
                deadline_at=now + timedelta(seconds=self.policy.deadline_seconds),
            )
        async with self.store.transaction() as uow:
            await uow.provisionings.update(updated)
        await self.executions.cancel_workspace(item.workspace_id)
        await self.workspaces.revoke_all_tokens(item.workspace_id)
        self._wake.set()

    async def list(self, page: PageRequest, state: ProvisioningState | None = None) -> Page[Provisioning]:
        """Every provisioning record with its callback state, newest first (operators)."""
        async with self.store.read() as uow:
            return await uow.provisionings.list(page, state.value if state else None)

    async def access_document(self, workspace_id: str, code: str | None) -> dict[str, Any]:
        """What the consumer needs to use its workspace, for the holder of the access code."""
        async with self.store.read() as uow:
            item = await uow.provisionings.for_workspace(workspace_id)
        if item is None or item.state not in (
            ProvisioningState.CALLBACK_PENDING,
            ProvisioningState.PROVISIONED,
        ):
            raise NotFound("workspace", workspace_id)
        if not code or not hmac.compare_digest(hash_secret(code), item.access_code_hash):
            raise Unauthenticated(f"the {ACCESS_HEADER} header does not open this workspace")
        issued = await self.workspaces.issue_system_token(
            workspace_id,
            {
                Scope.OBJECTS_READ,
                Scope.OBJECTS_WRITE,
                Scope.EXECUTIONS_RUN,
                Scope.EXECUTIONS_READ,
                Scope.SUBSCRIPTIONS_WRITE,
            },
            self.policy.access_token_ttl_seconds,
            "edc access document",
        )
        base = self.policy.public_url
        document: dict[str, Any] = {
            "api_base_url": f"{base}/api/v1",
            "workspace_id": workspace_id,
            "transfer_process_id": item.transfer_process_id,
            "asset_id": item.asset_id,
            "token": issued.token,
            "token_expires_at": issued.record.expires_at.isoformat().replace("+00:00", "Z"),
            "token_scopes": sorted(s.value for s in issued.record.scopes),
            "objects_url": f"{base}/api/v1/workspaces/{workspace_id}/objects",
            "executions_url": f"{base}/api/v1/executions",
            "docs_url": f"{base}/docs",
            "storage": {"backend": self.storage.name},
        }
        workspace = await self.workspaces.get_system(workspace_id)
        creds = await self.storage.consumer_credentials(
            workspace.location, self.workspaces.policy.credentials_duration
        )
        if creds is not None:
            document["storage"].update(
                endpoint_url=creds.endpoint_url,
                bucket=creds.bucket,
                prefix=creds.prefix,
                region=creds.region,
                access_key_id=creds.access_key_id,
                secret_access_key=creds.secret_access_key,
                session_token=creds.session_token,
                expiration=creds.expiration.isoformat().replace("+00:00", "Z"),
            )
        return document

    # --- the worker ---------------------------------------------------------------------------

    def start(self) -> None:
        self._tasks.spawn(("worker",), self._loop(), "edc provisioning")

    async def stop(self) -> None:
        await self._tasks.close()

    async def _loop(self) -> None:
        while True:
            self._wake.clear()
            try:
                wait = await self._dispatch()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("provisioning worker failed; retrying")
                wait = 5.0
            await wait_event(self._wake, min(wait, 5.0))

    async def _dispatch(self) -> float:
        """Start every due callback or deletion that is not under way, each on its own: one slow
        connector or a 409 retry does not hold back the provisionings behind it. The seconds until
        the next one not under way is due."""
        async with self.store.read() as uow:
            due = await uow.provisionings.due(self.clock())
        for item in due:
            if not self._tasks.running(item.id):
                self._tasks.spawn(item.id, self._handled(item), f"provisioning {item.id}")
        busy = {key for key in self._tasks.running_keys() if isinstance(key, str)}
        async with self.store.read() as uow:
            next_due = await uow.provisionings.next_due(busy)
        return 5.0 if next_due is None else max(0.0, (next_due - self.clock()).total_seconds())

    async def _handled(self, item: Provisioning) -> None:
        try:
            await self._handle(item)
        finally:
            self._wake.set()  # its next attempt may be due soon: look again

    async def run_due(self) -> None:
        """Send whatever is due now and wait for it (tests and tools; the worker does not wait)."""
        async with self.store.read() as uow:
            due = await uow.provisionings.due(self.clock())
        await asyncio.gather(*(self._handle(item) for item in due))

    async def _handle(self, item: Provisioning) -> None:
        now = self.clock()
        if item.pending is not None and item.next_attempt_at is not None and item.next_attempt_at <= now:
            item = await self._callback(item)
        if (
            item.state is ProvisioningState.DEPROVISIONING
            and item.delete_after is not None
            and item.delete_after <= now
        ):
            await self.workspaces.delete_system(item.workspace_id)
            item = replace(item, delete_after=None, updated_at=self.clock())
            if item.pending is None:
                item = replace(item, state=ProvisioningState.DEPROVISIONED)
            async with self.store.transaction() as uow:
                await uow.provisionings.update(item)
            log.info(
                "workspace data deleted after deprovisioning",
                extra={"transfer_process_id": item.transfer_process_id},
            )

    async def _address(self, item: Provisioning, code: str) -> dict[str, Any]:
        """The content data address: HttpData pointing at the access document, or, when the
        operator chose it and the storage has one (S3), the storage's own address. Session tokens
        travel only through EDC's vault, so temporary credentials stay in the access document."""
        if self.policy.content_address == "amazon_s3":
            workspace = await self.workspaces.get_system(item.workspace_id)
            properties = self.storage.consumer_address(workspace.location)
            if properties is not None:
                return {"properties": properties}
        return {
            "properties": {
                "type": "HttpData",
                "baseUrl": f"{self.policy.public_url}/api/v1/workspaces/{item.workspace_id}/access",
                "authKey": ACCESS_HEADER,
                "authCode": code,
            }
        }

    async def _request(self, item: Provisioning, code: str | None) -> tuple[str, dict[str, Any]]:
        """The callback URL and body, by provisioner kind and the callback that is pending."""
        base = item.callback_address.rstrip("/")
        if item.kind is ProvisionerKind.DATA_PLANE:
            url = f"{base}/{item.transfer_process_id}/{item.resource_definition_id}/{item.pending}"
            if item.pending is PendingCallback.DEPROVISION:
                return url, {}
            assert code is not None
            return url, {"dataAddress": await self._address(item, code)}
        assert code is not None
        return f"{base}/{item.transfer_process_id}/provision", {
            "edctype": CALLBACK_TYPE,
            "resourceDefinitionId": item.resource_definition_id,
            "assetId": item.asset_id,
            "resourceName": f"workspace {item.workspace_id}",
            "contentDataAddress": await self._address(item, code),
            "apiKeyJwt": "unused",
            "hasToken": False,
        }

    async def _callback(self, item: Provisioning) -> Provisioning:
        code = None
        if item.pending is PendingCallback.PROVISION:
            code = self._codes.get(item.id)
            if code is None:
                # After a restart (or a repeated request) the code is not in memory: issue a new one.
                code = secrets.token_urlsafe(32)
                item = replace(item, access_code_hash=hash_secret(code))
                async with self.store.transaction() as uow:
                    await uow.provisionings.update(item)
                self._codes[item.id] = code
        url, body = await self._request(item, code)
        headers = {}
        api_key = self.policy.api_keys.get(item.connector)
        if api_key:
            headers["x-api-key"] = api_key
        now = self.clock()
        refused = False
        try:
            status: int | None = await self.poster.post_json(item.connector, url, headers, body)
            error = f"the connector answered HTTP {status}"
        except ForbiddenAddress as exc:  # the address is not (or no longer) allowed: final
            status, error, refused = None, exc.detail[:300], True
        except Exception as exc:  # unreachable connector: retried like a 5xx
            status, error = None, f"{type(exc).__name__}: {exc}"[:300]
        if status is not None and 200 <= status < 300:
            state = item.state
            if item.pending is PendingCallback.PROVISION:
                state = ProvisioningState.PROVISIONED
            elif item.delete_after is None:  # deprovision callback delivered, data already gone
                state = ProvisioningState.DEPROVISIONED
            updated = replace(
                item,
                state=state,
                pending=None,
                attempts=item.attempts + 1,
                next_attempt_at=None,
                last_status=status,
                error=None,
                updated_at=now,
            )
            self._codes.pop(item.id, None)
        elif not refused and (status is None or status in RETRY_STATUS):
            backoff = Backoff(self.policy.backoff_seconds, self.policy.max_backoff_seconds, "upper")
            delay = backoff.delay(item.attempts + 1)
            updated = item.attempt_failed(now, status, error, timedelta(seconds=delay))
        else:  # 404 (unknown process) and other refusals are final
            updated = item.give_up(now, status, error)
        async with self.store.transaction() as uow:
            current = await uow.provisionings.find(
                item.connector, item.transfer_process_id, item.resource_definition_id
            )
            if current is None or current.pending is not item.pending:
                return (
                    current or updated
                )  # superseded meanwhile (e.g. deprovisioned during a provision callback)
            await uow.provisionings.update(updated)
        if updated.pending is None and updated.error:
            log.error(
                "provisioning callback failed for good",
                extra={
                    "transfer_process_id": item.transfer_process_id,
                    "status": status,
                    "error": updated.error,
                },
            )
        return updated
