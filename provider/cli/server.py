"""Commands that run or prepare the service itself, on this machine: serve, migrate, init, demo."""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
from pathlib import Path
from typing import Any

from provider import __version__
from provider.backends.asset_files import AssetFileError
from provider.cli.common import CliError, _settings
from provider.config import Settings


def cmd_serve(args: argparse.Namespace) -> int:
    # Start-up allocates hundreds of thousands of objects that live as long as the process: the
    # collector's passes over them are wasted, so it rests until serving begins and
    # provider.server.settle_garbage_collector freezes them (a quicker restart).
    gc.disable()
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
