"""The GA4GH TES 1.1 API's use cases: a task is one execution of a catalog asset, with a program.

Creating a task checks it against the catalog's rules (provider/domain/tes.py and docs/tes.md),
resolves its URLs to keys of one workspace, writes inline inputs there, starts the execution
(with the task's document in the same transaction) and, for http(s) inputs, imports them first:
the execution stays QUEUED (AwaitingInputs) until every import has succeeded, and ends
SYSTEM_ERROR (InputFetch) when one fails. Everything else is the execution service's.
"""

from __future__ import annotations

import contextlib
import logging
import math
import re
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import PurePosixPath
from typing import Any

from provider.aio import Tasks
from provider.domain.assets import Asset, grant_problem
from provider.domain.errors import (
    AssetNotGranted,
    BadRequest,
    Conflict,
    FieldProblem,
    Forbidden,
    ForbiddenAddress,
    InvalidKey,
    NotFound,
)
from provider.domain.executions import Execution, Reason, State
from provider.domain.ids import new_id
from provider.domain.imports import Import, ImportState
from provider.domain.pagination import Page, PageRequest
from provider.domain.programs import Collect, Limits, Placement, Program, Step
from provider.domain.tenants import CredentialKind, Principal
from provider.domain.tes import (
    BACKEND_PARAMETERS,
    TES_VERSION,
    TaskRecord,
    TesTaskDocument,
    UrlProblem,
    asset_reference,
    inline_key,
    parse_url,
    render,
    task_of_key,
)
from provider.domain.workspaces import Scope, Workspace, check_key
from provider.services.assets import AssetService
from provider.services.executions import ExecutionRequest, ExecutionService
from provider.services.imports import ImportService
from provider.services.ports import Clock, ComputeEvent, Storage, Store, TaskFilter
from provider.services.workspaces import WorkspaceService

log = logging.getLogger(__name__)
WILDCARD = re.compile(r"[*?\[]")
_QUANTITY = re.compile(r"^([0-9]+(?:\.[0-9]+)?)([eE][0-9]+|m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$")
_FACTORS = {
    None: 1.0, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18,
    "Ki": 2.0**10, "Mi": 2.0**20, "Gi": 2.0**30, "Ti": 2.0**40, "Pi": 2.0**50, "Ei": 2.0**60,
}  # fmt: skip


class TaskRefused(BadRequest):
    """A task that breaks one of this service's rules; the problems name the rule."""

    slug = "task-refused"


def quantity(value: str) -> float:
    """A Kubernetes quantity (500m, 2, 512Mi, 1e3) as a number."""
    match = _QUANTITY.fullmatch(value)
    if match is None:
        raise ValueError(f"not a quantity: {value!r}")
    number, suffix = float(match[1]), match[2]
    if suffix and suffix[0] in "eE":
        return number * 10.0 ** int(suffix[1:])
    return number * _FACTORS[suffix]


