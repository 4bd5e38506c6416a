"""The `provider` command line: run the service, manage its store, and talk to a running one."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from provider import __version__
from provider.backends.asset_files import AssetFileError
from provider.config import ConfigError, Settings, load_settings

DEFAULT_URL = "http://127.0.0.1:8080"


class CliError(Exception):
    """A failure to report in one line, with exit status 1."""


def _settings(args: argparse.Namespace, **overrides: Any) -> Settings:
    return load_settings(args.config, **overrides)


# --- server-side commands -------------------------------------------------------------------


def cmd_serve(args: argparse.Namespace) -> int:
    from aiohttp import web

    from provider.app import create_app
    from provider.logs import configure_logging

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
    web.run_app(
        app,
        host=settings.server.host,
        port=settings.server.port,
        print=None,
        access_log=None,
        shutdown_timeout=settings.server.shutdown_timeout_seconds,
    )
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


async def _request(args: argparse.Namespace, method: str, path: str, **kwargs: Any) -> Any:
    import aiohttp

    if not args.key:
        raise CliError("no API key: pass --key or set PROVIDER_API_KEY")
    headers = {"Authorization": f"Bearer {args.key}"}
    url = args.url.rstrip("/") + path
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session,
            session.request(method, url, headers=headers, **kwargs) as response,
        ):
            body = await response.json(content_type=None) if response.content_length != 0 else None
            if response.status >= 400:
                detail = body.get("detail") if isinstance(body, dict) else None
                raise CliError(f"{method} {path} failed with {response.status}: {detail or response.reason}")
            return body
    except aiohttp.ClientConnectionError as exc:
        raise CliError(f"cannot reach the service at {args.url}: {exc}") from exc


def cmd_assets_list(args: argparse.Namespace) -> int:
    async def run() -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        token: str | None = None
        while True:
            params = {"page_size": "200", **({"page_token": token} if token else {})}
            page = await _request(args, "GET", "/api/v1/assets", params=params)
            items.extend(page["items"])
            token = page["next_page_token"]
            if not token:
                return items

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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result: int = args.func(args)
    except (ConfigError, AssetFileError) as exc:
        print(f"provider: {exc}", file=sys.stderr)
        return 2
    except CliError as exc:
        print(f"provider: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return result


if __name__ == "__main__":
    sys.exit(main())
