"""Ports: the small interfaces that backends implement (see provider/backends/)."""

from __future__ import annotations

import builtins
import enum
from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from provider.domain.assets import Asset
from provider.domain.dataflows import DataFlow
from provider.domain.executions import Execution, OutputFile, State
from provider.domain.imports import Import, ImportState
from provider.domain.notifications import (
    ClaimedDelivery,
    Delivery,
    Event,
    EventFilter,
    Outcome,
    Subscription,
)
from provider.domain.pagination import Page, PageRequest
from provider.domain.programs import Program, StepLog
from provider.domain.provisioning import Provisioning, TransferRegistration
from provider.domain.ranges import ByteRange
from provider.domain.tenants import ApiKey, Tenant
from provider.domain.tes import StateFilter, TaskRecord
from provider.domain.tokens import TokenClaims, WorkspaceToken
from provider.domain.workspaces import Usage, Workspace, WorkspaceState
from provider.sidecar.contract import Env, StorageKind


class Clock(Protocol):
    def __call__(self) -> datetime:
        """The current time, timezone-aware (UTC)."""


class TenantRepository(Protocol):
    async def add(self, tenant: Tenant) -> None:
        """Insert; raises Conflict if the participant id is taken."""

    async def get(self, tenant_id: str) -> Tenant | None:
        """The tenant with this id, or None."""

    async def get_by_participant(self, participant_id: str) -> Tenant | None:
        """The tenant for a data space participant id, or None."""

    async def list(self, page: PageRequest) -> Page[Tenant]:
        """Tenants in creation order."""

    async def set_allowed_assets(self, tenant_id: str, allowed: frozenset[str] | None) -> bool:
        """Limit the tenant to these asset ids (None: no limit); False if there is no such tenant."""


class ApiKeyRepository(Protocol):
    async def add(self, key: ApiKey) -> None:
        """Insert a key (its hash only)."""

    async def get(self, key_id: str) -> ApiKey | None:
        """The key with this id, revoked or not."""

    async def find_by_hash(self, secret_hash: str) -> ApiKey | None:
        """The key whose secret hashes to `secret_hash`, or None."""

    async def list_for_tenant(self, tenant_id: str, page: PageRequest) -> Page[ApiKey]:
        """A tenant's keys in creation order, revoked ones included."""

    async def revoke(self, key_id: str, at: datetime) -> None:
        """Mark the key revoked (idempotent: an earlier revocation time is kept)."""

    async def count_usable_admin_keys(self, now: datetime) -> int:
        """How many admin keys are neither revoked nor expired."""


class AssetRepository(Protocol):
    async def upsert(self, asset: Asset) -> bool:
        """Insert or replace by (id, version); True when it was created."""

    async def get(self, asset_id: str, version: str) -> Asset | None:
        """One version of an asset, or None."""

    async def versions(self, asset_id: str) -> list[Asset]:
        """Every stored version of an asset (any order)."""

    async def list(self, page: PageRequest, asset_id: str | None, text: str | None) -> Page[Asset]:
        """Assets ordered by (id, version); filter by id and by a substring of title or description."""

    async def delete(self, asset_id: str, version: str | None) -> int:
        """Delete one version, or every version when `version` is None; returns how many."""


class WorkspaceRepository(Protocol):
    async def add(self, workspace: Workspace) -> None:
        """Insert a new workspace."""

    async def get(self, workspace_id: str, *, for_update: bool = False) -> Workspace | None:
        """The workspace (deleted ones included); `for_update` locks the row until commit."""

    async def list(self, page: PageRequest, tenant_id: str | None) -> Page[Workspace]:
        """Workspaces that are not deleted, in creation order; all tenants when `tenant_id` is None."""

    async def at_location(self, locations: builtins.list[str]) -> builtins.list[Workspace]:
        """The workspaces at these storage locations (a bucket, or bucket/name in a shared one)."""

    async def update(self, workspace: Workspace) -> None:
        """Store the workspace's state, usage and timestamps."""

    async def in_state(self, state: WorkspaceState) -> builtins.list[Workspace]:
        """Every workspace in `state` (used to resume interrupted deletions)."""


