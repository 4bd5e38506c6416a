"""Stage-in and stage-out: the sidecar's two jobs, binary-safe and with archive-bomb limits."""

from __future__ import annotations

import json
import logging
import os
import shutil
import tarfile
import tempfile
import zipfile
from pathlib import Path, PurePosixPath

from provider.sidecar.contract import (
    MANIFEST,
    ExitCode,
    JobDescription,
    Manifest,
    ManifestFile,
    ManifestOutput,
    manifest_key,
)
from provider.sidecar.remote import RemoteError, Workspace

log = logging.getLogger("provider.sidecar")


class StagingError(Exception):
    """Staging failed; `exit_code` tells the backend whose fault it was."""

    def __init__(self, message: str, exit_code: ExitCode = ExitCode.FAILED) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def _inside(root: Path, relative: str) -> Path:
    target = (root / relative).resolve()
    if not target.is_relative_to(root.resolve()):
        raise StagingError(f"path {relative!r} leaves the staging directory")
    return target


async def stage_in(job: JobDescription, workspace: Workspace, root: Path) -> None:
    for item in job.inputs:
        target = _inside(root, item.path)
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            if item.kind == "file":
                size = await workspace.download(item.key, target)
                log.info("staged %s (%d bytes)", item.name, size)
            elif item.kind == "directory":
                prefix = item.key if item.key.endswith("/") or not item.key else item.key + "/"
                target.mkdir(parents=True, exist_ok=True)
                count = 0
                async for key in workspace.keys(prefix):
                    destination = _inside(target, key[len(prefix) :])
                    destination.parent.mkdir(parents=True, exist_ok=True)
                    await workspace.download(key, destination)
                    count += 1
                log.info("staged %s (%d objects)", item.name, count)
            elif item.kind == "archive":
                with tempfile.NamedTemporaryFile(dir=root, prefix=".archive-", delete=False) as handle:
                    archive = Path(handle.name)
                try:
                    await workspace.download(item.key, archive)
                    target.mkdir(parents=True, exist_ok=True)
                    files = unpack(archive, target, job.max_archive_bytes, job.max_archive_files)
                    log.info("staged %s (%d files unpacked)", item.name, files)
                finally:
                    archive.unlink(missing_ok=True)
            else:
                raise StagingError(f"unknown input kind {item.kind!r}")
        except RemoteError as exc:
            raise StagingError(f"input {item.name}: {exc}") from exc


def unpack(archive: Path, target: Path, max_bytes: int, max_files: int) -> int:
    """Unpack a tar (any compression) or zip archive into `target`, refusing anything that would
    leave it (absolute paths, '..', links pointing out, devices) and archive bombs (more than
    `max_files` members or `max_bytes` unpacked)."""
    if tarfile.is_tarfile(archive):
        with tarfile.open(archive) as tar:
            members = 0
            total = 0
            for member in tar:
                name = PurePosixPath(member.name)
                if name.is_absolute() or ".." in name.parts:
                    raise StagingError(f"unsafe archive member: {member.name!r}")
                members += 1
                total += member.size
                if members > max_files or total > max_bytes:
                    raise StagingError(f"archive exceeds the limits ({max_files} files, {max_bytes} bytes)")
            try:
                tar.extractall(target, filter="data")  # refuses traversal, absolute paths, devices
            except tarfile.FilterError as exc:
                raise StagingError(f"unsafe archive member: {exc}") from exc
            return members
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zipped:
            entries = zipped.infolist()
            if len(entries) > max_files:
                raise StagingError(f"archive exceeds the limit of {max_files} files")
            written = 0
            for entry in entries:
                name = PurePosixPath(entry.filename)
                if name.is_absolute() or ".." in name.parts or entry.filename.startswith("\\"):
                    raise StagingError(f"unsafe archive member: {entry.filename!r}")
                destination = _inside(target, entry.filename)
                if entry.is_dir():
                    destination.mkdir(parents=True, exist_ok=True)
                    continue
                destination.parent.mkdir(parents=True, exist_ok=True)
                # Count the bytes actually inflated: the sizes in the header may lie.
                with zipped.open(entry) as source, destination.open("wb") as sink:
                    while block := source.read(1024 * 1024):
                        written += len(block)
                        if written > max_bytes:
                            raise StagingError(f"archive exceeds the limit of {max_bytes} bytes unpacked")
                        sink.write(block)
            return len(entries)
    raise StagingError("the archive input is neither a tar nor a zip file")


async def stage_out(job: JobDescription, workspace: Workspace, results: Path) -> Manifest:
    """Upload the declared outputs and a manifest; returns the manifest."""
    listed = []
    missing = []
    for output in job.outputs:
        source = _inside(results, output.path)
        files: list[Path]
        if output.kind == "directory":
            files = sorted(p for p in source.rglob("*") if p.is_file()) if source.is_dir() else []
            present = source.is_dir()
        else:
            files = [source] if source.is_file() else []
            present = bool(files)
        if not present:
            if output.required:
                missing.append(output.name)
            continue
        entries = []
        for path in files:
            if path.is_symlink() and not path.resolve().is_relative_to(results.resolve()):
                raise StagingError(f"output {output.name}: {path.name} links outside the result directory")
            if output.key is None:
                key = job.outputs_prefix + path.relative_to(results).as_posix()
            elif output.kind == "directory":
                key = output.key.rstrip("/") + "/" + path.relative_to(source).as_posix()
            else:
                key = output.key
            try:
                size, sha256 = await workspace.upload(key, path)
            except RemoteError as exc:
                raise StagingError(f"output {output.name}: {exc}") from exc
            entries.append(ManifestFile(key, size, sha256))
        listed.append(ManifestOutput(output.name, tuple(entries)))
    if missing:
        raise StagingError(f"missing declared output: {', '.join(missing)}", ExitCode.MISSING_OUTPUT)
    manifest = Manifest(job.execution_id, tuple(listed))
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / MANIFEST
        path.write_text(json.dumps(manifest.to_json(), indent=2))
        try:
            await workspace.upload(manifest_key(job.execution_id), path)
        except RemoteError as exc:
            raise StagingError(f"manifest: {exc}") from exc
    return manifest


def clear(directory: Path) -> None:
    shutil.rmtree(directory, ignore_errors=True)
    os.makedirs(directory, exist_ok=True)
