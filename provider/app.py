"""The one place where configuration is wired into backends and services."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web
from prometheus_client import CollectorRegistry

from provider.api import build_api
from provider.api.context import ApiContext
from provider.api.metrics import HttpMetrics
from provider.backends.asset_files import read_asset_directory
from provider.backends.sql import SqlStore, default_sqlite_url
from provider.backends.sql import migrate as migrations
from provider.config import Settings
from provider.domain.assets import Asset
from provider.services.assets import AssetService
from provider.services.auth import ApiKeyVerifier, Authenticator
from provider.services.tenants import TenantService

log = logging.getLogger(__name__)


def utcnow() -> datetime:
    return datetime.now(UTC)


def openapi_document() -> dict[str, Any]:
    """contracts/openapi.yaml: packaged inside the wheel, or read from the source tree."""
    packaged = Path(__file__).parent / "contracts" / "openapi.yaml"
    source = Path(__file__).resolve().parents[1] / "contracts" / "openapi.yaml"
    path = packaged if packaged.is_file() else source
    document: dict[str, Any] = yaml.safe_load(path.read_text(encoding="utf-8"))
    return document


@dataclass
class Components:
    """Everything the service is made of, built from one Settings object."""

    settings: Settings
    store: SqlStore
    tenants: TenantService
    assets: AssetService
    auth: Authenticator


def build_store(settings: Settings) -> SqlStore:
    url = settings.store.url or default_sqlite_url(settings.data_dir)
    return SqlStore(url, pool_size=settings.store.pool_size, echo=settings.store.echo)


def build_components(settings: Settings, store: SqlStore | None = None) -> Components:
    store = store or build_store(settings)
    keys = ApiKeyVerifier(store, utcnow, cache_seconds=settings.auth.key_cache_seconds)
    tenants = TenantService(
        store,
        utcnow,
        settings.auth.operator_participant_id,
        settings.auth.operator_display_name,
        on_key_revoked=keys.forget,
    )
    return Components(
        settings=settings,
        store=store,
        tenants=tenants,
        assets=AssetService(store, utcnow),
        auth=Authenticator([keys]),
    )


async def prepare_store(components: Components) -> None:
    """Migrate (or check the schema), then apply the bootstrap admin key."""
    store, settings = components.store, components.settings
    if settings.store.migrate_on_start:
        await migrations.upgrade(store)
    else:
        current, head = await migrations.current_revision(store), migrations.head_revision()
        if current != head:
            raise RuntimeError(
                f"database schema is at {current}, the service needs {head}: run 'provider migrate'"
            )
    key = settings.auth.bootstrap_admin_key
    if key is not None and await components.tenants.register_bootstrap_key(key.get_secret_value()):
        log.info("bootstrap admin key registered")


def read_assets(settings: Settings) -> list[Asset]:
    """Asset files are read before start-up so that a bad one stops the process at once."""
    directory = settings.assets.directory
    if not directory.is_dir():
        log.warning("asset directory %s does not exist; no assets loaded from files", directory)
        return []
    return read_asset_directory(directory)


def create_app(settings: Settings, store: SqlStore | None = None) -> web.Application:
    asset_files = read_assets(settings)
    components = build_components(settings, store)
    context = ApiContext(
        store=components.store,
        auth=components.auth,
        tenants=components.tenants,
        assets=components.assets,
        metrics=HttpMetrics(CollectorRegistry()),
        openapi=openapi_document(),
        public_url=settings.public_url,
    )
    app = build_api(context, settings.server.max_body_bytes)

    async def startup(_: web.Application) -> None:
        await prepare_store(components)
        count = await components.assets.load(asset_files)
        log.info("service ready", extra={"assets_loaded": count, "public_url": settings.public_url})

    async def cleanup(_: web.Application) -> None:
        await components.store.close()

    app.on_startup.append(startup)
    app.on_cleanup.append(cleanup)
    return app
