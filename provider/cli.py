"""The `provider` command line: run the service, manage its store, and talk to a running one."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from provider import __version__
from provider.backends.asset_files import AssetFileError
from provider.backends.data_lock import DataInUse
from provider.client import ApiClient, ApiError
from provider.config import ConfigError, Settings, load_settings

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress

DEFAULT_URL = "http://127.0.0.1:8080"


class CliError(Exception):
    """A failure to report in one line, with exit status 1."""


def _settings(args: argparse.Namespace, **overrides: Any) -> Settings:
    return load_settings(args.config, **overrides)


# --- server-side commands -------------------------------------------------------------------


def cmd_serve(args: argparse.Namespace) -> int:
    from provider.app import create_app
    from provider.logs import configure_logging
    from provider.server import serve

    server: dict[str, Any] = {}
    if args.host:
        server["host"] = args.host
    if args.port is not None:
        server["port"] = args.port
    settings = _settings(args, **({"server": server} if server else {}))
    configure_logging(settings.logging.level, settings.logging.format)
    app = create_app(settings)
    print(
        f"provider {__version__} listening on {settings.public_url}\n"
        f"  API docs: {settings.public_url}/docs\n"
        f"  health:   {settings.public_url}/healthz",
        file=sys.stderr,
        flush=True,
    )
    serve(app, settings.server)
    return 0


async def _migrate(settings: Settings) -> str | None:
    from provider.app import build_store
    from provider.backends.sql import migrate

    store = build_store(settings)
    try:
        await migrate.upgrade(store)
        return await migrate.current_revision(store)
    finally:
        await store.close()


def cmd_migrate(args: argparse.Namespace) -> int:
    settings = _settings(args)
    revision = asyncio.run(_migrate(settings))
    print(f"database schema is at revision {revision}")
    return 0


async def _init(settings: Settings) -> str | None:
    from provider.app import build_components, prepare_store

    components = build_components(settings)
    try:
        await prepare_store(components)
        issued = await components.tenants.init_admin_key()
        return issued.secret if issued else None
    finally:
        await components.store.close()


def cmd_init(args: argparse.Namespace) -> int:
    settings = _settings(args)
    secret = asyncio.run(_init(settings))
    if secret is None:
        print("an admin key exists already; nothing created (revoke keys through the API to rotate)")
        return 0
    print("Created the first admin API key. It is shown only this once; store it safely:\n")
    print(f"  {secret}\n")
    print("Use it as 'Authorization: Bearer <key>' or export PROVIDER_API_KEY=<key> for the CLI.")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    import tempfile

    from provider.backends.asset_files import example_asset_directory
    from provider.demo import run_demo
    from provider.logs import configure_logging

    with tempfile.TemporaryDirectory(prefix="provider-demo-") as scratch:
        # Data of its own unless told otherwise, so that it never touches a service's (./data);
        # the dummy asset from the package, so that it runs from any directory.
        data_dir = Path(args.data_dir) if args.data_dir else Path(scratch)
        settings = _settings(args, data_dir=data_dir, assets={"directory": example_asset_directory()})
        configure_logging("WARNING", "text")
        if args.url and not args.key:
            raise CliError("--url needs --key (or PROVIDER_API_KEY)")
        return run_demo(settings, args.url, args.key if args.url else None, Path(args.folder), args.sleep)


def cmd_version(args: argparse.Namespace) -> int:
    print(f"provider {__version__}")
    return 0


def cmd_assets_validate(args: argparse.Namespace) -> int:
    from provider.backends.asset_files import read_asset_file

    failed = 0
    for name in args.files:
        try:
            asset = read_asset_file(Path(name))
        except AssetFileError as exc:
            failed += 1
            print(exc, file=sys.stderr)
        else:
            print(f"{name}: ok ({asset.id} {asset.version})")
    return 1 if failed else 0


# --- client commands ------------------------------------------------------------------------


def _client(args: argparse.Namespace) -> ApiClient:
    return ApiClient(args.url, args.key)


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
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=_console(),
        transient=False,
    )


def _console() -> Console:
    from rich.console import Console

    return Console(stderr=True)


def _size(value: int | None) -> str:
    if value is None:
        return "?"
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return str(value)


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
    labels = dict(item.split("=", 1) for item in args.label)

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
    source = Path(args.local)
    if not source.is_file():
        raise CliError(f"{source} is not a file")
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
    headers = dict(item.split(":", 1) for item in args.header)
    headers = {k.strip(): v.strip() for k, v in headers.items()}
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


# --- parser ---------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="provider", description="Compute-to-data backend for data spaces.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def server_command(name: str, help_text: str) -> argparse.ArgumentParser:
        command = sub.add_parser(name, help=help_text, description=help_text)
        command.add_argument(
            "--config", help="YAML configuration file (default: $PROVIDER_CONFIG, else config/provider.yaml)"
        )
        return command

    def client_options(command: argparse.ArgumentParser) -> None:
        command.add_argument(
            "--url",
            default=os.environ.get("PROVIDER_API_URL", DEFAULT_URL),
            help=f"service base URL (default: $PROVIDER_API_URL or {DEFAULT_URL})",
        )
        command.add_argument(
            "--key", default=os.environ.get("PROVIDER_API_KEY"), help="API key (default: $PROVIDER_API_KEY)"
        )

    serve = server_command("serve", "run the HTTP service")
    serve.add_argument("--host", help="listen address (overrides server.host)")
    serve.add_argument("--port", type=int, help="listen port (overrides server.port)")
    serve.set_defaults(func=cmd_serve)

    server_command("migrate", "bring the database schema up to date").set_defaults(func=cmd_migrate)
    server_command("init", "migrate and create the first admin API key (printed once)").set_defaults(
        func=cmd_init
    )
    demo = server_command("demo", "run the main job end to end: workspace, upload, execution, download")
    demo.add_argument("--url", help="use a running service instead of starting one in this process")
    demo.add_argument("--key", default=os.environ.get("PROVIDER_API_KEY"), help="API key for --url")
    demo.add_argument(
        "--folder", default="demo", help="where the input and output files go (default: ./demo)"
    )
    demo.add_argument("--sleep", type=float, default=1.0, help="seconds the dummy asset waits (default 1)")
    demo.add_argument(
        "--data-dir",
        help="the in-process service's data_dir, kept afterwards (default: a temporary directory, "
        "removed at the end)",
    )
    demo.set_defaults(func=cmd_demo)
    version = sub.add_parser("version", help="print the version", description="print the version")
    version.set_defaults(func=cmd_version)

    assets = sub.add_parser("assets", help="the asset catalog", description="the asset catalog")
    assets_sub = assets.add_subparsers(dest="assets_command", required=True, metavar="COMMAND")
    listing = assets_sub.add_parser("list", help="list the assets of a running service")
    client_options(listing)
    listing.add_argument("--json", action="store_true", help="print JSON instead of a table")
    listing.set_defaults(func=cmd_assets_list)
    validate = assets_sub.add_parser("validate", help="check asset files without a service")
    validate.add_argument("files", nargs="+", metavar="FILE")
    validate.set_defaults(func=cmd_assets_validate)

    workspace = sub.add_parser(
        "workspace", help="workspaces", description="create, list and delete workspaces"
    )
    workspace_sub = workspace.add_subparsers(dest="workspace_command", required=True, metavar="COMMAND")
    create = workspace_sub.add_parser("create", help="create a workspace and print its id")
    client_options(create)
    create.add_argument("--name", default="", help="a name for people")
    create.add_argument(
        "--label", action="append", default=[], metavar="KEY=VALUE", help="a label (repeatable)"
    )
    create.add_argument("--json", action="store_true", help="print the whole workspace as JSON")
    create.set_defaults(func=cmd_workspace_create)
    listing = workspace_sub.add_parser("list", help="list workspaces with their usage")
    client_options(listing)
    listing.add_argument("--json", action="store_true", help="print JSON instead of a table")
    listing.set_defaults(func=cmd_workspace_list)
    remove = workspace_sub.add_parser(
        "rm", help="delete workspaces: revokes their tokens, removes their data"
    )
    client_options(remove)
    remove.add_argument("workspaces", nargs="+", metavar="WS")
    remove.set_defaults(func=cmd_workspace_rm)

    put = sub.add_parser("put", help="upload a file", description="upload a local file into a workspace")
    client_options(put)
    put.add_argument("workspace", metavar="WS")
    put.add_argument("local", metavar="LOCAL")
    put.add_argument("key_name", nargs="?", metavar="KEY", help="object key (default: the file name)")
    put.set_defaults(func=cmd_put)

    get = sub.add_parser("get", help="download an object", description="download an object from a workspace")
    client_options(get)
    get.add_argument("workspace", metavar="WS")
    get.add_argument("key_name", metavar="KEY")
    get.add_argument("local", nargs="?", metavar="LOCAL", help="file or directory (default: the key's name)")
    get.set_defaults(func=cmd_get)

    ls = sub.add_parser("ls", help="list objects", description="list a workspace's objects")
    client_options(ls)
    ls.add_argument("workspace", metavar="WS")
    ls.add_argument("prefix", nargs="?", default="", metavar="PREFIX")
    ls.add_argument("--json", action="store_true", help="print JSON instead of a table")
    ls.set_defaults(func=cmd_ls)

    imp = sub.add_parser("import", help="import from a URL", description="pull a remote URL into a workspace")
    client_options(imp)
    imp.add_argument("workspace", metavar="WS")
    imp.add_argument("source_url", metavar="URL")
    imp.add_argument("key_name", metavar="KEY")
    imp.add_argument(
        "--header",
        action="append",
        default=[],
        metavar="NAME:VALUE",
        help="a header for the source, e.g. an EDR's Authorization (repeatable)",
    )
    imp.add_argument("--sha256", help="expected SHA-256 (hex) of the data")
    imp.add_argument("--no-wait", action="store_true", help="start the import and return")
    imp.set_defaults(func=cmd_import)

    watch = sub.add_parser(
        "watch",
        help="follow executions live",
        description="print execution state changes as they happen (the event stream); with an "
        "execution id, until it ends (exit status 0 when COMPLETE, 1 otherwise)",
    )
    client_options(watch)
    watch.add_argument("execution", nargs="?", metavar="EXECUTION_ID")
    watch.add_argument("--workspace", metavar="WS", help="only this workspace's executions")
    watch.add_argument("--json", action="store_true", help="print each execution as a JSON line")
    watch.set_defaults(func=cmd_watch)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result: int = args.func(args)
    except (ConfigError, AssetFileError) as exc:
        print(f"provider: {exc}", file=sys.stderr)
        return 2
    except (CliError, ApiError, DataInUse) as exc:
        print(f"provider: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return result


if __name__ == "__main__":
    sys.exit(main())