class TesService:
    def __init__(
        self,
        store: Store,
        storage: Storage,
        assets: AssetService,
        workspaces: WorkspaceService,
        executions: ExecutionService,
        imports: ImportService,
        clock: Clock,
        *,
        step_errors_ignorable: bool,
        organization: tuple[str, str],
        service_id: str,
        version: str,
    ) -> None:
        self.store = store
        self.storage = storage
        self.assets = assets
        self.workspaces = workspaces
        self.executions = executions
        self.imports = imports
        self.clock = clock
        self.step_errors_ignorable = step_errors_ignorable
        self.organization = organization
        self.service_id = service_id
        self.version = version
        self._tasks = Tasks(log)  # task id -> its check after an import ended

    # --- service-info -------------------------------------------------------------------------

    def service_info(self, public_url: str) -> dict[str, Any]:
        """What this service offers, truthfully: the URL schemes its tasks' files may use."""
        storage = [f"{WORKSPACE_URL}<workspace id>/<key>"]
        if self.storage.name == "s3":
            storage.append("s3://<the workspace's bucket>/<its prefix><key>")
        storage += ["http://<host>/<path> (inputs)", "https://<host>/<path> (inputs)"]
        name, url = self.organization
        return {
            "id": self.service_id,
            "name": "provider: compute-to-data",
            "type": {"group": "org.ga4gh", "artifact": "tes", "version": TES_VERSION},
            "description": (
                "Runs GA4GH TES tasks where the data is: each task is an execution of a catalog "
                "asset in one workspace, under the catalog's rules."
            ),
            "organization": {"name": name, "url": url},
            "documentationUrl": f"{public_url}/docs",
            "version": self.version,
            "storage": storage,
            "tesResources_backend_parameters": list(BACKEND_PARAMETERS),
        }

    # --- create -------------------------------------------------------------------------------

    async def create(self, principal: Principal, document: TesTaskDocument) -> str:
        parameters, warnings = self._parameters(document)
        workspace = await self._workspace(principal, document, parameters)
        asset = await self._asset(principal, document, workspace, parameters)
        await self._check_granted(asset, workspace)
        self._check_scopes(principal, document)
        self._check_program(asset, document)
        self._check_layout(document)
        bucket, prefix = _s3_place(self.storage.name, workspace.location)
        task_id = _new_task_id()
        problems: list[FieldProblem] = []
        placements: list[Placement] = []
        input_keys: list[str] = []
        contents: dict[int, str] = {}
        remotes: dict[int, str] = {}
        for index, item in enumerate(document.inputs):
            field = f"body.inputs[{index}]"
            if item.content is not None:
                key: str | None = inline_key(task_id, index)
                contents[index] = item.content
            elif item.url is None:
                problems.append(FieldProblem(f"{field}.url", "an input needs a url or its content"))
                continue
            else:
                target = self._resolve(item.url, f"{field}.url", workspace, bucket, prefix, problems)
                if target is None:
                    continue
                key, remote = target
                if remote is not None:
                    if item.type == "DIRECTORY":
                        problems.append(FieldProblem(f"{field}.type", "an http(s) input is one file"))
                        continue
                    key = inline_key(task_id, index)  # where the import puts it
                    remotes[index] = remote
                elif key is None or not await self._exists(workspace, key, item.type == "DIRECTORY"):
                    what = "no objects under" if item.type == "DIRECTORY" else "no object"
                    problems.append(
                        FieldProblem(f"{field}.url", f"{what} {key!r} in workspace {workspace.id}")
                    )
                    continue
            assert key is not None
            input_keys.append(key)
            placements.append(Placement(item.path, key, item.type == "DIRECTORY"))
        collects: list[Collect] = []
        output_keys: list[str] = []
        for index, output in enumerate(document.outputs):
            field = f"body.outputs[{index}]"
            if WILDCARD.search(output.path):
                problems.append(
                    FieldProblem(
                        f"{field}.path",
                        "wildcard outputs are not supported here; name each file or a directory",
                    )
                )
                continue
            if output.type == "FILE" and len(output.path.strip("/").split("/")) < 2:
                problems.append(
                    FieldProblem(f"{field}.path", "an output file must lie in a directory below /")
                )
                continue
            target = self._resolve(output.url, f"{field}.url", workspace, bucket, prefix, problems)
            if target is None:
                continue
            key, remote = target
            if output.type == "FILE" and key is not None and key.endswith("/"):
                problems.append(
                    FieldProblem(f"{field}.url", "a FILE output names an object, not a prefix ending in '/'")
                )
                continue
            if remote is not None or key is None:
                problems.append(
                    FieldProblem(f"{field}.url", "outputs go to the workspace: use workspace:// or s3://")
                )
                continue
            output_keys.append(key)
            collects.append(Collect(output.path, key, output.type == "DIRECTORY"))
        limits = self._limits(asset, document, problems)
        if problems:
            raise TaskRefused("the task does not fit this service's rules", problems)
        for index, remote in remotes.items():  # the SSRF guard, before anything is started
            try:
                await self.imports.source.check(remote)
            except ForbiddenAddress as exc:
                raise ForbiddenAddress(
                    exc.detail, [FieldProblem(f"body.inputs[{index}].url", exc.detail)]
                ) from None

        steps = tuple(
            Step(
                tuple(e.command),
                e.workdir,
                e.stdin,
                e.stdout,
                e.stderr,
                dict(e.env),
                e.ignore_error,
            )
            for e in document.executors
        )
        program = Program(steps, tuple(placements), tuple(collects), tuple(document.volumes), limits)
        for index, content in contents.items():
            await self._write(principal, workspace, inline_key(task_id, index), content.encode())
        record = TaskRecord(
            id=task_id,
            tenant_id=workspace.tenant_id,
            name=document.name,
            tags=dict(document.tags),
            document=document.stored(),
            created_at=self.clock(),
            input_keys=tuple(input_keys),
            output_keys=tuple(output_keys),
            warnings=tuple(warnings),
        )

        async def write(uow: Any, execution: Execution) -> None:
            await uow.tes_tasks.add(replace(record, created_at=execution.created_at))

        request = ExecutionRequest(
            asset.id,
            asset.version,
            workspace.id,
            {},
            {},
            {},
            program,
        )
        await self.executions.start(
            principal, request, None, execution_id=task_id, also=write, awaiting_inputs=bool(remotes)
        )
        if remotes:
            await self._fetch(principal, task_id, workspace, remotes)
        return task_id

    def _parameters(self, document: TesTaskDocument) -> tuple[dict[str, str], list[str]]:
        """The backend parameters this service understands; warnings for what it ignores."""
        resources = document.resources
        given = {
            k.lower(): v for k, v in ((resources.backend_parameters if resources else None) or {}).items()
        }
        unknown = sorted(k for k in given if k not in BACKEND_PARAMETERS)
        if unknown and resources is not None and resources.backend_parameters_strict:
            raise TaskRefused(
                "the task asks for backend parameters this service does not support",
                [
                    FieldProblem(
                        f"body.resources.backend_parameters.{k}",
                        f"not supported (supported: {', '.join(BACKEND_PARAMETERS)})",
                    )
                    for k in unknown
                ],
            )
        warnings = [f"backend parameter {k!r} is not supported and was ignored" for k in unknown]
        if resources is not None and resources.preemptible:
            warnings.append("preemptible is a hint this service does not act on")
        if resources is not None and resources.zones:
            warnings.append("zones are not supported and were ignored")
        for index, item in enumerate(document.inputs):
            if item.streamable:
                warnings.append(f"input {index} is staged whole: streaming is not supported")
        return {k: v for k, v in given.items() if k in BACKEND_PARAMETERS}, warnings

    async def _workspace(
        self, principal: Principal, document: TesTaskDocument, parameters: dict[str, str]
    ) -> Workspace:
        """The one workspace the task runs in: the token's, the parameter's, or its URLs'."""
        named = set()
        locations = set()
        for item in [*document.inputs, *document.outputs]:
            url = getattr(item, "url", None)
            if url and url.lower().startswith("workspace://"):
                try:
                    target = parse_url(url, bucket=None, prefix="")
                except UrlProblem:
                    continue
                named.add(target.workspace_id)
            elif url and url.lower().startswith("s3://") and self.storage.name == "s3":
                # The location its bucket names: the bucket, or bucket/<first segment> when shared.
                bucket, _, key = url[len("s3://") :].partition("/")
                locations.update({bucket, f"{bucket}/{key.split('/', 1)[0]}"})
        if locations:
            async with self.store.read() as uow:
                found = await uow.workspaces.at_location(sorted(locations))
            named.update(w.id for w in found if principal.may_see_tenant(w.tenant_id))
        chosen = principal.workspace_id or parameters.get("workspace")
        if chosen is None:
            if len(named) != 1:
                raise TaskRefused(
                    "name the task's workspace",
                    [
                        FieldProblem(
                            "body.resources.backend_parameters.workspace",
                            "a task runs in one workspace: call with that workspace's token, set "
                            "backend_parameters.workspace, or use workspace:// or s3:// URLs of one "
                            "workspace",
                        )
                    ],
                )
            chosen = named.pop()
        if principal.workspace_id and parameters.get("workspace") not in (None, principal.workspace_id):
            raise TaskRefused(
                "a workspace token runs tasks in its own workspace",
                [
                    FieldProblem(
                        "body.resources.backend_parameters.workspace",
                        f"must be {principal.workspace_id} or absent",
                    )
                ],
            )
        assert chosen is not None
        return await self.workspaces.get(principal, chosen)

    async def _asset(
        self,
        principal: Principal,
        document: TesTaskDocument,
        workspace: Workspace,
        parameters: dict[str, str],
    ) -> Asset:
        """The catalog asset every executor's image names (by its image, or asset:<id>)."""
        chosen: Asset | None = None
        for index, executor in enumerate(document.executors):
            field = f"body.executors[{index}].image"
            asset = await self._asset_of(executor.image, field, workspace, parameters.get("asset_version"))
            if chosen is not None and (asset.id, asset.version) != (chosen.id, chosen.version):
                raise TaskRefused(
                    "every executor of a task runs the same catalog asset",
                    [
                        FieldProblem(
                            field,
                            f"names asset {asset.id} {asset.version}; "
                            f"executor 0 names {chosen.id} {chosen.version}",
                        )
                    ],
                )
            chosen = asset
        assert chosen is not None
        return chosen

    async def _asset_of(self, image: str, field: str, workspace: Workspace, version: str | None) -> Asset:
        reference = asset_reference(image)
        if reference is not None:
            asset_id, named_version = reference
            try:
                return await self.assets.get(asset_id, named_version or version)
            except NotFound:
                raise TaskRefused(
                    "the executor names no catalog asset",
                    [
                        FieldProblem(
                            field, f"there is no asset {asset_id} {named_version or version or ''}".rstrip()
                        )
                    ],
                ) from None
        matches: dict[str, list[Asset]] = {}
        page = PageRequest(500)
        while True:
            found = await self.assets.list(page)
            for asset in found.items:
                if asset.image == image:
                    matches.setdefault(asset.id, []).append(asset)
            if found.next_after is None:
                break
            page = PageRequest(500, found.next_after)
        async with self.store.read() as uow:
            tenant = await uow.tenants.get(workspace.tenant_id)
        allowed = {
            asset_id: versions
            for asset_id, versions in matches.items()
            if grant_problem(asset_id, workspace.allowed_assets, tenant.allowed_assets if tenant else None)
            is None
        }
        if not allowed:
            rule = (
                "is not the image of a catalog asset this workspace may run"
                if matches
                else "is not the image of any catalog asset"
            )
            raise TaskRefused(
                "a task runs catalog assets only",
                [FieldProblem(field, f"{image!r} {rule}: give an asset's image, or name it as asset:<id>")],
            )
        if len(allowed) > 1:
            raise TaskRefused(
                "the image is that of several assets",
                [
                    FieldProblem(
                        field,
                        f"{image!r} is the image of {', '.join(sorted(allowed))}: name one as asset:<id>",
                    )
                ],
            )
        ((asset_id, versions),) = allowed.items()
        if version is not None:
            for asset in versions:
                if asset.version == version:
                    return asset
            raise TaskRefused(
                "no such asset version",
                [
                    FieldProblem(
                        "body.resources.backend_parameters.asset_version",
                        f"asset {asset_id} has no version {version!r} with this image",
                    )
                ],
            )
        return max(versions, key=lambda a: a.sort_version)

    async def _check_granted(self, asset: Asset, workspace: Workspace) -> None:
        """403 before anything is written, unless the workspace and its tenant may run the asset."""
        async with self.store.read() as uow:
            tenant = await uow.tenants.get(workspace.tenant_id)
        problem = grant_problem(asset.id, workspace.allowed_assets, tenant.allowed_assets if tenant else None)
        if problem is not None:
            raise AssetNotGranted(problem)

    @staticmethod
    def _check_scopes(principal: Principal, document: TesTaskDocument) -> None:
        """A workspace token needs the scopes of what the task does with the workspace's objects:
        objects:read to read them, objects:write to write (outputs, inline and fetched inputs)."""
        if principal.kind is not CredentialKind.WORKSPACE_TOKEN:
            return
        needed = set()
        for item in document.inputs:
            remote = item.content is None and str(item.url or "").lower().startswith(("http://", "https://"))
            needed.add(Scope.OBJECTS_WRITE if item.content is not None or remote else Scope.OBJECTS_READ)
        if document.outputs:
            needed.add(Scope.OBJECTS_WRITE)
        missing = sorted(str(scope) for scope in needed if scope not in principal.scopes)
        if missing:
            raise Forbidden(f"this token lacks the scopes the task needs: {', '.join(missing)}")

    @staticmethod
    def _check_layout(document: TesTaskDocument) -> None:
        """One thing at each path, and no input inside a directory the task collects (its mount
        point would be collected as an empty file)."""
        problems: list[FieldProblem] = []
        seen: dict[str, str] = {}
        places = [(f"body.inputs[{i}].path", item.path) for i, item in enumerate(document.inputs)]
        places += [(f"body.volumes[{i}]", path) for i, path in enumerate(document.volumes)]
        places += [(f"body.outputs[{i}].path", o.path) for i, o in enumerate(document.outputs)]
        for field, path in places:
            if path in seen:
                problems.append(FieldProblem(field, f"{path} is also {seen[path]}"))
            seen.setdefault(path, field)
        for i, output in enumerate(document.outputs):
            if output.type != "DIRECTORY":
                continue
            for j, item in enumerate(document.inputs):
                if PurePosixPath(item.path).is_relative_to(output.path):
                    problems.append(
                        FieldProblem(
                            f"body.inputs[{j}].path",
                            f"lies inside output directory {output.path} (outputs[{i}]), which is collected "
                            "whole: place inputs elsewhere",
                        )
                    )
        if problems:
            raise TaskRefused("the task's paths collide", problems)

    def _check_program(self, asset: Asset, document: TesTaskDocument) -> None:
        """Commands and environment only where the asset allows them; without consumer_command,
        files only where the asset reads its inputs and writes its results."""
        problems: list[FieldProblem] = []
        own = [*asset.command, *asset.args]
        if not asset.consumer_command:
            mounts = {i.mount_path for i in asset.inputs}
            because = f"asset {asset.id} runs its own command: its consumer_command rule is off"
            for i, item in enumerate(document.inputs):
                if item.path not in mounts:
                    allowed = ", ".join(sorted(mounts)) or "none"
                    problems.append(
                        FieldProblem(
                            f"body.inputs[{i}].path", f"{because}; inputs go to its input paths ({allowed})"
                        )
                    )
            for i, output in enumerate(document.outputs):
                if not PurePosixPath(output.path).is_relative_to(asset.result_dir):
                    problems.append(
                        FieldProblem(
                            f"body.outputs[{i}].path", f"{because}; outputs come from {asset.result_dir}"
                        )
                    )
            for i, _ in enumerate(document.volumes):
                problems.append(FieldProblem(f"body.volumes[{i}]", f"{because}; no volumes"))
            for i, executor in enumerate(document.executors):
                for name in ("workdir", "stdin", "stdout", "stderr"):
                    if getattr(executor, name) is not None:
                        problems.append(FieldProblem(f"body.executors[{i}].{name}", f"{because}; no {name}"))
        for index, executor in enumerate(document.executors):
            field = f"body.executors[{index}]"
            if executor.ignore_error and not self.step_errors_ignorable:
                problems.append(
                    FieldProblem(
                        f"{field}.ignore_error",
                        "the compute backend stops at an executor's error; it cannot go on",
                    )
                )
            if asset.consumer_command:
                continue
            if list(executor.command) != own:
                problems.append(
                    FieldProblem(
                        f"{field}.command",
                        f"asset {asset.id} runs its own command only ({own or 'the image default'}); "
                        "its consumer_command rule is off",
                    )
                )
            for name, value in executor.env.items():
                rule = asset.consumer_env.get(name)
                if rule is None:
                    allowed = ", ".join(sorted(asset.consumer_env)) or "none"
                    problems.append(
                        FieldProblem(
                            f"{field}.env.{name}",
                            f"not a variable asset {asset.id} lets consumers set (allowed: {allowed})",
                        )
                    )
                elif not rule.accepts(value):
                    expected = f"one of {rule.enum}" if rule.enum else f"a value matching {rule.pattern!r}"
                    problems.append(FieldProblem(f"{field}.env.{name}", f"must be {expected}"))
        if problems:
            raise TaskRefused("the task does not keep to the asset's rules", problems)

    def _resolve(
        self,
        url: str,
        field: str,
        workspace: Workspace,
        bucket: str | None,
        prefix: str,
        problems: list[FieldProblem],
    ) -> tuple[str | None, str | None] | None:
        """(key, None) for a URL of the task's workspace, (None, url) for a remote source; None
        (a problem added) for anything else."""
        try:
            target = parse_url(url, bucket=bucket, prefix=prefix)
        except UrlProblem as exc:
            problems.append(FieldProblem(field, str(exc)))
            return None
        if target.remote is not None:
            return None, target.remote
        if target.workspace_id is not None and target.workspace_id != workspace.id:
            problems.append(
                FieldProblem(field, f"a task reads and writes its own workspace ({workspace.id}) only")
            )
            return None
        assert target.key is not None
        try:
            check_key(target.key.rstrip("/") or target.key, field)
        except InvalidKey as exc:
            problems.extend(exc.problems)
            return None
        return target.key, None

    async def _exists(self, workspace: Workspace, key: str, directory: bool) -> bool:
        if directory:
            prefix = key if key.endswith("/") else key + "/"
            return bool((await self.storage.list(workspace.location, prefix, PageRequest(1))).items)
        return await self.storage.head(workspace.location, key) is not None

    def _limits(self, asset: Asset, document: TesTaskDocument, problems: list[FieldProblem]) -> Limits:
        """The task's resources, each at most the asset's (which stay the limits otherwise)."""
        resources = document.resources
        if resources is None:
            return Limits()
        own = asset.resources
        asked: list[tuple[str, float | None, str, str, float]] = [
            ("cpu_cores", resources.cpu_cores, own.cpu, "cpu", 1.0),
            ("ram_gb", resources.ram_gb, own.memory, "memory", 1e9),
            ("disk_gb", resources.disk_gb, own.ephemeral_storage, "ephemeral storage", 1e9),
        ]
        values: dict[str, str | None] = {}
        for name, value, limit, what, unit in asked:
            if value is None:
                values[name] = None
                continue
            wanted = value * unit
            smallest = {"cpu_cores": 1.0, "ram_gb": 16 * 2**20, "disk_gb": 2**20}[name]
            if wanted < smallest:
                problems.append(
                    FieldProblem(f"body.resources.{name}", f"{value:g} is less than this service runs with")
                )
                values[name] = None
            elif wanted > quantity(limit) + 1e-9:
                problems.append(
                    FieldProblem(
                        f"body.resources.{name}",
                        f"{value:g} is more than asset {asset.id} allows ({what} {limit})",
                    )
                )
                values[name] = None
            else:
                # Whole MiB, rounded up: a quantity Kubernetes takes as it is.
                values[name] = str(int(value)) if name == "cpu_cores" else f"{math.ceil(wanted / 2**20)}Mi"
        return Limits(values["cpu_cores"], values["ram_gb"], values["disk_gb"])

    async def _write(self, principal: Principal, workspace: Workspace, key: str, data: bytes) -> None:
        """As an upload is: within the workspace's quota, into an open workspace."""

        async def chunks() -> AsyncIterator[bytes]:
            yield data

        await self.workspaces.put_object(principal, workspace.id, key, chunks(), declared_size=len(data))

    # --- inputs fetched over http(s) ------------------------------------------------------------

    async def _fetch(
        self, principal: Principal, task_id: str, workspace: Workspace, remotes: dict[int, str]
    ) -> None:
        started = []
        try:
            for index, url in remotes.items():
                item = await self.imports.create(principal, workspace.id, url, {}, inline_key(task_id, index))
                started.append(item.id)
        except Exception as exc:
            await self._fail(task_id, f"input {len(started)}: {getattr(exc, 'detail', exc)}")
            raise
        finally:
            async with self.store.transaction() as uow:
                await uow.tes_tasks.set_imports(task_id, started)
        await self._check(task_id)

    def on_import(self, item: Import) -> None:
        """An import ended: the task it fetched an input for goes on (provider/services/reactions.py)."""
        task_id = task_of_key(item.target_key)
        if task_id is not None and item.state.final:
            self._tasks.spawn(("import", item.id), self._check(task_id), f"inputs of task {task_id}")

    async def stop(self) -> None:
        await self._tasks.close()

    async def _check(self, task_id: str, resuming: bool = False) -> None:
        """Submit a task whose inputs have all arrived; fail one whose fetch failed."""
        async with self.store.read() as uow:
            record = await uow.tes_tasks.get(task_id)
            execution = await uow.executions.get(task_id)
            if record is None or execution is None or not execution.awaiting_inputs:
                return
            remote = sum(
                1
                for i in record.document.get("inputs", [])
                if "content" not in i and str(i.get("url", "")).lower().startswith(("http://", "https://"))
            )
            if len(record.imports) < remote:
                if not resuming:
                    return  # the task's imports are still being made; its creator checks again
                await self._fail(task_id, "its inputs were not all being fetched when the service stopped")
                return
            found = [await uow.imports.get(i) for i in record.imports]
        for item in found:
            if item is None or item.state in (ImportState.FAILED, ImportState.CANCELED):
                why = "gone" if item is None else f"{item.state.value}: {item.error or ''}"
                await self._fail(
                    task_id, f"fetching {item.source_url if item else 'an input'} {why}".rstrip(": ")
                )
                return
        if all(item is not None and item.state is ImportState.SUCCEEDED for item in found):
            await self.executions.observation.inputs_arrived(task_id)

    async def _fail(self, task_id: str, message: str) -> None:
        await self.executions.on_event(
            ComputeEvent(task_id, State.SYSTEM_ERROR, reason=Reason.INPUT_FETCH, message=message)
        )

    async def resume(self) -> None:
        """After a restart: tasks whose inputs arrived (or failed) meanwhile go on."""
        async with self.store.read() as uow:
            waiting = await uow.tes_tasks.waiting()
        for record in waiting:
            await self._check(record.id, resuming=True)

    # --- reads and cancel -----------------------------------------------------------------------

    async def get(self, principal: Principal, task_id: str, view: str) -> dict[str, Any]:
        execution = await self.executions.get(principal, task_id)  # 404 unless the caller sees it
        async with self.store.read() as uow:
            record = await uow.tes_tasks.get(task_id)
        if record is None:
            raise NotFound("task", task_id)  # an execution made through the executions API
        return render(record, execution, view)

    async def list(
        self, principal: Principal, where: TaskFilter, page: PageRequest, view: str
    ) -> tuple[list[dict[str, Any]], Page[TaskRecord]]:
        if not principal.is_admin:
            where = replace(where, tenant_id=principal.tenant_id)
        if principal.workspace_id is not None:
            where = replace(where, workspace_id=principal.workspace_id)
        async with self.store.read() as uow:
            found = await uow.tes_tasks.list(where, page)
            executions = {r.id: await uow.executions.get(r.id) for r in found.items}
        tasks = [render(r, e, view) for r in found.items if (e := executions[r.id]) is not None]
        return tasks, found

    async def cancel(self, principal: Principal, task_id: str) -> None:
        """Cancel, with the imports fetching its inputs; a task that has ended already (or ends
        meanwhile) is left as it is: TES clients cancel freely."""
        execution = await self.executions.get(principal, task_id)
        async with self.store.read() as uow:
            record = await uow.tes_tasks.get(task_id)
        if record is None:
            raise NotFound("task", task_id)  # an execution made through the executions API
        if execution.state.final or execution.state is State.CANCELING:
            return
        with contextlib.suppress(Conflict):
            await self.executions.cancel(principal, task_id)
        for import_id in record.imports:
            await self.imports.cancel_system(import_id)


WORKSPACE_URL = "workspace://"


def _new_task_id() -> str:
    return new_id("exe")  # a task is an execution: it has its id


def _s3_place(storage: str, location: str) -> tuple[str | None, str]:
    """The bucket and key prefix of a workspace in S3 (see Place in the S3 backend)."""
    if storage != "s3":
        return None, ""
    bucket, _, name = location.partition("/")
    return bucket, f"{name}/" if name else ""
