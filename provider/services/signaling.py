"""Data Plane Signaling (provider/domain/dataflows.py): the data plane side of the specification.

Provider flows (`start`): a workspace for the consumer named by the flow, limited to the catalog
assets the flow's dataset grants (as EDC provisioning does), opened by a token in the data
address; `suspend` revokes every token at once, `resume` issues a fresh address, `terminate` and
`completed` cancel the executions, revoke and delete the workspace.

Consumer flows (`prepare`, `started`): the flow is bound to a workspace and key that its owner
registered beforehand (POST /api/v1/workspaces/{id}/edc-transfers, naming the agreement or the
process), and the provider's data address is fetched by an ordinary import (SSRF guard,
retries, resumption, checksums). Its end is told to the control plane as a notice.

Every state change is stored before it is answered or told; notices are kept on the flow and
sent again with backoff until the control plane takes them.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import logging
import uuid
from collections.abc import Awaitable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import SplitResult, quote, urlsplit

from provider.aio import Backoff, Tasks, wait_event
from provider.domain.dataflows import (
    HTTP_PULL,
    PROFILES,
    DataFlow,
    FlowRole,
    FlowState,
    Notice,
    direction,
    require_pull,
)
from provider.domain.errors import (
    BadRequest,
    Conflict,
    FieldProblem,
    Forbidden,
    NotFound,
    OfferingNotGranted,
    Unauthenticated,
)
from provider.domain.imports import Import, ImportState
from provider.domain.pagination import Page, PageRequest
from provider.domain.workspaces import Scope, WorkspaceState
from provider.services.assets import AssetService
from provider.services.executions import ExecutionService
from provider.services.imports import ImportService
from provider.services.ports import Clock, JsonPoster, Store
from provider.services.tenants import TenantService
from provider.services.workspaces import WorkspaceService

log = logging.getLogger(__name__)
ACCESS_SCOPES = {
    Scope.OBJECTS_READ,
    Scope.OBJECTS_WRITE,
    Scope.EXECUTIONS_RUN,
    Scope.EXECUTIONS_READ,
    Scope.SUBSCRIPTIONS_WRITE,
}
NOTICE_CLAIM_SECONDS = 120  # longer than a notice's request may take
RETRYABLE_STATUS = {408, 409, 425, 429}  # 409: a control plane busy with the transfer (EDC's lease)


@dataclass(frozen=True)
class Registration:
    """How this data plane registers itself with a control plane: PUT {url}/dataplanes."""

    url: str
    authorization: dict[str, Any] = field(repr=False)  # the operator's, sent as given
    labels: tuple[str, ...] = ()


@dataclass(frozen=True)
class ControlPlane:
    name: str
    secret: str = field(repr=False)
    endpoint: str | None  # configured; a registration replaces it
    callback_token: str | None = field(default=None, repr=False)
    participants: frozenset[str] = frozenset()  # whom it may prepare consumer flows for
    registration: Registration | None = None


@dataclass(frozen=True)
class SignalingPolicy:
    public_url: str  # HTTPS: data addresses point at this service's API
    control_planes: dict[str, ControlPlane]
    token_ttl_seconds: int
    http_networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    notice_max_attempts: int = 20
    notice_backoff: Backoff = field(default_factory=lambda: Backoff(1.0, 300.0))
    retention_seconds: int = 0  # an ended provider flow's workspace is deleted after this
    dataplane_id: str = "provider"
    complete_after_idle_seconds: int | None = None  # None: only the control plane ends a flow


@dataclass(frozen=True)
class FlowMessage:
    """What `prepare` and `start` carry (the specification's DataFlowBaseMessage)."""

    process_id: str
    participant_id: str
    counter_party_id: str
    agreement_id: str
    dataset_id: str
    profile: str
    has_data_address: bool = False

    def flow(
        self,
        control_plane: str,
        role: FlowRole,
        state: FlowState,
        tenant_id: str,
        workspace_id: str,
        at: datetime,
        target_key: str | None = None,
    ) -> DataFlow:
        return DataFlow(
            id=self.process_id,
            control_plane=control_plane,
            role=role,
            state=state,
            profile=self.profile,
            participant_id=self.participant_id,
            counter_party_id=self.counter_party_id,
            agreement_id=self.agreement_id,
            dataset_id=self.dataset_id,
            tenant_id=tenant_id,
            workspace_id=workspace_id,
            created_at=at,
            updated_at=at,
            target_key=target_key,
        )


@dataclass(frozen=True)
class DataAddress:
    """A DSP data address; `properties` are its endpointProperties by name."""

    endpoint_type: str
    endpoint: str | None
    properties: dict[str, str] = field(default_factory=dict, repr=False)  # may hold a token

    def document(self) -> dict[str, Any]:
        """As the DSP schema has it: typed, with at least one property."""
        return {
            "@type": "DataAddress",
            "endpointType": self.endpoint_type,
            "endpoint": self.endpoint,
            "endpointProperties": [
                {"@type": "EndpointProperty", "name": name, "value": value}
                for name, value in self.properties.items()
            ],
        }


class SignalingService:
    def __init__(
        self,
        store: Store,
        tenants: TenantService,
        assets: AssetService,
        workspaces: WorkspaceService,
        executions: ExecutionService,
        imports: ImportService,
        poster: JsonPoster,
        clock: Clock,
        policy: SignalingPolicy,
    ) -> None:
        self.store = store
        self.tenants = tenants
        self.assets = assets
        self.workspaces = workspaces
        self.executions = executions
        self.imports = imports
        self.poster = poster
        self.clock = clock
        self.policy = policy
        self._wake = asyncio.Event()  # a notice was queued in this process
        self._tasks = Tasks(log)

    @property
    def enabled(self) -> bool:
        return bool(self.policy.control_planes)

    def authenticate(self, authorization: str | None) -> str:
        """The name of the control plane whose secret the `Authorization: Bearer` header carries."""
        scheme, _, credential = (authorization or "").partition(" ")
        if scheme.lower() == "bearer" and credential.strip():
            given = credential.strip().encode("utf-8", "surrogateescape")  # any bytes a client sent
            for control_plane in self.policy.control_planes.values():
                if hmac.compare_digest(given, control_plane.secret.encode()):
                    return control_plane.name
        raise Unauthenticated("signaling needs `Authorization: Bearer <the control plane's secret>`")

    # --- provider flows -----------------------------------------------------------------------

    async def start(self, control_plane: str, message: FlowMessage) -> tuple[DataFlow, DataAddress]:
        """A consumer-pull flow of a compute offering: its workspace, and the address that opens it."""
        require_pull(message.profile)
        if message.has_data_address:
            raise BadRequest(
                "a consumer-pull start carries no data address: the data plane makes it",
                [FieldProblem("body.dataAddress", "must be omitted on consumer-pull transfers")],
            )
        await self._new(control_plane, message.process_id)
        granted = await self.assets.granted_by(message.dataset_id)
        if not granted:
            raise OfferingNotGranted(
                f"dataset {message.dataset_id!r} grants no compute asset: no catalog asset names it "
                "in its offerings (docs/edc.md, 'Which assets a transfer grants')"
            )
        tenant = await self.tenants.find_or_create(message.counter_party_id, message.counter_party_id[:200])
        workspace = await self.workspaces.create(
            tenant.id,
            f"data flow {message.process_id}"[:200],
            {"dps.control_plane": control_plane, "dps.dataset": message.dataset_id[:256]},
            allowed_assets=granted,
        )
        flow = message.flow(
            control_plane, FlowRole.PROVIDER, FlowState.STARTED, tenant.id, workspace.id, self.clock()
        )
        try:
            async with self.store.transaction() as uow:
                await uow.dataflows.add(flow)
        except Conflict:  # the same start raced in: the first one stands
            await self.workspaces.delete_system(workspace.id)
            raise
        log.info("data flow started", extra={"process_id": flow.id, "workspace_id": workspace.id})
        return flow, await self._address(flow)

    async def _address(self, flow: DataFlow) -> DataAddress:
        """The HTTP profile's pull address: the workspace in our API, and a bearer token for it."""
        issued = await self.workspaces.issue_system_token(
            flow.workspace_id, ACCESS_SCOPES, self.policy.token_ttl_seconds, f"data flow {flow.id}"[:200]
        )
        return DataAddress(
            HTTP_PULL,
            f"{self.policy.public_url}/api/v1/workspaces/{flow.workspace_id}",
            {"authorization": issued.token, "authType": "bearer"},
        )

    async def list(self, page: PageRequest, state: FlowState | None = None) -> Page[DataFlow]:
        """Every flow of every control plane with its notice state (operators)."""
        async with self.store.read() as uow:
            return await uow.dataflows.list(page, state.value if state else None)

    async def suspend(self, control_plane: str, flow_id: str) -> DataFlow:
        """No access until resumed: every token of the workspace is revoked at once, and its queued
        executions are held (those that began run on, their sidecars keeping their tokens)."""
        flow = await self._move(control_plane, flow_id, FlowState.SUSPENDED)
        if flow.role is FlowRole.PROVIDER:
            await self.workspaces.suspend(flow.workspace_id)
            await self.executions.hold_workspace(flow.workspace_id)
        elif flow.import_id is not None:
            await self._cancel_import(flow)
        return flow

    async def resume(
        self, control_plane: str, flow_id: str, address: DataAddress | None = None
    ) -> tuple[DataFlow, DataAddress | None]:
        """A provider flow gets a fresh address; a consumer flow fetches again, from the address
        the resume brings."""
        flow = await self._get(control_plane, flow_id)
        if flow.role is FlowRole.CONSUMER and flow.state is FlowState.SUSPENDED:
            if address is None:
                raise BadRequest(
                    "a suspended consumer flow resumes from the provider's new data address",
                    [FieldProblem("body.dataAddress", "required to resume a consumer-pull flow")],
                )
            url, headers = self._fetchable(address)
            assert flow.target_key is not None
            item = await self.imports.create(None, flow.workspace_id, url, headers, flow.target_key)
            flow = await self._move(control_plane, flow_id, FlowState.STARTED, import_id=item.id)
            return flow, None
        flow = await self._move(control_plane, flow_id, FlowState.STARTED)
        if flow.role is FlowRole.PROVIDER:
            await self.workspaces.unsuspend(flow.workspace_id)
            await self.executions.release_workspace(flow.workspace_id)
            return flow, await self._address(flow)
        return flow, None

    async def terminate(self, control_plane: str, flow_id: str) -> DataFlow:
        return await self._end(control_plane, flow_id, FlowState.TERMINATED)

    async def completed(self, control_plane: str, flow_id: str) -> DataFlow:
        return await self._end(control_plane, flow_id, FlowState.COMPLETED)

    async def _end(self, control_plane: str, flow_id: str, state: FlowState) -> DataFlow:
        """A provider flow's workspace goes (executions canceled and tokens revoked at once, data
        deleted after signaling.retention_seconds); a consumer flow's import stops, and the
        consumer keeps its workspace."""
        flow = await self._move(control_plane, flow_id, state, retain=True)
        if flow.role is FlowRole.PROVIDER:
            await self._close(flow, f"the data flow is {state.value}")
        elif flow.import_id is not None:
            await self._cancel_import(flow)
        return flow

    async def _close(self, flow: DataFlow, why: str) -> None:
        """An ended provider flow: nothing runs or opens its workspace any more; its data stays
        until `delete_after` (at once when the operator keeps nothing)."""
        await self.executions.cancel_workspace(flow.workspace_id, why)
        if self.policy.retention_seconds == 0:
            await self._delete(flow)
        else:
            await self.workspaces.suspend(flow.workspace_id)  # API keys meet 409
            await self.workspaces.revoke_all_tokens(flow.workspace_id)

    async def _delete(self, flow: DataFlow) -> None:
        await self.workspaces.delete_system(flow.workspace_id)  # idempotent
        async with self.store.transaction() as uow:
            current = await uow.dataflows.get(flow.control_plane, flow.id, for_update=True)
            if current is not None and current.delete_after is not None:
                await uow.dataflows.update(replace(current, delete_after=None))

    async def sweep(self, limit: int = 100) -> tuple[int, int]:
        """Housekeeping of provider flows: (how many completed by themselves, how many ended
        flows' workspaces were deleted). A flow completes once its workspace has run an execution
        and none has been active for signaling.complete_after_idle_seconds. An ended flow whose
        workspace is still open (the process stopped between storing the end and closing it) is
        closed now. Each flow's trouble is logged and left for the next round, never in the way
        of the others."""
        completed = deleted = 0
        idle = self.policy.complete_after_idle_seconds
        if idle is not None:
            after: tuple[datetime, str, str] | None = None
            while True:
                async with self.store.read() as uow:
                    flows = await uow.dataflows.started_provider_flows(limit, after)
                for flow in flows:
                    done = await self._each(flow, self._complete_if_idle(flow, timedelta(seconds=idle)))
                    completed += done is True
                if len(flows) < limit:
                    break
                after = (flows[-1].created_at, flows[-1].control_plane, flows[-1].id)
        async with self.store.read() as uow:
            unclosed = await uow.dataflows.ended_with_open_workspace(limit)
        for flow in unclosed:
            await self._each(flow, self._close(flow, f"the data flow is {flow.state.value}"))
        async with self.store.read() as uow:
            due = await uow.dataflows.deletions_due(self.clock(), limit)
        for flow in due:
            # Claimed first, as notices are: of the replicas that found it due, one deletes it.
            async with self.store.transaction() as uow:
                claimed = await uow.dataflows.claim_deletion(
                    flow, self.clock() + timedelta(seconds=NOTICE_CLAIM_SECONDS)
                )
            if claimed and await self._each(flow, self._delete(flow)) is not False:
                deleted += 1
                log.info("ended data flow's workspace deleted", extra={"process_id": flow.id})
        return completed, deleted

    async def _each(self, flow: DataFlow, work: Awaitable[Any]) -> Any:
        """`work` for one flow of a sweep; False (logged) when it fails."""
        try:
            return await work
        except Exception:
            log.exception("data flow housekeeping failed; trying again later", extra={"process_id": flow.id})
            return False

    async def _complete_if_idle(self, flow: DataFlow, idle: timedelta) -> bool:
        async with self.store.transaction() as uow:
            # The workspace row is locked first, as starting an execution locks it: an execution
            # started at this moment is either counted below or refused by the closed workspace.
            workspace = await uow.workspaces.get(flow.workspace_id, for_update=True)
            if workspace is None or workspace.state is not WorkspaceState.ACTIVE:
                return False  # suspended (its flow too) or being deleted
            active, last_ended = await uow.executions.workspace_activity(flow.workspace_id)
            now = self.clock()
            if active or last_ended is None or now - last_ended < idle:
                return False
            current = await uow.dataflows.get(flow.control_plane, flow.id, for_update=True)
            if current is None or current.state is not FlowState.STARTED:
                return False  # suspended or ended by its control plane meanwhile
            moved = current.to(FlowState.COMPLETED, now)
            assert moved is not None
            ended = replace(
                moved.notify(Notice.COMPLETED, now),
                delete_after=now + timedelta(seconds=self.policy.retention_seconds),
            )
            await uow.dataflows.update(ended)
            # Closed with the completion: API keys meet 409 from this commit on (_close below
            # revokes the tokens and deletes or keeps the data).
            await uow.workspaces.update(replace(workspace, state=WorkspaceState.SUSPENDED, updated_at=now))
        log.info("data flow completed: its executions are done", extra={"process_id": flow.id})
        await self._close(ended, "the data flow completed")
        self._wake.set()
        return True

    async def status(self, control_plane: str, flow_id: str) -> DataFlow:
        return await self._get(control_plane, flow_id)

    # --- consumer flows -----------------------------------------------------------------------

    async def prepare(self, control_plane: str, message: FlowMessage) -> DataFlow:
        """Bind a consumer-pull flow to the workspace registered for its agreement or process."""
        require_pull(message.profile)
        speaks_for = self.policy.control_planes[control_plane].participants
        if message.participant_id not in speaks_for:
            raise Forbidden(
                f"control plane {control_plane} does not act for participant {message.participant_id!r}: "
                f"signaling.control_planes.{control_plane}.participants names those it does"
            )
        await self._new(control_plane, message.process_id)
        async with self.store.read() as uow:
            candidates = await uow.transfers.matching(message.process_id, message.agreement_id)
            tenant = await uow.tenants.get_by_participant(message.participant_id)
        # Only a registration of the participant this control plane speaks for may be used.
        mine = [r for r in candidates if tenant is not None and r.tenant_id == tenant.id]
        if not mine:
            raise BadRequest(
                f"no workspace of participant {message.participant_id!r} is registered for process "
                f"{message.process_id!r} or agreement {message.agreement_id!r}: register one first "
                "(POST /api/v1/workspaces/{id}/edc-transfers)"
            )
        registration = mine[0]
        now = self.clock()
        flow = message.flow(
            control_plane,
            FlowRole.CONSUMER,
            FlowState.PREPARED,
            registration.tenant_id,
            registration.workspace_id,
            now,
            registration.target_key,
        )
        async with self.store.transaction() as uow:
            if not await uow.transfers.started(registration.id, None, now):  # taken: by this flow
                raise Conflict("the registration was taken by another transfer meanwhile")
            await uow.dataflows.add(flow)
        return flow

    async def started(self, control_plane: str, flow_id: str, address: DataAddress | None) -> DataFlow:
        """The provider's data address has come: fetch it into the registered key."""
        flow = await self._get(control_plane, flow_id)
        if flow.role is not FlowRole.CONSUMER:
            raise Conflict(f"data flow {flow_id} was started here: only a consumer flow is told it started")
        if flow.state is FlowState.STARTED:
            return flow  # told twice: the import is under way already
        flow.to(FlowState.STARTED, self.clock())  # raises unless PREPARED
        if address is None:
            raise BadRequest(
                "a consumer-pull flow needs the provider's data address",
                [FieldProblem("body.dataAddress", "required for consumer-pull transfers")],
            )
        url, headers = self._fetchable(address)
        assert flow.target_key is not None
        item = await self.imports.create(None, flow.workspace_id, url, headers, flow.target_key)
        async with self.store.transaction() as uow:
            current = await uow.dataflows.get(control_plane, flow_id, for_update=True)
            assert current is not None
            moved = current.to(FlowState.STARTED, self.clock())
            flow = replace(moved or current, import_id=item.id)
            await uow.dataflows.update(flow)
        return flow

    def _fetchable(self, address: DataAddress) -> tuple[str, dict[str, str]]:
        """The URL and headers an import sends, by the HTTP profile's rules: an HTTPS endpoint
        (plain HTTP only to addresses in signaling.http_networks), and `authType: bearer` as
        `Authorization: Bearer <token>` (RFC 6750)."""
        endpoint = address.endpoint or ""
        parts = _url(endpoint, "body.dataAddress.endpoint")
        if parts.scheme == "http" and not self._http_allowed(parts.hostname or ""):
            raise BadRequest(
                "the data address's endpoint must use HTTPS (the HTTP profile requires it)",
                [
                    FieldProblem(
                        "body.dataAddress.endpoint",
                        "not HTTPS; the operator may allow "
                        "plain HTTP for named networks: signaling.http_networks",
                    )
                ],
            )
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise BadRequest(
                "the data address's endpoint is not an HTTPS URL",
                [FieldProblem("body.dataAddress.endpoint", "must be an https:// URL")],
            )
        headers: dict[str, str] = {}
        token = address.properties.get("authorization")
        if token is not None:
            kind = address.properties.get("authType")
            if kind is None or kind.lower() != "bearer":
                raise BadRequest(
                    "the data address's token cannot be presented",
                    [
                        FieldProblem(
                            "body.dataAddress.endpointProperties",
                            "authorization needs authType bearer (the only type the HTTP profile requires)",
                        )
                    ],
                )
            headers["Authorization"] = f"Bearer {token}"
        return endpoint, headers

    def _http_allowed(self, host: str) -> bool:
        try:
            address = ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            return False  # names need HTTPS: what they resolve to is not this check's to trust
        return any(address in network for network in self.policy.http_networks)

    async def _cancel_import(self, flow: DataFlow) -> None:
        assert flow.import_id is not None
        async with self.store.read() as uow:
            item = await uow.imports.get(flow.import_id)
        if item is not None and not item.state.final:
            await self.imports.cancel_system(item.id)

    def on_import(self, item: Import) -> None:
        """An import ended: a consumer flow it serves completes, or fails for good."""
        if item.state.final:
            self._tasks.spawn(("import", item.id), self._import_ended(item), f"flow of import {item.id}")

    async def _import_ended(self, item: Import) -> None:
        async with self.store.transaction() as uow:
            found = await uow.dataflows.for_import(item.id)
            # Locked: a terminate or suspend of the same flow waits, or is seen.
            flow = await uow.dataflows.get(found.control_plane, found.id, for_update=True) if found else None
            if flow is None or flow.state is not FlowState.STARTED or flow.import_id != item.id:
                return  # no flow, or one that was suspended or ended by its control plane
            now = self.clock()
            if item.state is ImportState.SUCCEEDED:
                moved = flow.to(FlowState.COMPLETED, now)
                assert moved is not None
                updated = moved.notify(Notice.COMPLETED, now)
            else:
                updated = flow.notify(
                    Notice.ERRORED, now, f"the import {item.state.value}: {item.error or ''}".strip()
                )
            await uow.dataflows.update(updated)
        self._wake.set()

    async def workspace_deleting(self, workspace_id: str) -> None:
        """A provider flow's workspace deleted by an operator: the flow ends, and its control plane
        hears that it failed."""
        async with self.store.transaction() as uow:
            flows = await uow.dataflows.for_workspace(workspace_id)
            for flow in flows:
                if flow.role is not FlowRole.PROVIDER or flow.state.final:
                    continue
                now = self.clock()
                moved = flow.to(FlowState.TERMINATED, now)
                assert moved is not None
                await uow.dataflows.update(moved.notify(Notice.ERRORED, now, "the workspace was deleted"))
        self._wake.set()

    # --- control plane registration -----------------------------------------------------------

    async def register(self, control_plane: str, controlplane_id: str, endpoint: str) -> None:
        """Where the control plane wants its notices; the address must be one the operator allows."""
        _url(endpoint, "body.endpoint")
        await self.poster.check(control_plane, endpoint, "body.endpoint")
        async with self.store.transaction() as uow:
            await uow.dataflows.register_control_plane(control_plane, controlplane_id, endpoint, self.clock())
        self._wake.set()  # notices that waited for an address

    async def unregister(self, control_plane: str, controlplane_id: str) -> None:
        async with self.store.transaction() as uow:
            if not await uow.dataflows.unregister_control_plane(control_plane, controlplane_id):
                raise NotFound("control plane", controlplane_id)

    # --- notices ------------------------------------------------------------------------------

    def start_worker(self) -> None:
        if self.enabled:
            self._tasks.spawn("notices", self._notices(), "signaling notices")
        for control_plane in self.policy.control_planes.values():
            if control_plane.registration is not None:
                work = self._register_until_taken(control_plane)
                self._tasks.spawn(
                    ("registration", control_plane.name), work, f"register with {control_plane.name}"
                )

    def registration_message(self, control_plane: ControlPlane) -> dict[str, Any]:
        """The specification's DataPlaneRegistrationMessage for `control_plane`."""
        assert control_plane.registration is not None
        message: dict[str, Any] = {
            "dataplaneId": self.policy.dataplane_id,
            "endpoint": f"{self.policy.public_url}/signaling/v1",
            "profiles": list(PROFILES),
            "authorization": control_plane.registration.authorization,
        }
        if control_plane.registration.labels:
            message["labels"] = list(control_plane.registration.labels)
        return message

    async def register_with(self, control_plane: ControlPlane) -> int:
        """One registration with `control_plane`: its HTTP status; raises when it cannot be reached."""
        assert control_plane.registration is not None
        headers = {}
        if control_plane.callback_token:
            headers["Authorization"] = f"Bearer {control_plane.callback_token}"
        url = f"{control_plane.registration.url.rstrip('/')}/dataplanes"
        return await self.poster.post_json(
            control_plane.name, url, headers, self.registration_message(control_plane), method="PUT"
        )

    async def _register_until_taken(self, control_plane: ControlPlane) -> bool:
        """Register at start, again with backoff while the control plane is down or busy; a
        refusal (another 4xx) is the operator's to fix, and is logged."""
        failures = 0
        while True:
            problem: str
            try:
                status = await self.register_with(control_plane)
                problem = f"HTTP {status}"
            except Exception as exc:  # unreachable, or an address the operator does not allow
                status, problem = None, f"{type(exc).__name__}: {exc}"[:500]
            where = {"control_plane": control_plane.name, "dataplane_id": self.policy.dataplane_id}
            if status is not None and 200 <= status < 300:
                log.info("registered with the control plane", extra=where)
                return True
            if status is not None and 400 <= status < 500 and status not in RETRYABLE_STATUS:
                log.error("the control plane refused the registration: %s", problem, extra=where)
                return False
            failures += 1
            log.warning("registration not taken (%s); trying again", problem, extra=where)
            await asyncio.sleep(self.policy.notice_backoff.delay(failures))

    async def recover(self) -> int:
        """At start-up: consumer flows whose import ended while no process heard it (a crash, a
        stop) complete or fail now; how many."""
        async with self.store.read() as uow:
            flows = await uow.dataflows.started_consumer_flows()
            ended = []
            for flow in flows:
                item = await uow.imports.get(flow.import_id) if flow.import_id else None
                if item is not None and item.state.final:
                    ended.append(item)
        for item in ended:
            await self._import_ended(item)
        return len(ended)

    async def stop(self) -> None:
        await self._tasks.close()

    async def _notices(self) -> None:
        while True:
            try:
                await self.sweep()
            except Exception:  # the store: the notices below may still go out
                log.exception("data flow housekeeping failed; trying again")
            try:
                await self.send_due()
                async with self.store.read() as uow:
                    due = await uow.dataflows.next_notice()
                wait = 30.0 if due is None else max(0.0, (due - self.clock()).total_seconds())
            except Exception:
                log.exception("signaling notices failed; trying again")
                wait = 5.0
            self._wake.clear()
            await wait_event(self._wake, min(wait, 30.0))

    async def send_due(self) -> int:
        """Send every notice that is due; how many the control planes took."""
        async with self.store.read() as uow:
            due = await uow.dataflows.notices_due(self.clock())
        taken = 0
        for flow in due:
            taken += await self._send(flow)
        return taken

    async def _send(self, flow: DataFlow) -> int:
        assert flow.notice is not None and flow.next_notice_at is not None
        # Claim the attempt first: of the replicas (or rounds) that saw it due, one sends it; if
        # that one dies, the notice is due again when the claim runs out.
        async with self.store.transaction() as uow:
            claimed = await uow.dataflows.claim_notice(
                flow, self.clock() + timedelta(seconds=NOTICE_CLAIM_SECONDS)
            )
        if not claimed:
            return 0
        control_plane = self.policy.control_planes.get(flow.control_plane)
        async with self.store.read() as uow:
            registered = await uow.dataflows.control_plane_endpoint(flow.control_plane)
        endpoint = registered[1] if registered else (control_plane.endpoint if control_plane else None)
        status: int | None = None
        error: str
        if endpoint is None:
            error = "the control plane has no endpoint: configure it or have it register"
        else:
            url = f"{endpoint.rstrip('/')}/transfers/{quote(flow.id, safe='')}/dataflow/{flow.notice.value}"
            headers = {}
            if control_plane is not None and control_plane.callback_token:
                headers["Authorization"] = f"Bearer {control_plane.callback_token}"
            try:
                status = await self.poster.post_json(flow.control_plane, url, headers, status_message(flow))
                error = f"the control plane answered HTTP {status}"
            except Exception as exc:  # unreachable, refused address: tried again
                error = f"{type(exc).__name__}: {exc}"[:500]
        now = self.clock()
        if status is not None and 200 <= status < 300:
            updated, taken = flow.notice_taken(now), 1
            log.info("data flow notice taken", extra={"process_id": flow.id, "notice": flow.notice.value})
        else:
            final = (status is not None and 400 <= status < 500 and status not in RETRYABLE_STATUS) or (
                flow.notice_attempts + 1 >= self.policy.notice_max_attempts
            )
            retry_in = (
                None
                if final
                else timedelta(seconds=self.policy.notice_backoff.delay(flow.notice_attempts + 1))
            )
            updated, taken = flow.notice_failed(now, error, retry_in), 0
            log.warning(
                "data flow notice not taken" + ("; giving up" if final else "; trying again"),
                extra={"process_id": flow.id, "notice": flow.notice.value, "problem": error},
            )
        async with self.store.transaction() as uow:
            current = await uow.dataflows.get(flow.control_plane, flow.id, for_update=True)
            if (
                current is not None
                and current.notice is flow.notice
                and current.notice_attempts == flow.notice_attempts
            ):
                await uow.dataflows.update(
                    replace(
                        current,
                        notice=updated.notice,
                        notice_attempts=updated.notice_attempts,
                        next_notice_at=updated.next_notice_at,
                        notice_error=updated.notice_error,
                        updated_at=now,
                    )
                )
        return taken

    # --- shared -------------------------------------------------------------------------------

    async def _new(self, control_plane: str, process_id: str) -> None:
        async with self.store.read() as uow:
            if await uow.dataflows.get(control_plane, process_id) is not None:
                raise Conflict(f"a data flow for process {process_id} exists already")

    async def _get(self, control_plane: str, flow_id: str) -> DataFlow:
        async with self.store.read() as uow:
            flow = await uow.dataflows.get(control_plane, flow_id)
        if flow is None:
            raise NotFound("data flow", flow_id)
        return flow

    async def _move(
        self,
        control_plane: str,
        flow_id: str,
        state: FlowState,
        import_id: str | None = None,
        retain: bool = False,
    ) -> DataFlow:
        """Store the flow in `state` (a repeated signal changes nothing); raises NotFound, Conflict.
        `retain`: an ending provider flow's workspace is due for deletion after the retention
        (stored with the end, so that no crash can forget it)."""
        async with self.store.transaction() as uow:
            flow = await uow.dataflows.get(control_plane, flow_id, for_update=True)
            if flow is None:
                raise NotFound("data flow", flow_id)
            now = self.clock()
            moved = flow.to(state, now)
            if moved is None:
                return flow
            if import_id is not None:
                moved = replace(moved, import_id=import_id)
            if retain and flow.role is FlowRole.PROVIDER:
                moved = replace(moved, delete_after=now + timedelta(seconds=self.policy.retention_seconds))
            await uow.dataflows.update(moved)
        log.info("data flow %s", state.value.lower(), extra={"process_id": flow_id})
        return moved


def _url(text: str, field: str) -> SplitResult:
    """`text` split as a URL; BadRequest naming `field` when it is none (`https://[::1`, a bad port)."""
    try:
        parts = urlsplit(text)
        _ = parts.port
    except ValueError as exc:
        raise BadRequest("not a URL", [FieldProblem(field, f"not a URL: {exc}")]) from None
    return parts


def status_message(flow: DataFlow, address: DataAddress | None = None) -> dict[str, Any]:
    """The specification's DataFlowStatusMessage."""
    message: dict[str, Any] = {
        "messageId": str(uuid.uuid4()),
        "dataFlowId": flow.id,
        "state": flow.state.value,
    }
    if address is not None:
        message["dataAddress"] = address.document()
    if flow.notice is Notice.ERRORED and flow.error:
        message["error"] = flow.error
    return message


__all__ = ["DataAddress", "FlowMessage", "SignalingPolicy", "SignalingService", "direction", "status_message"]
