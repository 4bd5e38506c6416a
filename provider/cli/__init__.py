"""The `provider` command line: run the service, manage its store, and talk to a running one.

This module only builds the parser: each command's module (server.py, client.py,
executions.py, access.py) is imported when that command runs, so that `provider --help` starts
at once.
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
    parser.add_argument(
        "--debug",
        action="store_true",
        default=os.environ.get("PROVIDER_DEBUG") == "1",
        help="show the Python traceback of any error (default: $PROVIDER_DEBUG=1)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def server_command(name: str, help_text: str) -> argparse.ArgumentParser:
        command = sub.add_parser(name, help=help_text, description=help_text)
        command.add_argument(
            "--config", help="YAML configuration file (default: $PROVIDER_CONFIG, else config/provider.yaml)"
        )
        return command

    def client_options(command: argparse.ArgumentParser, json_option: bool = False) -> None:
        if json_option:
            command.add_argument("--json", action="store_true", help="print JSON instead of text")
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

    def transfer_options(command: argparse.ArgumentParser) -> None:
        command.add_argument(
            "--parallel", type=_positive, default=4, help="files at a time for folders (default 4)"
        )
        command.add_argument(
            "--resume",
            action="store_true",
            help="skip the files of a folder already at the other end with the same size and a time no "
            "older than the source's (a quick check, as rsync's: a changed file of the same size and an "
            "older time is skipped too)",
        )

    put = sub.add_parser(
        "put",
        help="upload a file, a folder or standard input",
        description="upload a local file, a whole folder (recursive, parallel; --resume skips the files "
        "already there) or standard input (LOCAL '-') into a workspace",
    )
    client_options(put)
    put.add_argument("workspace", metavar="WS")
    put.add_argument("local", metavar="LOCAL", help="a file, a folder, or - for standard input")
    put.add_argument(
        "key_name", nargs="?", metavar="KEY", help="object key, or prefix for a folder (default: the name)"
    )
    transfer_options(put)
    put.set_defaults(func="client.cmd_put")

    get = sub.add_parser(
        "get",
        help="download an object or a folder",
        description="download an object, every object under a KEY ending in '/' (into a folder), or "
        "an object to standard output (LOCAL '-')",
    )
    client_options(get)
    get.add_argument("workspace", metavar="WS")
    get.add_argument("key_name", metavar="KEY", help="an object key, or a prefix ending in '/'")
    get.add_argument(
        "local",
        nargs="?",
        metavar="LOCAL",
        help="file or folder (default: the key's name); - for standard output",
    )
    transfer_options(get)
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

    run = sub.add_parser(
        "run",
        help="run an asset on local files or workspace objects",
        description="upload local inputs, start an execution of ASSET, and with --wait follow it live and "
        "download its outputs. Exit status with --wait: 0 COMPLETE, 3 EXECUTOR_ERROR, 4 SYSTEM_ERROR, "
        "5 CANCELED (1: a refused request, 2: a bad configuration)",
    )
    client_options(run, json_option=True)
    run.add_argument("asset", metavar="ASSET")
    run.add_argument("--workspace", metavar="WS", help="default: a new workspace")
    run.add_argument(
        "--input",
        action="append",
        default=[],
        metavar="NAME=LOCAL_PATH|KEY",
        help="an input: a local file or folder (uploaded under inputs/NAME/) or an object key (repeatable)",
    )
    run.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a variable the asset allows (repeatable)",
    )
    run.add_argument("--label", action="append", default=[], metavar="KEY=VALUE", help="a label (repeatable)")
    run.add_argument("--wait", action="store_true", help="follow the execution until it ends")
    run.add_argument(
        "--download", metavar="DIR", help="download the outputs into DIR when COMPLETE (implies --wait)"
    )
    run.add_argument(
        "--parallel", type=_positive, default=4, help="files at a time for folder inputs (default 4)"
    )
    run.set_defaults(func="executions.cmd_run")

    executions = sub.add_parser(
        "executions", help="executions", description="list, inspect and cancel executions"
    )
    executions_sub = executions.add_subparsers(dest="executions_command", required=True, metavar="COMMAND")
    listing = executions_sub.add_parser("list", help="list executions, newest first")
    client_options(listing, json_option=True)
    listing.add_argument("--state", help="only this state")
    listing.add_argument("--asset", help="only this asset")
    listing.add_argument("--workspace", metavar="WS", help="only this workspace")
    listing.add_argument("--limit", type=int, default=100, help="at most this many (default 100)")
    listing.set_defaults(func="executions.cmd_list")
    shown = executions_sub.add_parser("get", help="one execution with its history and outputs")
    client_options(shown, json_option=True)
    shown.add_argument("execution", metavar="EXECUTION_ID")
    shown.set_defaults(func="executions.cmd_get")
    cancel = executions_sub.add_parser("cancel", help="cancel executions")
    client_options(cancel)
    cancel.add_argument("executions", nargs="+", metavar="EXECUTION_ID")
    cancel.set_defaults(func="executions.cmd_cancel")
    logs = executions_sub.add_parser("logs", help="the worker's output")
    client_options(logs)
    logs.add_argument("execution", metavar="EXECUTION_ID")
    logs.add_argument("-f", "--follow", action="store_true", help="keep printing until the execution ends")
    logs.add_argument("--tail", type=int, help="only the last N lines")
    logs.add_argument("--attempt", type=int, help="an earlier attempt's log")
    logs.set_defaults(func="executions.cmd_logs")
    outputs = executions_sub.add_parser("outputs", help="the outputs with sizes and checksums")
    client_options(outputs, json_option=True)
    outputs.add_argument("execution", metavar="EXECUTION_ID")
    outputs.add_argument("--download", metavar="DIR", help="download them into DIR")
    outputs.set_defaults(func="executions.cmd_outputs")

    tenants = sub.add_parser(
        "tenants", help="tenants (admin)", description="tenants: one per data space participant"
    )
    tenants_sub = tenants.add_subparsers(dest="tenants_command", required=True, metavar="COMMAND")
    listing = tenants_sub.add_parser("list", help="list tenants")
    client_options(listing, json_option=True)
    listing.set_defaults(func="access.cmd_tenants_list")
    create = tenants_sub.add_parser("create", help="create a tenant")
    client_options(create, json_option=True)
    create.add_argument("participant_id", metavar="PARTICIPANT_ID")
    create.add_argument("--name", help="display name (default: the participant id)")
    create.add_argument("--allow", nargs="*", metavar="ASSET", help="limit the tenant to these assets")
    create.set_defaults(func="access.cmd_tenants_create")
    shown = tenants_sub.add_parser("get", help="one tenant")
    client_options(shown, json_option=True)
    shown.add_argument("tenant", metavar="TENANT_ID")
    shown.set_defaults(func="access.cmd_tenants_get")

    keys = sub.add_parser(
        "keys", help="API keys of a tenant (admin)", description="API keys of a tenant (admin)"
    )
    keys_sub = keys.add_subparsers(dest="keys_command", required=True, metavar="COMMAND")
    listing = keys_sub.add_parser("list", help="list a tenant's keys (never the keys themselves)")
    client_options(listing, json_option=True)
    listing.add_argument("tenant", metavar="TENANT_ID")
    listing.set_defaults(func="access.cmd_keys_list")
    create = keys_sub.add_parser("create", help="issue a key and print it (shown only now)")
    client_options(create, json_option=True)
    create.add_argument("tenant", metavar="TENANT_ID")
    create.add_argument("--role", choices=("consumer", "admin"), default="consumer")
    create.add_argument("--name", default="", help="a name for people")
    create.add_argument("--expires-at", help="expiry, ISO 8601 with a time zone")
    create.set_defaults(func="access.cmd_keys_create")
    revoke = keys_sub.add_parser("revoke", help="revoke keys: they stop working at once")
    client_options(revoke)
    revoke.add_argument("tenant", metavar="TENANT_ID")
    revoke.add_argument("keys", nargs="+", metavar="KEY_ID")
    revoke.set_defaults(func="access.cmd_keys_revoke")

    tokens = sub.add_parser("tokens", help="workspace tokens", description="tokens that open one workspace")
    tokens_sub = tokens.add_subparsers(dest="tokens_command", required=True, metavar="COMMAND")
    listing = tokens_sub.add_parser("list", help="list a workspace's tokens (never the tokens themselves)")
    client_options(listing, json_option=True)
    listing.add_argument("workspace", metavar="WS")
    listing.set_defaults(func="access.cmd_tokens_list")
    create = tokens_sub.add_parser("create", help="issue a token and print it (shown only now)")
    client_options(create, json_option=True)
    create.add_argument("workspace", metavar="WS")
    create.add_argument("--scope", action="append", default=[], help="a scope (repeatable; default: all)")
    create.add_argument("--ttl", type=int, help="lifetime in seconds")
    create.add_argument("--name", default="", help="a name for people")
    create.set_defaults(func="access.cmd_tokens_create")
    revoke = tokens_sub.add_parser("revoke", help="revoke tokens")
    client_options(revoke)
    revoke.add_argument("workspace", metavar="WS")
    revoke.add_argument("tokens", nargs="+", metavar="TOKEN_ID")
    revoke.set_defaults(func="access.cmd_tokens_revoke")

    subscriptions = sub.add_parser(
        "subscriptions", help="webhook subscriptions", description="signed webhooks and their deliveries"
    )
    subscriptions_sub = subscriptions.add_subparsers(
        dest="subscriptions_command", required=True, metavar="COMMAND"
    )
    listing = subscriptions_sub.add_parser("list", help="list subscriptions")
    client_options(listing, json_option=True)
    listing.set_defaults(func="access.cmd_subscriptions_list")
    create = subscriptions_sub.add_parser("create", help="subscribe a URL; prints its id and secret")
    client_options(create, json_option=True)
    create.add_argument("hook_url", metavar="URL", help="the receiver's URL")
    create.add_argument(
        "--event", action="append", default=[], help="an event pattern (repeatable; default execution.*)"
    )
    create.add_argument("--workspace", metavar="WS", help="only this workspace's events")
    create.add_argument("--execution", metavar="EXECUTION_ID", help="only this execution's events")
    create.add_argument(
        "--label", action="append", default=[], metavar="KEY=VALUE", help="executions with this label"
    )
    create.set_defaults(func="access.cmd_subscriptions_create")
    remove = subscriptions_sub.add_parser("rm", help="delete subscriptions with their deliveries")
    client_options(remove)
    remove.add_argument("subscriptions", nargs="+", metavar="SUBSCRIPTION_ID")
    remove.set_defaults(func="access.cmd_subscriptions_rm")
    deliveries = subscriptions_sub.add_parser("deliveries", help="a subscription's deliveries, oldest first")
    client_options(deliveries, json_option=True)
    deliveries.add_argument("subscription", metavar="SUBSCRIPTION_ID")
    deliveries.add_argument("--state", choices=("pending", "succeeded", "dead"), help="only this state")
    deliveries.set_defaults(func="access.cmd_subscriptions_deliveries")
    retry = subscriptions_sub.add_parser("retry", help="queue a dead letter again")
    client_options(retry, json_option=True)
    retry.add_argument("subscription", metavar="SUBSCRIPTION_ID")
    retry.add_argument("delivery", metavar="DELIVERY_ID")
    retry.set_defaults(func="access.cmd_subscriptions_retry")

    completion = sub.add_parser(
        "completion",
        help="print a shell completion script",
        description='print a completion script: eval "$(provider completion bash)" in ~/.bashrc, or '
        'provider completion zsh > "${fpath[1]}/_provider"',
    )
    completion.add_argument("shell", choices=("bash", "zsh"))
    completion.set_defaults(func=cmd_completion)
    return parser


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not at least 1")
    return value


def cmd_version(args: argparse.Namespace) -> int:
    print(f"provider {__version__}")
    return 0


def cmd_completion(args: argparse.Namespace) -> int:
    import shtab

    print(shtab.complete(build_parser(), shell=args.shell))
    return 0


def _exit_status(exc: BaseException) -> int | None:
    """1 or 2 for a user's mistake or an unreachable service, reported in one line; None for a
    bug, which keeps its traceback."""
    import aiohttp

    from provider.backends.asset_files import AssetFileError
    from provider.backends.data_lock import DataInUse
    from provider.cli.common import CliError
    from provider.client import ApiError
    from provider.config import ConfigError

    if isinstance(exc, ConfigError | AssetFileError):
        return 2
    if isinstance(exc, CliError | ApiError | DataInUse | aiohttp.ClientError | OSError):
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
        if status is None or args.debug:
            raise
        print(f"provider: {exc or type(exc).__name__}", file=sys.stderr)
        return status
    return result


if __name__ == "__main__":
    sys.exit(main())
