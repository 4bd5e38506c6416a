"""Commands that talk to a running service over its HTTP API."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path, PurePosixPath
from typing import Any

from provider.cli.common import (
    CliError,
    _client,
    _progress,
    _size,
    download_tree,
    key_values,
    upload_plan,
    upload_tree,
)
from provider.client import ApiClient


def cmd_assets_list(args: argparse.Namespace) -> int:
    async def run() -> list[dict[str, Any]]:
        async with _client(args) as api:
            return [item async for item in api.pages("/api/v1/assets")]

    items = asyncio.run(run())
    if args.json:
        print(json.dumps(items, indent=2))
        return 0
    if not items:
        print("no assets")
        return 0
    width = max(len(a["id"]) for a in items)
    for asset in items:
        print(f"{asset['id']:<{width}}  {asset['version']:<10}  {asset['image']:<40}  {asset['title']}")
    return 0


def cmd_workspace_create(args: argparse.Namespace) -> int:
    labels = key_values(args.label, "--label", "KEY=VALUE")

    async def run() -> Any:
        async with _client(args) as api:
            return await api.json("POST", "/api/v1/workspaces", json={"name": args.name, "labels": labels})

    workspace = asyncio.run(run())
    print(json.dumps(workspace, indent=2) if args.json else workspace["id"])
    return 0


def cmd_workspace_list(args: argparse.Namespace) -> int:
    async def run() -> list[dict[str, Any]]:
        async with _client(args) as api:
            return [item async for item in api.pages("/api/v1/workspaces")]

    items = asyncio.run(run())
    if args.json:
        print(json.dumps(items, indent=2))
    elif not items:
        print("no workspaces")
    for ws in [] if args.json else items:
        usage, quota = ws["usage"], ws["quota"]
        print(
            f"{ws['id']}  {ws['name'] or '-':<20}  {_size(usage['bytes'])} of {_size(quota['bytes'])}"
            f"  {usage['objects']} objects"
        )
    return 0


def cmd_workspace_rm(args: argparse.Namespace) -> int:
    async def run() -> None:
        async with _client(args) as api:
            for workspace in args.workspaces:
                await api.json("DELETE", f"/api/v1/workspaces/{workspace}")
                print(f"deleted {workspace}")

    asyncio.run(run())
    return 0


def cmd_put(args: argparse.Namespace) -> int:
    """A file, a whole folder (recursive, parallel, resumable with --resume) or standard input (`-`)."""
    if args.local == "-":
        if not args.key_name:
            raise CliError("put - (standard input) needs the object KEY")

        async def from_stdin() -> Any:
            async def chunks() -> AsyncIterator[bytes]:
                while block := await asyncio.to_thread(sys.stdin.buffer.read, 1024 * 1024):
                    yield block

            async with _client(args) as api:
                return await api.upload_stream(args.workspace, args.key_name, chunks())

        stored = asyncio.run(from_stdin())
        print(f"{args.key_name}: {stored['size']} bytes, sha256 {stored['sha256']}")
        return 0
    source = Path(args.local)
    if source.is_dir():
        prefix = args.key_name if args.key_name is not None else source.name
        prefix = prefix if prefix in ("",) or prefix.endswith("/") else prefix + "/"

        files, _ = upload_plan(source, prefix)

        async def tree() -> None:
            async with _client(args) as api:
                await upload_tree(api, args.workspace, files, prefix, args.parallel, args.resume)

        asyncio.run(tree())
        print(f"{source}/ -> {prefix or '(workspace root)'}")
        return 0
    if not source.is_file():
        raise CliError(f"{source} is not a file or a folder")
    key = args.key_name or source.name
    size = source.stat().st_size

    async def run() -> Any:
        async with _client(args) as api:
            with _progress() as bar:
                task = bar.add_task(f"upload {key}", total=size)
                return await api.upload(args.workspace, key, source, lambda n: bar.advance(task, n))

    stored = asyncio.run(run())
    print(f"{key}: {stored['size']} bytes, sha256 {stored['sha256']}")
    return 0


def cmd_get(args: argparse.Namespace) -> int:
    """An object, every object under a prefix ending in '/' (into a folder), or to standard
    output (`-`)."""
    if args.local == "-":

        async def to_stdout() -> None:
            async with _client(args) as api:
                path = api.object_path(args.workspace, args.key_name)
                async for block in api.stream(path):
                    sys.stdout.buffer.write(block)
            sys.stdout.buffer.flush()

        asyncio.run(to_stdout())
        return 0
    if args.key_name.endswith("/"):
        folder = Path(args.local or PurePosixPath(args.key_name).name)

        async def tree() -> list[Path]:
            async with _client(args) as api:
                return await download_tree(
                    api, args.workspace, args.key_name, folder, args.parallel, args.resume
                )

        written = asyncio.run(tree())
        print(f"{args.key_name} -> {folder}/ ({len(written)} files downloaded)")
        return 0
    target = Path(args.local or Path(args.key_name).name)
    if target.is_dir():
        target = target / Path(args.key_name).name

    async def run() -> int:
        async with _client(args) as api:
            with _progress() as bar:
                task = bar.add_task(f"download {args.key_name}", total=None)
                return await api.download(
                    args.workspace,
                    args.key_name,
                    target,
                    lambda total: bar.update(task, total=total),
                    lambda n: bar.advance(task, n),
                )

    size = asyncio.run(run())
    print(f"{target}: {size} bytes")
    return 0


def cmd_ls(args: argparse.Namespace) -> int:
    async def run() -> list[dict[str, Any]]:
        async with _client(args) as api:
            path = f"/api/v1/workspaces/{args.workspace}/objects"
            return [item async for item in api.pages(path, prefix=args.prefix)]

    items = asyncio.run(run())
    if args.json:
        print(json.dumps(items, indent=2))
    for item in [] if args.json else items:
        print(f"{item['size']:>14}  {item['last_modified']}  {item['key']}")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    headers = {}
    for item in args.header:
        name, sep, value = item.partition(":")
        if not sep or not name.strip():
            raise CliError(f"--header {item!r}: expected NAME:VALUE")
        headers[name.strip()] = value.strip()
    body: dict[str, Any] = {"source_url": args.source_url, "target_key": args.key_name, "headers": headers}
    if args.sha256:
        body["sha256"] = args.sha256

    async def run() -> dict[str, Any]:
        async with _client(args) as api:
            item = await api.json("POST", f"/api/v1/workspaces/{args.workspace}/imports", json=body)
            if args.no_wait:
                return dict(item)
            path = f"/api/v1/workspaces/{args.workspace}/imports/{item['id']}"
            with _progress() as bar:
                task = bar.add_task(f"import {args.key_name}", total=None)
                while item["state"] not in ("succeeded", "failed", "canceled"):
                    await asyncio.sleep(0.5)
                    item = await api.json("GET", path)
                    bar.update(task, total=item["bytes_total"], completed=item["bytes_done"])
            return dict(item)

    item = asyncio.run(run())
    if item["state"] in ("queued", "running"):
        print(f"import {item['id']} {item['state']}")
        return 0
    if item["state"] != "succeeded":
        detail = f" (upstream HTTP {item['upstream_status']})" if item["upstream_status"] else ""
        raise CliError(f"import {item['id']} {item['state']}: {item['error']}{detail}")
    print(f"{args.key_name}: {item['bytes_done']} bytes imported, sha256 {item['sha256']}")
    return 0


FINAL_STATES = ("COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR", "CANCELED")


def cmd_watch(args: argparse.Namespace) -> int:
    """Print execution state changes as they happen; with an id, until that execution ends."""
    params = {"types": "execution.state_changed"}
    if args.execution:
        params["execution_id"] = args.execution
    if args.workspace:
        params["workspace_id"] = args.workspace

    def show(execution: dict[str, Any]) -> None:
        if args.json:
            print(json.dumps(execution), flush=True)
            return
        detail = " ".join(
            f"{k}={execution[k]}" for k in ("reason", "exit_code") if execution.get(k) not in (None, "")
        )
        print(
            f"{execution['updated_at']}  {execution['id']}  {execution['state']:<14} {detail}".rstrip(),
            flush=True,
        )

    async def run() -> str | None:
        async with ApiClient(args.url, args.key, timeout=None) as api:
            if args.execution:
                current = await api.json("GET", f"/api/v1/executions/{args.execution}")
                show(current)
                if current["state"] in FINAL_STATES:
                    return str(current["state"])
            async for event in api.events(params):
                show(event["data"])
                if args.execution and event["data"]["state"] in FINAL_STATES:
                    return str(event["data"]["state"])
        return None

    state = asyncio.run(run())
    return 0 if state in (None, "COMPLETE") else 1