class TokenRepository(Protocol):
    async def add(self, token: WorkspaceToken) -> None:
        """Record an issued token."""

    async def get(self, token_id: str) -> WorkspaceToken | None:
        """The token with this `jti`."""

    async def list_for_workspace(self, workspace_id: str, page: PageRequest) -> Page[WorkspaceToken]:
        """A workspace's tokens in issue order, revoked and expired ones included."""

    async def revoke(self, token_id: str, at: datetime) -> None:
        """Mark one token revoked (an earlier revocation time is kept)."""

    async def revoke_workspace(
        self, workspace_id: str, at: datetime, sparing: frozenset[str] = frozenset()
    ) -> list[str]:
        """Revoke every token of a workspace but those named as in `sparing`; the ids revoked now."""


class ImportRepository(Protocol):
    async def add(self, item: Import) -> None:
        """Insert a new import."""

    async def get(self, import_id: str) -> Import | None:
        """The import with this id."""

    async def list_for_workspace(self, workspace_id: str, page: PageRequest) -> Page[Import]:
        """A workspace's imports, oldest first."""

    async def update(self, item: Import) -> None:
        """Store the import's state and progress."""

    async def in_states(self, states: set[ImportState]) -> list[Import]:
        """Every import in one of `states` (used to resume work after a restart)."""


@dataclass(frozen=True)
class ExecutionFilter:
    tenant_id: str | None = None
    workspace_id: str | None = None
    asset_id: str | None = None
    states: frozenset[State] = frozenset()
    labels: tuple[tuple[str, str], ...] = ()
    created_after: datetime | None = None
    created_before: datetime | None = None


class ExecutionRepository(Protocol):
    async def add(self, execution: Execution) -> None:
        """Insert; raises Conflict when the tenant already used the idempotency key."""

    async def get(self, execution_id: str, *, for_update: bool = False) -> Execution | None:
        """The execution; `for_update` locks the row until commit."""

    async def versions(self, execution_ids: builtins.list[str]) -> dict[str, int]:
        """The current version of each of these executions that exists."""

    async def by_idempotency_key(self, tenant_id: str, key: str) -> Execution | None:
        """The execution a tenant created with this Idempotency-Key."""

    async def update(self, execution: Execution) -> None:
        """Store a new version of the execution."""

    async def list(self, where: ExecutionFilter, page: PageRequest) -> Page[Execution]:
        """Executions matching `where`, newest first."""

    async def active(self) -> builtins.list[Execution]:
        """Every execution not in a final state (for reconciliation)."""

    async def workspace_activity(self, workspace_id: str) -> tuple[int, datetime | None]:
        """How many of a workspace's executions are active, and when the last one ended."""

    async def count_active(self, tenant_id: str) -> int:
        """How many of a tenant's executions are past QUEUED and not final."""


@dataclass(frozen=True)
class OperationalStats:
    """What the operator's gauges show (provider/api/metrics.py)."""

    executions: dict[tuple[str, str], int]  # (state, asset id) -> active executions
    oldest_queued: datetime | None  # the earliest last change of a QUEUED execution
    provisionings: dict[str, int]  # state -> EDC provisioned resources
    dataflows: dict[str, int]  # state -> Data Plane Signaling flows


class StatsRepository(Protocol):
    async def snapshot(self) -> OperationalStats:
        """Counts by state, for metrics."""


@dataclass(frozen=True)
class TaskFilter:
    """Which TES tasks a list shows."""

    tenant_id: str | None = None
    workspace_id: str | None = None
    name_prefix: str | None = None
    state: StateFilter | None = None
    tags: tuple[tuple[str, str], ...] = ()  # (key, value); an empty value matches any value


class TesTaskRepository(Protocol):
    async def add(self, record: TaskRecord) -> None:
        """Insert, with its tags."""

    async def get(self, task_id: str) -> TaskRecord | None:
        """The task, or None."""

    async def set_imports(self, task_id: str, import_ids: builtins.list[str]) -> None:
        """The imports that fetch the task's http(s) inputs."""

    async def list(self, where: TaskFilter, page: PageRequest) -> Page[TaskRecord]:
        """Tasks matching `where`, newest first."""

    async def waiting(self) -> builtins.list[TaskRecord]:
        """Tasks whose execution is queued waiting for its inputs to be fetched."""


