"""Executions from a terminal: `provider run` (inputs up, run, follow, outputs down) and
`provider executions list|get|cancel|logs|outputs`."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from provider.cli.common import (
    CliError,
    _client,
    _console,
    key_values,
    local_target,
    upload_plan,
    upload_tree,
)
from provider.client import ApiClient, ApiError

FINAL_STATES = ("COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR", "CANCELED")
# `provider run --wait`: how an execution ended, as the exit status (1 and 2 are the CLI's own:
# a refused request, a bad configuration).
EXIT_STATUS = {"COMPLETE": 0, "EXECUTOR_ERROR": 3, "SYSTEM_ERROR": 4, "CANCELED": 5}


def _line(execution: dict[str, Any]) -> str:
    detail = " ".join(
        f"{k}={execution[k]}" for k in ("reason", "exit_code") if execution.get(k) not in (None, "")
    )
    return f"{execution['updated_at']}  {execution['id']}  {execution['state']:<14} {detail}".rstrip()


async def follow(api: ApiClient, execution_id: str, show: Any) -> dict[str, Any]:
    """Report every state of one execution until it ends: the event stream, with a GET first and
    after every dropped connection, so that no change is missed while nobody listened (the
    stream's look-back is short). A service that restarts meanwhile is waited for."""
    path = f"/api/v1/executions/{execution_id}"
    params = {"types": "execution.state_changed", "execution_id": execution_id}
    current: dict[str, Any] | None = None
    delay = 0.5
    while True:
        try:
            latest: dict[str, Any] = await api.json("GET", path)
            if current is None or latest["version"] > current["version"]:
                current = latest
                show(current)
            if current["state"] in FINAL_STATES:
                return current
            async for _, event in api.event_stream(params):
                delay = 0.5
                execution = event["data"]  # the event's envelope carries the execution
                if execution["version"] <= current["version"]:
                    continue
                current = execution
                show(current)
                if current["state"] in FINAL_STATES:
                    return current
        except ApiError as exc:
            if exc.status is not None:  # refused, not unreachable
                raise
            _console().print(f"provider: {exc}; trying again in {delay:g} s")
        await asyncio.sleep(delay)
        delay = min(delay * 2, 10.0)


async def download_outputs(api: ApiClient, execution: dict[str, Any], target: Path) -> list[Path]:
    """Every output file under `target`, by its path below the execution's outputs folder."""
    answer = await api.json("GET", f"/api/v1/executions/{execution['id']}/outputs")
    written = []
    prefix = f"executions/{execution['id']}/outputs/"
    for output in answer["outputs"]:
        if not output["key"].startswith(prefix):
            raise CliError(f"the output {output['key']!r} is not below {prefix}")
        local = local_target(target, output["key"][len(prefix) :])
        local.parent.mkdir(parents=True, exist_ok=True)
        await api.download(execution["workspace_id"], output["key"], local, lambda _: None, lambda _: None)
        written.append(local)
    return written


def cmd_run(args: argparse.Namespace) -> int:
    inputs = key_values(args.input, "--input", "NAME=LOCAL_PATH or NAME=KEY")
    env = key_values(args.param, "--param", "NAME=VALUE")
    labels = key_values(args.label, "--label", "KEY=VALUE")
    wait = args.wait or args.download is not None
    console = _console()
    # Local files and folders go up first, under inputs/<name>/; anything else is an object key.
    plans = {
        name: upload_plan(Path(value), f"inputs/{name}/")
        for name, value in inputs.items()
        if Path(value).exists()
    }

    async def run() -> dict[str, Any]:
        async with _client(args) as api:
            asset = await api.json("GET", f"/api/v1/assets/{args.asset}")
            declared = {item["name"] for item in asset["inputs"]}
            unknown = sorted(set(inputs) - declared)
            if unknown:
                raise CliError(
                    f"asset {args.asset} has no input {', '.join(unknown)} "
                    f"(its inputs: {', '.join(sorted(declared)) or 'none'})"
                )
            workspace = args.workspace
            if workspace is None:
                made = await api.json("POST", "/api/v1/workspaces", json={"name": f"run {args.asset}"})
                workspace = made["id"]
                console.print(f"workspace {workspace}")
            keys = dict(inputs)
            for name, (files, named) in plans.items():
                await upload_tree(api, workspace, files, f"inputs/{name}/", args.parallel, resume=True)
                keys[name] = named
            body = {
                "asset_id": args.asset,
                "workspace_id": workspace,
                "inputs": keys,
                "env": env,
                "labels": labels,
            }
            execution: dict[str, Any] = await api.json("POST", "/api/v1/executions", json=body)
            if not wait:
                return execution
            console.print(f"execution {execution['id']}")
            execution = await follow(api, execution["id"], lambda e: console.print(_line(e)))
            if args.download is not None and execution["state"] == "COMPLETE":
                for path in await download_outputs(api, execution, Path(args.download)):
                    console.print(f"downloaded {path}")
            return execution

    execution = asyncio.run(run())
    if not wait:
        print(execution["id"])
        return 0
    if args.json:
        print(json.dumps(execution, indent=2))
    else:
        print(execution["id"])
    if execution["state"] != "COMPLETE":
        message = execution.get("message") or execution.get("reason") or ""
        console.print(
            f"provider: execution {execution['id']} ended {execution['state']}: {message}".rstrip(": ")
        )
    return EXIT_STATUS[execution["state"]]


def cmd_list(args: argparse.Namespace) -> int:
    params = {
        name: value
        for name, value in (("state", args.state), ("asset_id", args.asset), ("workspace_id", args.workspace))
        if value
    }

    async def run() -> list[dict[str, Any]]:
        async with _client(args) as api:
            items = []
            async for item in api.pages("/api/v1/executions", **params):
                items.append(item)
                if len(items) >= args.limit:
                    break
            return items

    items = asyncio.run(run())
    if args.json:
        print(json.dumps(items, indent=2))
    elif not items:
        print("no executions")
    for execution in [] if args.json else items:
        asset = f"{execution['asset']['id']}@{execution['asset']['version']}"
        where = f"{execution['workspace_id']}  {execution['created_at']}"
        print(f"{execution['id']}  {execution['state']:<14}  {asset:<24}  {where}")
    return 0


def cmd_get(args: argparse.Namespace) -> int:
    async def run() -> dict[str, Any]:
        async with _client(args) as api:
            execution: dict[str, Any] = await api.json("GET", f"/api/v1/executions/{args.execution}")
            return execution

    execution = asyncio.run(run())
    if args.json:
        print(json.dumps(execution, indent=2))
        return 0
    print(
        f"{execution['id']}  {execution['state']}  {execution['asset']['id']}@{execution['asset']['version']}"
    )
    print(f"  workspace {execution['workspace_id']}, attempt {execution['attempt']}")
    if execution["reason"] or execution["message"]:
        print(f"  {execution['reason'] or ''} {execution['message'] or ''}".rstrip())
    for step in execution["history"]:
        print(f"  {step['at']}  {step['state']:<14} {step['reason'] or ''}".rstrip())
    for output in execution["outputs"]:
        print(
            f"  output {output['name']}: {output['key']} ({output['size']} bytes, sha256 {output['sha256']})"
        )
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    async def run() -> None:
        async with _client(args) as api:
            for execution_id in args.executions:
                execution = await api.json("POST", f"/api/v1/executions/{execution_id}/cancel")
                print(f"{execution_id} {execution['state']}")

    asyncio.run(run())
    return 0


def cmd_logs(args: argparse.Namespace) -> int:
    params = {"follow": "true"} if args.follow else {}
    if args.tail is not None:
        params["tail"] = str(args.tail)
    if args.attempt is not None:
        params["attempt"] = str(args.attempt)

    async def run() -> None:
        async with ApiClient(args.url, args.key, timeout=None) as api:
            async for block in api.stream(f"/api/v1/executions/{args.execution}/logs", params):
                sys.stdout.buffer.write(block)
                sys.stdout.buffer.flush()

    asyncio.run(run())
    return 0


def cmd_outputs(args: argparse.Namespace) -> int:
    async def run() -> tuple[dict[str, Any], list[Path]]:
        async with _client(args) as api:
            answer: dict[str, Any] = await api.json("GET", f"/api/v1/executions/{args.execution}/outputs")
            written: list[Path] = []
            if args.download is not None:
                if answer["state"] != "COMPLETE":
                    raise CliError(
                        f"execution {args.execution} is {answer['state']}: outputs come once it is COMPLETE"
                    )
                execution = await api.json("GET", f"/api/v1/executions/{args.execution}")
                written = await download_outputs(api, execution, Path(args.download))
            return answer, written

    answer, written = asyncio.run(run())
    if args.json:
        print(json.dumps(answer, indent=2))
    else:
        for output in answer["outputs"]:
            print(f"{output['size']:>14}  {output['sha256']}  {output['key']}")
        for path in written:
            print(f"downloaded {path}")
    return 0
