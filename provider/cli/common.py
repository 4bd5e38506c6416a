"""What the command modules share: the one-line error, settings, the API client and progress bars."""

from __future__ import annotations

import argparse
import asyncio
import os
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from provider.client import ApiClient
from provider.config import Settings, load_settings

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress


class CliError(Exception):
    """A failure to report in one line, with exit status 1."""


def _settings(args: argparse.Namespace, **overrides: Any) -> Settings:
    return load_settings(args.config, **overrides)


def _client(args: argparse.Namespace) -> ApiClient:
    warn_plain_http(args.url)
    return ApiClient(args.url, args.key)


def warn_plain_http(url: str) -> None:
    """Say so when the key or token would cross a network unencrypted (loopback is fine)."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if parts.scheme == "http" and host not in ("localhost", "::1") and not host.startswith("127."):
        _console().print(f"provider: warning: the credential goes to {host} over plain http; use https")


def _progress() -> Progress:
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    return Progress(
        TextColumn("{task.description}", markup=False),  # object keys and server text, not markup
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=_console(),
        transient=False,
    )


def _console() -> Console:
    from rich.console import Console

    return Console(stderr=True, markup=False, highlight=False, soft_wrap=True)  # a line stays one line


def _size(value: int | None) -> str:
    if value is None:
        return "?"
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return str(value)


def local_target(root: Path, relative_key: str) -> Path:
    """Where an object (its key below a prefix) goes under `root`, refusing any key that would
    leave it: '..', '.', empty segments, backslashes or drive letters (a key is the server's
    word, and another writer of the workspace chose it)."""
    parts = relative_key.split("/")
    if any(part in ("", ".", "..") or "\\" in part or ":" in part for part in parts):
        raise CliError(f"refusing to write the object {relative_key!r}: its name would leave {root}")
    target = root.joinpath(*parts)
    if not target.resolve().is_relative_to(root.resolve()):
        raise CliError(f"refusing to write the object {relative_key!r}: it would leave {root}")
    return target


def key_values(items: list[str], option: str, form: str) -> dict[str, str]:
    """`K=V` arguments as a dict; a malformed one is a one-line error naming the option."""
    parsed = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise CliError(f"{option} {item!r}: expected {form}")
        parsed[name] = value
    return parsed


def local_files(root: Path) -> list[tuple[Path, str]]:
    """Every file under `root` with its '/'-separated path below it, in a stable order."""
    found = []
    for folder, _, names in os.walk(root):  # symbolic links to folders are not followed
        for name in sorted(names):
            path = Path(folder) / name
            if path.is_symlink():  # nor to files: a planted link must not send what it points at
                _console().print(f"skipping the symbolic link {path}")
                continue
            found.append((path, path.relative_to(root).as_posix()))
    return sorted(found, key=lambda item: item[1])


def _same(local: Path, size: int, modified: float) -> bool:
    """A local copy of that size, no older than the object: a quick check, as rsync's."""
    try:
        stat = local.stat()
    except FileNotFoundError:
        return False
    return stat.st_size == size and stat.st_mtime >= modified


def _iso(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def upload_plan(local: Path, prefix: str) -> tuple[list[tuple[Path, str]], str]:
    """The files to upload for a local file (to `prefix + its name`) or folder (below `prefix`),
    with their keys, and what names them in the workspace: the key, or the prefix."""
    if local.is_file():
        return [(local, prefix + local.name)], prefix + local.name
    if local.is_dir():
        return [(path, prefix + relative) for path, relative in local_files(local)], prefix
    raise CliError(f"{local} is neither a file nor a folder")


async def upload_tree(
    api: ApiClient,
    workspace: str,
    files: list[tuple[Path, str]],
    prefix: str,
    parallel: int,
    resume: bool = False,
) -> None:
    """Upload `files` (upload_plan), `parallel` at a time with one progress bar.

    With `resume`, a file already in the workspace with the same size and a time no older than
    the local file's is skipped (a quick check, as rsync's), so that an interrupted upload goes on where it
    stopped, when `resume` asks for it."""
    remote: dict[str, dict[str, Any]] = {}
    if resume:
        async for item in api.pages(f"/api/v1/workspaces/{workspace}/objects", prefix=prefix):
            remote[item["key"]] = item
    todo = []
    for local, key in files:
        stat = await asyncio.to_thread(local.stat)
        known = remote.get(key)
        if known and known["size"] == stat.st_size and _iso(known["last_modified"]) >= stat.st_mtime:
            continue
        todo.append((local, key, stat.st_size))
    if not todo:
        _console().print(f"{len(files)} files already in the workspace")
        return
    gate = asyncio.Semaphore(parallel)
    with _progress() as bar:
        task = bar.add_task(f"upload {len(todo)} files", total=sum(size for _, _, size in todo))

        async def one(local: Path, key: str) -> None:
            async with gate:
                await api.upload(workspace, key, local, lambda n: bar.advance(task, n))

        await asyncio.gather(*(one(local, key) for local, key, _ in todo))


async def download_tree(
    api: ApiClient, workspace: str, prefix: str, target: Path, parallel: int, resume: bool = False
) -> list[Path]:
    """Download every object below `prefix` into `target`, by its path below the prefix; a local
    file of the same size no older than the object is skipped with `resume`."""
    items = [item async for item in api.pages(f"/api/v1/workspaces/{workspace}/objects", prefix=prefix)]
    if not items:
        raise CliError(f"no objects under {prefix!r} in {workspace}")
    # "data/" and "data/x" both keep what follows "data/"; "" keeps whole keys.
    cut = len(prefix) if prefix.endswith("/") else prefix.rfind("/") + 1
    todo = []
    for item in items:
        local = local_target(target, item["key"][cut:])
        if resume and _same(local, item["size"], _iso(item["last_modified"])):
            continue
        todo.append((item, local))
    gate = asyncio.Semaphore(parallel)
    with _progress() as bar:
        task = bar.add_task(f"download {len(todo)} files", total=sum(item["size"] for item, _ in todo))

        async def one(item: dict[str, Any], local: Path) -> None:
            async with gate:
                local.parent.mkdir(parents=True, exist_ok=True)
                await api.download(
                    workspace, item["key"], local, lambda _: None, lambda n: bar.advance(task, n)
                )

        await asyncio.gather(*(one(item, local) for item, local in todo))
    return [local for _, local in todo]
