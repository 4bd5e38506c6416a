"""The `provider` command line: run the service, manage its store, and talk to a running one.

This module only builds the parser: each command's module (server.py, client.py) is imported
when that command runs, so that `provider --help` starts at once.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from provider import __version__

DEFAULT_URL = "http://127.0.0.1:8080"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="provider", description="Compute-to-data backend for data spaces.")
    parser.add_argument("--version", action="version", version=f"provider {__version__}")
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
    serve.set_defaults(func="server.cmd_serve")

    server_command("migrate", "bring the database schema up to date").set_defaults(func="server.cmd_migrate")
    server_command("init", "migrate and create the first admin API key (printed once)").set_defaults(
        func="server.cmd_init"
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
    demo.set_defaults(func="server.cmd_demo")
    version = sub.add_parser("version", help="print the version", description="print the version")
    version.set_defaults(func=cmd_version)

    assets = sub.add_parser("assets", help="the asset catalog", description="the asset catalog")
    assets_sub = assets.add_subparsers(dest="assets_command", required=True, metavar="COMMAND")
    listing = assets_sub.add_parser("list", help="list the assets of a running service")
    client_options(listing)
    listing.add_argument("--json", action="store_true", help="print JSON instead of a table")
    listing.set_defaults(func="client.cmd_assets_list")
    validate = assets_sub.add_parser("validate", help="check asset files without a service")
    validate.add_argument("files", nargs="+", metavar="FILE")
    validate.set_defaults(func="server.cmd_assets_validate")

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
    create.set_defaults(func="client.cmd_workspace_create")
    listing = workspace_sub.add_parser("list", help="list workspaces with their usage")
    client_options(listing)
    listing.add_argument("--json", action="store_true", help="print JSON instead of a table")
    listing.set_defaults(func="client.cmd_workspace_list")
    remove = workspace_sub.add_parser(
        "rm", help="delete workspaces: revokes their tokens, removes their data"
    )
    client_options(remove)
    remove.add_argument("workspaces", nargs="+", metavar="WS")
    remove.set_defaults(func="client.cmd_workspace_rm")

    put = sub.add_parser("put", help="upload a file", description="upload a local file into a workspace")
    client_options(put)
    put.add_argument("workspace", metavar="WS")
    put.add_argument("local", metavar="LOCAL")
    put.add_argument("key_name", nargs="?", metavar="KEY", help="object key (default: the file name)")
    put.set_defaults(func="client.cmd_put")

    get = sub.add_parser("get", help="download an object", description="download an object from a workspace")
    client_options(get)
    get.add_argument("workspace", metavar="WS")
    get.add_argument("key_name", metavar="KEY")
    get.add_argument("local", nargs="?", metavar="LOCAL", help="file or directory (default: the key's name)")
    get.set_defaults(func="client.cmd_get")

    ls = sub.add_parser("ls", help="list objects", description="list a workspace's objects")
    client_options(ls)
    ls.add_argument("workspace", metavar="WS")
    ls.add_argument("prefix", nargs="?", default="", metavar="PREFIX")
    ls.add_argument("--json", action="store_true", help="print JSON instead of a table")
    ls.set_defaults(func="client.cmd_ls")

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
    imp.set_defaults(func="client.cmd_import")

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
    watch.set_defaults(func="client.cmd_watch")
    return parser


def cmd_version(args: argparse.Namespace) -> int:
    print(f"provider {__version__}")
    return 0


def _exit_status(exc: BaseException) -> int | None:
    """1 or 2 for a user's mistake, reported in one line; None for a bug, which keeps its traceback."""
    from provider.backends.asset_files import AssetFileError
    from provider.backends.data_lock import DataInUse
    from provider.cli.common import CliError
    from provider.client import ApiError
    from provider.config import ConfigError

    if isinstance(exc, ConfigError | AssetFileError):
        return 2
    if isinstance(exc, CliError | ApiError | DataInUse):
        return 1
    return None


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if callable(args.func):
            command = args.func
        else:  # "module.function": that command's module is imported only now
            module, name = args.func.split(".")
            command = getattr(importlib.import_module(f"provider.cli.{module}"), name)
        result: int = command(args)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        status = _exit_status(exc)
        if status is None:
            raise
        print(f"provider: {exc}", file=sys.stderr)
        return status
    return result


if __name__ == "__main__":
    sys.exit(main())