class ProvisioningRepository(Protocol):
    async def add(self, item: Provisioning) -> None:
        """Insert; raises Conflict for a second record of the same transfer and resource."""

    async def find(
        self, connector: str, transfer_process_id: str, resource_definition_id: str
    ) -> Provisioning | None:
        """The record of one provisioned resource."""

    async def for_transfer(self, connector: str, transfer_process_id: str) -> builtins.list[Provisioning]:
        """Every resource provisioned for a transfer."""

    async def list(self, page: PageRequest, state: str | None = None) -> Page[Provisioning]:
        """Every record, newest first, optionally in one state (for operators)."""

    async def for_workspace(self, workspace_id: str) -> Provisioning | None:
        """The provisioning that created a workspace, if any."""

    async def update(self, item: Provisioning) -> None:
        """Store the record's state and schedule."""

    async def due(self, now: datetime) -> builtins.list[Provisioning]:
        """Callbacks to send now, and deletions whose retention has ended."""

    async def next_due(self, excluding: Collection[str] = ()) -> datetime | None:
        """When the next callback or deletion is due, of the records not named in `excluding`."""


class TransferRegistrationRepository(Protocol):
    async def add(self, item: TransferRegistration) -> None:
        """Record which EDC transfer fills which workspace."""

    async def matching(
        self, transfer_process_id: str, contract_id: str | None
    ) -> builtins.list[TransferRegistration]:
        """Registrations not yet started that name this transfer process or contract."""

    async def for_workspace(self, workspace_id: str) -> builtins.list[TransferRegistration]:
        """A workspace's registrations, oldest first."""

    async def started(self, registration_id: str, import_id: str | None, at: datetime) -> bool:
        """Mark a registration as taken, by an import or (None) by a data flow; False when it
        was taken already."""


class DataFlowRepository(Protocol):
    async def add(self, flow: DataFlow) -> None:
        """Insert; raises Conflict when the control plane already has a flow of this process."""

    async def get(self, control_plane: str, flow_id: str, *, for_update: bool = False) -> DataFlow | None:
        """One control plane's flow (another's flows are not found)."""

    async def update(self, flow: DataFlow) -> None:
        """Store the flow's state and its notice schedule."""

    async def list(self, page: PageRequest, state: str | None = None) -> Page[DataFlow]:
        """Every flow of every control plane, by control plane and id, optionally in one state
        (for operators)."""

    async def for_import(self, import_id: str) -> DataFlow | None:
        """The consumer flow an import serves, if any."""

    async def for_workspace(self, workspace_id: str) -> builtins.list[DataFlow]:
        """The flows of a workspace, oldest first."""

    async def started_consumer_flows(self) -> builtins.list[DataFlow]:
        """Consumer flows whose import may be under way."""

    async def started_provider_flows(
        self, limit: int, after: tuple[datetime, str, str] | None = None
    ) -> builtins.list[DataFlow]:
        """STARTED provider flows, oldest first, after the position (created_at, control plane, id)."""

    async def ended_with_open_workspace(self, limit: int) -> builtins.list[DataFlow]:
        """Ended provider flows still to delete whose workspace is active (never closed)."""

    async def deletions_due(self, now: datetime, limit: int) -> builtins.list[DataFlow]:
        """Ended flows whose workspace's retention is over (`delete_after` passed)."""

    async def claim_deletion(self, flow: DataFlow, until: datetime) -> bool:
        """Move `delete_after` to `until` if it is still the flow's; False when another took it."""

    async def claim_notice(self, flow: DataFlow, until: datetime) -> bool:
        """Put the flow's due notice off until `until` if it is still as `flow` has it; False when
        another replica (or round) claimed or settled it first."""

    async def notices_due(self, now: datetime, limit: int = 100) -> builtins.list[DataFlow]:
        """Flows with a notice to send now."""

    async def next_notice(self) -> datetime | None:
        """When the next notice is due."""

    async def register_control_plane(
        self, name: str, controlplane_id: str, endpoint: str, at: datetime
    ) -> None:
        """Record (replace) where a control plane wants its callbacks."""

    async def control_plane_endpoint(self, name: str) -> tuple[str, str] | None:
        """(controlplane id, endpoint) that a control plane registered, if any."""

    async def unregister_control_plane(self, name: str, controlplane_id: str) -> bool:
        """Forget a registration; False when there was none under that id."""


class EventRepository(Protocol):
    async def add(self, event: Event) -> int:
        """Insert an event; returns its sequence number (the order deliveries keep)."""

    async def after(self, where: EventFilter, after_id: str, limit: int) -> builtins.list[Event]:
        """Events matching `where` with an id greater than `after_id`, in id order."""

    async def prune(self, before: datetime) -> int:
        """Delete events older than `before` that no pending delivery needs; returns how many."""


