"""Workspaces, their objects, tokens and temporary storage credentials."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path

from provider.domain.errors import (
    Conflict,
    FieldProblem,
    Forbidden,
    InvalidInput,
    NotFound,
    NotSupported,
    PayloadTooLarge,
)
from provider.domain.ids import new_id
from provider.domain.pagination import Page, PageRequest
from provider.domain.ranges import ByteRange
from provider.domain.tenants import CredentialKind, Principal
from provider.domain.tokens import WorkspaceToken
from provider.domain.workspaces import (
    JOB_SIDECAR,
    Quota,
    Scope,
    Usage,
    Workspace,
    WorkspaceState,
    check_key,
    check_prefix,
)
from provider.services.notifications import EventLog
from provider.services.ports import (
    Clock,
    ObjectInfo,
    ObjectStream,
    PutLimits,
    Storage,
    Store,
    StoredObject,
    TemporaryCredentials,
    TokenCodec,
    UnitOfWork,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorkspacePolicy:
    """Operator settings that shape new workspaces and their tokens."""

    quota: Quota
    location_prefix: str  # bucket-name prefix (s3) or directory prefix (fs)
    default_token_ttl: int
    max_token_ttl: int
    credentials_duration: int
    presign_seconds: int


@dataclass(frozen=True)
class IssuedToken:
    record: WorkspaceToken
    token: str


class WorkspaceService:
    def __init__(
        self,
        store: Store,
        storage: Storage,
        codec: TokenCodec,
        clock: Clock,
        policy: WorkspacePolicy,
        on_tokens_revoked: Callable[[list[str]], None] = lambda ids: None,
        events: EventLog | None = None,
    ) -> None:
        self.store = store
        self.events = events
        self.storage = storage
        self.codec = codec
        self.clock = clock
        self.policy = policy
        self.on_tokens_revoked = on_tokens_revoked
        # Called with a workspace id before its data is removed (imports and executions stop).
        self.before_delete: list[Callable[[str], object]] = []

    # --- workspaces ---------------------------------------------------------------------------

    async def create(
        self,
        tenant_id: str,
        name: str,
        labels: dict[str, str],
        allowed_assets: frozenset[str] | None = None,
        with_it: Callable[[UnitOfWork, Workspace], Awaitable[None]] | None = None,
    ) -> Workspace:
        """A new workspace; `allowed_assets` limits what it may run (provisioning sets it), and
        `with_it` writes what belongs to it (a provisioning record) in the same transaction: one
        write instead of two, and never one without the other."""
        now = self.clock()
        workspace_id = new_id("ws")
        workspace = Workspace(
            id=workspace_id,
            tenant_id=tenant_id,
            name=name,
            labels=labels,
            location=self.storage.location_for(self.policy.location_prefix + workspace_id.replace("_", "-")),
            quota=self.policy.quota,
            usage=Usage(),
            state=WorkspaceState.ACTIVE,
            created_at=now,
            updated_at=now,
            usage_checked_at=now,
            allowed_assets=allowed_assets,
        )
        # Storage first: a row is only written for a location that exists.
        await self.storage.create_location(workspace.location)
        try:
            async with self.store.transaction() as uow:
                if await uow.tenants.get(tenant_id) is None:
                    raise NotFound("tenant", tenant_id)
                await uow.workspaces.add(workspace)
                if with_it is not None:
                    await with_it(uow, workspace)
                if self.events is not None:
                    await self.events.workspace_changed(uow, workspace, self.storage.name)
        except BaseException:
            await self.storage.delete_location(workspace.location)
            raise
        if self.events is not None:
            self.events.committed()
        log.info("workspace created", extra={"workspace_id": workspace.id, "tenant_id": tenant_id})
        return workspace

    async def get(self, principal: Principal, workspace_id: str) -> Workspace:
        async with self.store.read() as uow:
            workspace = await uow.workspaces.get(workspace_id)
        return self._visible(principal, workspace, workspace_id)

    async def list(self, principal: Principal, page: PageRequest) -> Page[Workspace]:
        if principal.kind is CredentialKind.WORKSPACE_TOKEN:
            assert principal.workspace_id is not None
            return Page([await self.get(principal, principal.workspace_id)], None)
        async with self.store.read() as uow:
            return await uow.workspaces.list(page, None if principal.is_admin else principal.tenant_id)

    async def refresh_usage(self, principal: Principal, workspace_id: str) -> Workspace:
        """Count usage from the storage itself (it includes direct S3 writes)."""
        workspace = await self.get(principal, workspace_id)
        usage = await self.storage.usage(workspace.location)
        async with self.store.transaction() as uow:
            current = await uow.workspaces.get(workspace_id, for_update=True)
            assert current is not None
            now = self.clock()
            updated = replace(current.with_usage(usage, now), usage_checked_at=now)
            await uow.workspaces.update(updated)
        return updated

    async def delete(self, principal: Principal, workspace_id: str) -> None:
        """Revoke every token and credential path, then remove the data."""
        workspace = await self.get(principal, workspace_id)
        if principal.kind is CredentialKind.WORKSPACE_TOKEN:
            raise Forbidden("workspace tokens cannot delete their workspace")
        async with self.store.transaction() as uow:
            current = await uow.workspaces.get(workspace.id, for_update=True)
            assert current is not None
            if current.open:
                await uow.workspaces.update(
                    replace(current, state=WorkspaceState.DELETING, updated_at=self.clock())
                )
            revoked = await uow.tokens.revoke_workspace(workspace.id, self.clock())
        self.on_tokens_revoked(revoked)
        await self.finish_deletion(workspace.id)

    async def finish_deletion(self, workspace_id: str) -> None:
        """Second half of a deletion; also run at start-up for deletions a crash interrupted."""
        for hook in self.before_delete:
            result = hook(workspace_id)
            if hasattr(result, "__await__"):
                await result
        async with self.store.read() as uow:
            workspace = await uow.workspaces.get(workspace_id)
        if workspace is None or workspace.state is WorkspaceState.DELETED:
            return
        await self.storage.delete_location(workspace.location)
        async with self.store.transaction() as uow:
            now = self.clock()
            deleted = replace(
                workspace, state=WorkspaceState.DELETED, usage=Usage(), updated_at=now, deleted_at=now
            )
            await uow.workspaces.update(deleted)
            if self.events is not None:
                await self.events.workspace_changed(uow, deleted, self.storage.name)
        if self.events is not None:
            self.events.committed()
        log.info("workspace deleted", extra={"workspace_id": workspace_id})

    def _visible(self, principal: Principal, workspace: Workspace | None, workspace_id: str) -> Workspace:
        """The workspace if the caller may see it; otherwise NotFound, so existence does not leak."""
        if (
            workspace is None
            or workspace.state is WorkspaceState.DELETED
            or not principal.may_see_tenant(workspace.tenant_id)
            or (principal.workspace_id is not None and principal.workspace_id != workspace.id)
        ):
            raise NotFound("workspace", workspace_id)
        return workspace

    async def _active(self, principal: Principal, workspace_id: str) -> Workspace:
        workspace = await self.get(principal, workspace_id)
        if workspace.state is WorkspaceState.SUSPENDED and not principal.sidecar:
            raise Conflict(f"workspace {workspace_id} is suspended: its data flow was suspended")
        if not workspace.open:
            raise Conflict(f"workspace {workspace_id} is being deleted")
        return workspace

    async def suspend(self, workspace_id: str) -> None:
        """Close an active workspace to everyone but running jobs' sidecars (its data flow was
        suspended): every other token is revoked, and API keys meet a 409 until it is resumed."""
        await self._set_state(workspace_id, WorkspaceState.ACTIVE, WorkspaceState.SUSPENDED)
        await self.revoke_access_tokens(workspace_id)

    async def unsuspend(self, workspace_id: str) -> None:
        await self._set_state(workspace_id, WorkspaceState.SUSPENDED, WorkspaceState.ACTIVE)

    async def _set_state(self, workspace_id: str, before: WorkspaceState, after: WorkspaceState) -> None:
        async with self.store.transaction() as uow:
            current = await uow.workspaces.get(workspace_id, for_update=True)
            if current is None or current.state is not before:
                return  # already there, or being deleted: deletion wins
            await uow.workspaces.update(replace(current, state=after, updated_at=self.clock()))

    # --- objects ------------------------------------------------------------------------------

    async def put_object(
        self,
        principal: Principal,
        workspace_id: str,
        key: str,
        chunks: AsyncIterator[bytes],
        *,
        declared_size: int | None = None,
        md5: bytes | None = None,
        sha256: bytes | None = None,
    ) -> StoredObject:
        check_key(key)
        workspace = await self._active(principal, workspace_id)
        return await self._put(workspace, key, chunks, declared_size, md5, sha256)

    async def put_import(
        self,
        workspace_id: str,
        key: str,
        chunks: AsyncIterator[bytes],
        expected_size: int | None,
        sha256: bytes | None,
    ) -> StoredObject:
        """Store an import's bytes (no caller: the import was authorized when it was created)."""
        async with self.store.read() as uow:
            workspace = await uow.workspaces.get(workspace_id)
        if workspace is None or not workspace.active:
            raise NotFound("workspace", workspace_id)
        return await self._put(workspace, key, chunks, None, None, sha256, expected_size)

    async def _put(
        self,
        workspace: Workspace,
        key: str,
        chunks: AsyncIterator[bytes],
        declared_size: int | None,
        md5: bytes | None,
        sha256: bytes | None,
        size_limit: int | None = None,
    ) -> StoredObject:
        existing = await self.storage.head(workspace.location, key)
        if existing is None and workspace.usage.objects >= workspace.quota.max_objects:
            raise PayloadTooLarge(f"the workspace holds its quota of {workspace.quota.max_objects} objects")
        room = workspace.room_for(existing.size if existing else None)
        if declared_size is not None and declared_size > room:
            raise PayloadTooLarge(
                f"{declared_size} bytes exceed the workspace's remaining quota of {room} bytes "
                f"(quota {workspace.quota.max_bytes} bytes)"
            )
        limit = room if size_limit is None else min(room, size_limit)
        stored = await self.storage.put(workspace.location, key, chunks, PutLimits(limit, md5, sha256))
        async with self.store.transaction() as uow:
            current = await uow.workspaces.get(workspace.id, for_update=True)
            assert current is not None
            usage = current.usage.after_put(stored.info.size, stored.replaced_size)
            over = usage.bytes > current.quota.max_bytes and stored.replaced_size is None
            if not over:
                await uow.workspaces.update(current.with_usage(usage, self.clock()))
        if over:  # a concurrent upload took the room first
            await self.storage.delete(workspace.location, key)
            raise PayloadTooLarge(f"the workspace's quota of {current.quota.max_bytes} bytes is used up")
        return stored

    async def open_object(
        self, principal: Principal, workspace_id: str, key: str, byte_range: ByteRange | None
    ) -> ObjectStream:
        check_key(key)
        workspace = await self._active(principal, workspace_id)
        return await self.storage.open(workspace.location, key, byte_range)

    async def head_object(self, principal: Principal, workspace_id: str, key: str) -> ObjectInfo:
        check_key(key)
        workspace = await self._active(principal, workspace_id)
        info = await self.storage.head(workspace.location, key)
        if info is None:
            raise NotFound("object", key)
        return info

    async def local_object_path(self, principal: Principal, workspace_id: str, key: str) -> Path | None:
        """The object as a local file when the backend keeps it so (fs), for zero-copy sending."""
        check_key(key)
        workspace = await self._active(principal, workspace_id)
        return self.storage.local_path(workspace.location, key)

    async def list_objects(
        self, principal: Principal, workspace_id: str, prefix: str, page: PageRequest
    ) -> Page[ObjectInfo]:
        check_prefix(prefix)
        workspace = await self._active(principal, workspace_id)
        return await self.storage.list(workspace.location, prefix, page)

    async def delete_object(self, principal: Principal, workspace_id: str, key: str) -> None:
        check_key(key)
        workspace = await self._active(principal, workspace_id)
        deleted = await self.storage.delete(workspace.location, key)
        if deleted is None:
            raise NotFound("object", key)
        async with self.store.transaction() as uow:
            current = await uow.workspaces.get(workspace.id, for_update=True)
            assert current is not None
            await uow.workspaces.update(
                current.with_usage(current.usage.after_delete(deleted.size), self.clock())
            )

    async def link(
        self, principal: Principal, workspace_id: str, key: str, method: str, expires_seconds: int | None
    ) -> tuple[str, datetime]:
        """A presigned URL for one object, usable without any credential until it expires."""
        check_key(key, "body.key")
        is_token = principal.kind is CredentialKind.WORKSPACE_TOKEN
        if method == "PUT" and is_token and Scope.OBJECTS_WRITE not in principal.scopes:
            raise Forbidden("upload links need the objects:write scope")
        workspace = await self._active(principal, workspace_id)
        seconds = min(expires_seconds or self.policy.presign_seconds, self.policy.presign_seconds)
        if method == "GET" and await self.storage.head(workspace.location, key) is None:
            raise NotFound("object", key)
        url = await self.storage.presign(workspace.location, key, method, seconds)
        if url is None:
            raise NotSupported("presigned links need the s3 storage backend; use a workspace token")
        return url, self.clock() + timedelta(seconds=seconds)

    # --- tokens and credentials ---------------------------------------------------------------

    async def issue_token(
        self,
        principal: Principal,
        workspace_id: str,
        scopes: set[Scope],
        ttl_seconds: int | None,
        name: str,
    ) -> IssuedToken:
        if principal.kind is CredentialKind.WORKSPACE_TOKEN:
            raise Forbidden("workspace tokens cannot issue tokens; use an API key")
        if name == JOB_SIDECAR:  # the service's own: such tokens outlive a suspended data flow
            raise InvalidInput(
                "this token name is reserved",
                [FieldProblem("body.name", f"{JOB_SIDECAR!r} names the tokens of jobs' sidecars")],
            )
        workspace = await self._active(principal, workspace_id)
        ttl = ttl_seconds or self.policy.default_token_ttl
        if ttl > self.policy.max_token_ttl:
            raise InvalidInput(
                "ttl_seconds is too long",
                [FieldProblem("body.ttl_seconds", f"must be at most {self.policy.max_token_ttl}")],
            )
        return await self.issue_system_token(workspace.id, scopes, ttl, name)

    async def issue_job_token(self, workspace_id: str, ttl_seconds: int) -> IssuedToken:
        """A token for one job's data sidecar: this workspace's objects only, revoked when it ends."""
        return await self.issue_system_token(
            workspace_id, {Scope.OBJECTS_READ, Scope.OBJECTS_WRITE}, ttl_seconds, JOB_SIDECAR
        )

    async def issue_system_token(
        self, workspace_id: str, scopes: set[Scope], ttl_seconds: int, name: str
    ) -> IssuedToken:
        """A token the service issues on its own behalf (jobs, EDC access documents)."""
        workspace = await self.get_system(workspace_id)
        now = self.clock()
        record = WorkspaceToken(
            id=new_id("tok"),
            workspace_id=workspace.id,
            tenant_id=workspace.tenant_id,
            scopes=frozenset(scopes),
            name=name,
            created_at=now,
            expires_at=now + timedelta(seconds=ttl_seconds),
        )
        async with self.store.transaction() as uow:
            await uow.tokens.add(record)
        return IssuedToken(record, self.codec.encode(record))

    async def get_system(self, workspace_id: str) -> Workspace:
        """An active workspace, without a caller (for the service's own work)."""
        async with self.store.read() as uow:
            workspace = await uow.workspaces.get(workspace_id)
        if workspace is None or not workspace.active:
            raise NotFound("workspace", workspace_id)
        return workspace

    async def revoke_all_tokens(self, workspace_id: str) -> None:
        async with self.store.transaction() as uow:
            revoked = await uow.tokens.revoke_workspace(workspace_id, self.clock())
        self.on_tokens_revoked(revoked)

    async def revoke_access_tokens(self, workspace_id: str) -> None:
        """Revoke every token a consumer may hold for the workspace, but not those of running
        jobs' sidecars: a suspended data flow lets the jobs under way finish."""
        async with self.store.transaction() as uow:
            revoked = await uow.tokens.revoke_workspace(workspace_id, self.clock(), frozenset({JOB_SIDECAR}))
        self.on_tokens_revoked(revoked)

    async def delete_system(self, workspace_id: str) -> None:
        """Delete a workspace on the service's own behalf (EDC deprovisioning); idempotent."""
        async with self.store.transaction() as uow:
            current = await uow.workspaces.get(workspace_id, for_update=True)
            if current is None or current.state is WorkspaceState.DELETED:
                return
            if current.open:
                await uow.workspaces.update(
                    replace(current, state=WorkspaceState.DELETING, updated_at=self.clock())
                )
            revoked = await uow.tokens.revoke_workspace(workspace_id, self.clock())
        self.on_tokens_revoked(revoked)
        await self.finish_deletion(workspace_id)

    async def revoke_token_id(self, token_id: str) -> None:
        async with self.store.transaction() as uow:
            await uow.tokens.revoke(token_id, self.clock())
        self.on_tokens_revoked([token_id])

    async def list_tokens(
        self, principal: Principal, workspace_id: str, page: PageRequest
    ) -> Page[WorkspaceToken]:
        workspace = await self.get(principal, workspace_id)
        async with self.store.read() as uow:
            return await uow.tokens.list_for_workspace(workspace.id, page)

    async def revoke_token(self, principal: Principal, workspace_id: str, token_id: str) -> None:
        workspace = await self.get(principal, workspace_id)
        async with self.store.transaction() as uow:
            token = await uow.tokens.get(token_id)
            if token is None or token.workspace_id != workspace.id:
                raise NotFound("token", token_id)
            await uow.tokens.revoke(token_id, self.clock())
        self.on_tokens_revoked([token_id])

    async def credentials(self, principal: Principal, workspace_id: str) -> TemporaryCredentials:
        if principal.kind is CredentialKind.WORKSPACE_TOKEN and Scope.OBJECTS_WRITE not in principal.scopes:
            raise Forbidden("temporary credentials need the objects:write scope")
        workspace = await self._active(principal, workspace_id)
        return await self.storage.temporary_credentials(workspace.location, self.policy.credentials_duration)

    async def resume(self) -> None:
        """Finish deletions that a stop interrupted."""
        async with self.store.read() as uow:
            pending = await uow.workspaces.in_state(WorkspaceState.DELETING)
        for workspace in pending:
            await self.finish_deletion(workspace.id)