class SubscriptionRepository(Protocol):
    async def add(self, item: Subscription) -> None:
        """Insert a subscription."""

    async def get(self, subscription_id: str) -> Subscription | None:
        """The subscription with this id."""

    async def list(
        self, page: PageRequest, tenant_id: str | None, owner_workspace_id: str | None
    ) -> Page[Subscription]:
        """Subscriptions in creation order; None filters nothing."""

    async def candidates(self, event: Event) -> builtins.list[Subscription]:
        """Active subscriptions whose tenant, workspace and execution filters admit `event`."""

    async def delete(self, subscription_id: str) -> None:
        """Delete a subscription with its deliveries and their attempts."""


class DeliveryRepository(Protocol):
    async def add_many(self, rows: builtins.list[dict[str, Any]]) -> None:
        """Queue deliveries (id, subscription_id, event_id, event_seq, event_type, created_at)."""

    async def claim(
        self, now: datetime, lease_until: datetime, worker: str, limit: int
    ) -> builtins.list[ClaimedDelivery]:
        """Lease due deliveries, at most the oldest pending one per active subscription."""

    async def record(self, outcomes: builtins.list[Outcome], now: datetime) -> None:
        """Store the results of attempts (and disable subscriptions that answered 410)."""

    async def get(self, delivery_id: str) -> Delivery | None:
        """One delivery with its attempts."""

    async def list_for_subscription(self, subscription_id: str, page: PageRequest) -> Page[Delivery]:
        """A subscription's deliveries, oldest first, with their attempts."""

    async def requeue(self, delivery_id: str, now: datetime) -> bool:
        """Send a dead letter again; False when it is not dead."""

    async def release(self, worker: str) -> None:
        """Drop the claims `worker` still holds (it stops; its attempts did not finish)."""

    async def repair_heads(self) -> int:
        """Mark as its queue's head each pending delivery that is first but unmarked; the count."""

    async def pending_count(self) -> int:
        """Deliveries not yet succeeded or dead (the outbox depth)."""

    async def next_due(self) -> datetime | None:
        """When the earliest pending delivery is due."""

    async def prune(self, before: datetime) -> int:
        """Delete finished deliveries older than `before`; returns how many."""


class UnitOfWork(Protocol):
    """One transaction: every write through these repositories commits together or not at all."""

    @property
    def tenants(self) -> TenantRepository: ...

    @property
    def api_keys(self) -> ApiKeyRepository: ...

    @property
    def assets(self) -> AssetRepository: ...

    @property
    def workspaces(self) -> WorkspaceRepository: ...

    @property
    def tokens(self) -> TokenRepository: ...

    @property
    def imports(self) -> ImportRepository: ...

    @property
    def executions(self) -> ExecutionRepository: ...

    @property
    def provisionings(self) -> ProvisioningRepository: ...

    @property
    def transfers(self) -> TransferRegistrationRepository: ...

    @property
    def dataflows(self) -> DataFlowRepository: ...

    @property
    def events(self) -> EventRepository: ...

    @property
    def subscriptions(self) -> SubscriptionRepository: ...

    @property
    def deliveries(self) -> DeliveryRepository: ...

    @property
    def tes_tasks(self) -> TesTaskRepository: ...

    @property
    def stats(self) -> StatsRepository: ...


class Store(Protocol):
    def transaction(self) -> AbstractAsyncContextManager[UnitOfWork, bool | None]:
        """Open a read-write transaction; it commits when the block exits normally, else rolls back.

        Raises Unavailable when the database stays too busy to take the write (SQLite under
        heavy contention); nothing was written and the whole transaction may be retried.
        """

    def read(self) -> AbstractAsyncContextManager[UnitOfWork, bool | None]:
        """Open a read-only transaction (cheaper: it takes no write lock)."""

    async def ping(self) -> None:
        """Raise if the store cannot be reached."""

    async def prepare(self, migrate: bool) -> None:
        """At start-up: bring the schema up to date (`migrate`), or check that it is; raises naming
        both versions when it is not."""

    def local_file(self) -> Path | None:
        """The file that holds the data when it lives on this machine (SQLite), else None: a file
        that one service alone may use at a time."""

    async def close(self) -> None:
        """Release connections."""


# --- storage --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    etag: str  # opaque, quoted as HTTP wants it
    last_modified: datetime


@dataclass(frozen=True)
class PutLimits:
    """Checked while the bytes stream in; a breach aborts the upload and stores nothing."""

    max_bytes: int | None = None
    md5: bytes | None = None
    sha256: bytes | None = None


@dataclass(frozen=True)
class StoredObject:
    info: ObjectInfo
    sha256: str  # hex, computed from the bytes received
    replaced_size: int | None  # size of the object this one replaced, None if it is new


@dataclass
class ObjectStream:
    info: ObjectInfo
    byte_range: ByteRange | None
    chunks: AsyncIterator[bytes]

    async def aclose(self) -> None:
        closer = getattr(self.chunks, "aclose", None)
        if closer is not None:
            await closer()


@dataclass(frozen=True)
class TemporaryCredentials:
    access_key_id: str
    secret_access_key: str
    session_token: str
    expiration: datetime
    endpoint_url: str | None
    bucket: str
    region: str
    prefix: str = ""  # what the workspace's keys start with in a shared bucket; "": the whole bucket


class Storage(Protocol):
    """Object storage with one isolated location (bucket or directory) per workspace."""

    name: str

    async def verify(self) -> None:
        """At start-up: reach the storage and prove the set-up isolates workspaces; raises
        ConfigError naming the setting."""

    async def ping(self) -> None:
        """Raise if the storage cannot be reached with the service's credentials (readiness)."""

    def location_for(self, name: str) -> str:
        """Where a new workspace called `name` lives: a bucket or directory of that name, or
        `bucket/name` for a prefix of a shared bucket (S3's shared_buckets layout)."""

    async def create_location(self, location: str) -> None:
        """Create the location (and what its credentials need); idempotent."""

    async def delete_location(self, location: str) -> None:
        """Delete every object (and pending upload) and then the location; idempotent."""

    async def put(
        self, location: str, key: str, chunks: AsyncIterator[bytes], limits: PutLimits
    ) -> StoredObject:
        """Stream bytes into `key`, atomically: the object appears whole or not at all.

        Raises PayloadTooLarge or ChecksumMismatch (nothing stored) per `limits`.
        """

    async def open(self, location: str, key: str, byte_range: ByteRange | None) -> ObjectStream:
        """Stream an object, or a range of it; raises NotFound."""

    async def head(self, location: str, key: str) -> ObjectInfo | None:
        """The object's size, ETag and time, or None."""

    async def list(self, location: str, prefix: str, page: PageRequest) -> Page[ObjectInfo]:
        """Objects whose key starts with `prefix`, in key order, after `page.after[0]`."""

    async def delete(self, location: str, key: str) -> ObjectInfo | None:
        """Delete one object; returns what was deleted, or None if there was nothing."""

    async def usage(self, location: str) -> Usage:
        """Bytes and objects stored now, counted from the storage itself."""

    async def presign(self, location: str, key: str, method: str, expires_seconds: int) -> str | None:
        """A URL that allows `method` (GET or PUT) on one object until it expires; None if unsupported."""

    async def temporary_credentials(self, location: str, duration_seconds: int) -> TemporaryCredentials:
        """Credentials that open this location and nothing else; raises NotSupported."""

    async def job_access(self, location: str, lifetime_seconds: int) -> StorageAccess | None:
        """What a job's data sidecar gets to reach this location for `lifetime_seconds`:
        credentials that open it and nothing else (S3: temporary credentials for the bucket).
        None where the storage has none to give (the filesystem): the execution service then
        issues a workspace token for the objects API. Raises NotSupported where the storage
        could give them but is not set up to (S3 without storage.s3.sts)."""

    async def consumer_credentials(self, location: str, duration_seconds: int) -> TemporaryCredentials | None:
        """What a consumer's access document carries beside its workspace token: credentials
        for this location (S3); None where the objects API is the only way in (the filesystem).
        Raises NotSupported where the storage could give them but is not set up to."""

    def consumer_address(self, location: str) -> dict[str, Any] | None:
        """The EDC content data address of this location itself (the properties of an AmazonS3
        address for S3), for operators who point transfers at the storage
        (edc.content_address: amazon_s3); None where it has none (the filesystem), and EDC
        gets the access document instead."""

    def local_path(self, location: str, key: str) -> Path | None:
        """The object as a plain local file (so the API can use sendfile), or None for remote storage."""

    async def close(self) -> None:
        """Release connections."""


class TokenCodec(Protocol):
    """Signs and verifies workspace tokens (JWTs)."""

    def encode(self, token: WorkspaceToken) -> str:
        """The signed JWT for a token record."""

    def decode(self, jwt: str) -> TokenClaims:
        """Verify signature, issuer, audience and expiry; raises Unauthenticated."""

    def looks_like_token(self, credential: str) -> bool:
        """Cheap shape test so API keys are not run through JWT parsing."""


# --- remote sources -------------------------------------------------------------------------


class SourceError(Exception):
    """A remote source could not be read (refused, unreachable, too many redirects): worth another
    attempt. `status` is the HTTP status involved, if any."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class SourceInterrupted(SourceError):
    """The connection broke, stalled or closed early: the bytes received so far are good, so a
    fetch from the offset they reach may continue."""


@dataclass
class SourceResponse:
    """A remote source's answer to a fetch."""

    status: int  # the HTTP status, judged by the caller (the body is the resource's on 200 and 206)
    offset: int  # where `chunks` begins: the offset asked for when the source honoured it, else 0
    length: int | None  # bytes in `chunks`, when the source said
    resumable: bool  # the source says it serves fetches from an offset
    version: str | None  # opaque: names this version of the resource, for a later fetch from an offset
    chunks: AsyncIterator[bytes]  # raises SourceInterrupted when the body breaks off


class RemoteSource(Protocol):
    """Fetches from remote HTTP endpoints, refusing addresses the operator has not allowed."""

    async def check(self, url: str, field: str = "body.source_url") -> None:
        """Raise ForbiddenAddress naming the rule if `url` may not be fetched (scheme, address)."""

    def fetch(
        self, url: str, headers: dict[str, str], offset: int = 0, version: str | None = None
    ) -> AbstractAsyncContextManager[SourceResponse]:
        """GET `url` with `headers`, from byte `offset`; with `version`, from `offset` only while the
        resource is still that version (else whole). `SourceResponse.offset` says whether the source
        honoured the offset. The address actually connected to is checked again (DNS rebinding:
        ForbiddenAddress); a transport failure raises SourceError, or SourceInterrupted when the
        connection broke or stalled."""


# --- compute --------------------------------------------------------------------------------


@dataclass(frozen=True)
class StorageAccess:
    """How a job's data sidecar reaches the workspace: scoped credentials, never root ones.

    `kind` "api": the objects API at `url` with a workspace token; "s3": the bucket with
    temporary credentials. The variables are the ones the sidecar reads (`Env` in
    provider/sidecar/contract.py); these two constructors are the only places that set them.
    """

    kind: str
    secrets: dict[str, str]  # environment variables carrying the credentials
    settings: dict[str, str]  # non-secret: url and workspace id, or endpoint, bucket and region

    @classmethod
    def objects_api(cls, api_url: str, workspace_id: str, token: str) -> StorageAccess:
        """Through the objects API at `api_url`, with a token of this workspace."""
        return cls(
            StorageKind.API,
            secrets={Env.WORKSPACE_TOKEN: token},
            settings={Env.API_URL: api_url, Env.WORKSPACE_ID: workspace_id},
        )

    @classmethod
    def bucket(cls, credentials: TemporaryCredentials) -> StorageAccess:
        """Straight to the bucket, with temporary credentials that open it alone."""
        return cls(
            StorageKind.S3,
            secrets={
                Env.AWS_ACCESS_KEY_ID: credentials.access_key_id,
                Env.AWS_SECRET_ACCESS_KEY: credentials.secret_access_key,
                Env.AWS_SESSION_TOKEN: credentials.session_token,
            },
            settings={
                Env.S3_ENDPOINT: credentials.endpoint_url or "",
                Env.S3_BUCKET: credentials.bucket,
                Env.S3_PREFIX: credentials.prefix,
                Env.S3_REGION: credentials.region,
            },
        )


@dataclass(frozen=True)
class JobSpec:
    """Everything a compute backend needs to run one execution."""

    execution_id: str
    tenant_id: str
    asset: Asset
    inputs: dict[str, str]
    env: dict[str, str]
    access: StorageAccess
    version: int
    attempt: int = 1
    program: Program | None = None  # the caller's own steps and paths (a TES task)


@dataclass(frozen=True)
class ComputeEvent:
    """What a backend observed about a job; the execution service turns it into a transition."""

    execution_id: str
    state: State
    exit_code: int | None = None
    reason: str | None = None
    message: str | None = None
    outputs: tuple[OutputFile, ...] = ()
    # COMPLETE from a backend that cannot carry the outputs itself: the sidecar's manifest in the
    # workspace (executions/<id>/outputs/manifest.json) lists them.
    # The attempt the job ran for; None: not known (the service then judges by state alone).
    attempt: int | None = None
    manifest_in_storage: bool = False
    steps: tuple[StepLog, ...] = ()  # how each step of a program ended, as far as it ran


class Reported(enum.Enum):
    """What the execution service made of a ComputeEvent."""

    RECORDED = "recorded"  # a transition or a new detail, or nothing new
    # Behind the state the execution has reached (an older view of the job, a replaced pod): the
    # execution keeps its state; the backend need not report it again.
    STALE = "stale"


EventSink = Callable[[ComputeEvent], Awaitable[Reported | None]]
# Compares the store with what the backend runs (see ExecutionService.reconcile); backends call it
# when they become responsible for observing jobs, and the Kubernetes backend periodically after.
Reconciler = Callable[[float], Awaitable[None]]


class Compute(Protocol):
    """Runs jobs: stage-in, the asset's worker unchanged, stage-out; and reports what happens."""

    name: str
    # A program's step that fails and ignores errors lets the next run (TES ignore_error).
    step_errors_ignorable: bool

    async def start(self, sink: EventSink, reconcile: Reconciler) -> None:
        """Begin observing; every event goes to `sink`, in order per execution.

        `reconcile(queued_grace_seconds)` is called whenever this replica becomes the one that
        observes jobs (at once for a single-replica backend).
        """

    async def ping(self) -> None:
        """Raise if the backend cannot run jobs now (readiness): its directory, or its cluster."""

    async def submit(self, job: JobSpec) -> None:
        """Start a job (it may wait for capacity, still QUEUED)."""

    async def cancel(self, execution_id: str) -> None:
        """Stop a job; the backend reports CANCELED (or a final state it reached first)."""

    def logs(self, execution_id: str, tail: int | None, follow: bool) -> AsyncIterator[bytes]:
        """The worker's output, the last `tail` lines; with `follow`, until the job ends."""

    async def known(self) -> set[str]:
        """Execution ids this backend is running or holding (for reconciliation)."""

    async def release(self, execution_id: str) -> None:
        """Remove what is left of a finished job (working directory, pod); its logs were saved."""

    async def withdraw(self, execution_id: str, attempt: int) -> None:
        """Stop and remove the job of a queued execution that is put on hold, whatever it reached
        meanwhile, if it is of an attempt before `attempt` (a later one's stays: a resume may have
        submitted it); what it still reports carries its attempt, which the hold has ended."""

    async def stop(self) -> None:
        """Stop observing (jobs of remote backends keep running)."""


class JsonPoster(Protocol):
    """Sends EDC provisioning callbacks, each connector's only where the operator allows."""

    async def check(self, connector: str, url: str, field: str) -> None:
        """Raise ForbiddenAddress naming the setting if `connector`'s callbacks may not go to `url`."""

    async def post_json(
        self, connector: str, url: str, headers: dict[str, str], body: dict[str, Any], method: str = "POST"
    ) -> int:
        """POST (or `method`) a JSON body; the HTTP status, ForbiddenAddress when the address
        connected to is not allowed, or another exception when the receiver is unreachable."""


# --- notifications ------------------------------------------------------------------------------


@dataclass(frozen=True)
class WebhookResponse:
    status: int | None  # None: no HTTP answer (refused, reset, time-out, forbidden address)
    error: str | None
    seconds: float


class WebhookSender(Protocol):
    """Sends signed webhook requests, refusing addresses the operator has not allowed."""

    async def check(self, url: str, field: str) -> None:
        """Raise ForbiddenAddress naming the rule if `url` may not receive webhooks."""

    async def send(self, url: str, headers: dict[str, str], body: bytes) -> WebhookResponse:
        """POST once, without following redirects; the connected address is checked again."""

    async def close(self) -> None:
        """Release connections."""


class DeliveryObserver(Protocol):
    """Where the delivery worker reports what it does (metrics)."""

    def delivered(self, outcome: str, seconds_since_event: float | None) -> None:
        """One attempt ended: succeeded, failed, dead or gone (410)."""

    def outbox_depth(self, pending: int) -> None:
        """Deliveries waiting in the outbox now."""
