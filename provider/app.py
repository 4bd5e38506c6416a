"""The one place where configuration is wired into backends and services."""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import secrets
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

import sqlalchemy as sa
import yaml
from aiohttp import web
from prometheus_client import CollectorRegistry

from provider import __version__
from provider.aio import Backoff
from provider.api import build_api
from provider.api.context import ApiContext, ConnectorWebhook, EventWebhook
from provider.api.metrics import (
    ComputeCollector,
    HttpMetrics,
    KubernetesMetrics,
    NotificationMetrics,
    OperationsMetrics,
)
from provider.backends.asset_files import read_asset_directory
from provider.backends.compute.local import LocalCompute
from provider.backends.data_lock import DataLock, DataLocks
from provider.backends.http_callbacks import CallbackDestinations, HttpPoster
from provider.backends.http_source import HttpSource
from provider.backends.jwt_tokens import JwtTokenCodec, SigningKey
from provider.backends.sql import SqlStore, default_sqlite_url
from provider.backends.storage.fs import FilesystemStorage
from provider.backends.storage.metered import MeteredStorage
from provider.backends.webhooks import HttpWebhookSender
from provider.config import ConfigError, Settings, resolve_config_path
from provider.domain.addresses import parse_networks
from provider.domain.assets import Asset
from provider.domain.workspaces import Quota
from provider.services import reactions
from provider.services.assets import AssetService
from provider.services.auth import ApiKeyVerifier, Authenticator, PrincipalCache, WorkspaceTokenVerifier
from provider.services.executions import ExecutionPolicy, ExecutionService
from provider.services.imports import ImportService, RetryPolicy
from provider.services.notifications import DeliveryPolicy, DeliveryWorker, EventLog, SubscriptionService
from provider.services.ports import Clock, Compute, Storage, Store
from provider.services.provisioning import ProvisioningPolicy, ProvisioningService
from provider.services.signaling import ControlPlane, Registration, SignalingPolicy, SignalingService
from provider.services.tenants import TenantService
from provider.services.tes import TesService
from provider.services.transfers import TransferService
from provider.services.workspaces import WorkspacePolicy, WorkspaceService
from provider.tracing import Tracing

log = logging.getLogger(__name__)

# A part of the service that starts before the app serves and stops after (aiohttp's cleanup_ctx).
Lifecycle = Callable[[web.Application], AsyncIterator[None]]


def utcnow() -> datetime:
    return datetime.now(UTC)


def openapi_document() -> dict[str, Any]:
    """contracts/openapi.yaml: packaged inside the wheel, or read from the source tree. Parsed
    once per process and file version (it is large); callers must not change it."""
    packaged = Path(__file__).parent / "contracts" / "openapi.yaml"
    source = Path(__file__).resolve().parents[1] / "contracts" / "openapi.yaml"
    path = packaged if packaged.is_file() else source
    return _parsed_yaml(str(path), path.stat().st_mtime_ns)


@functools.cache
def _parsed_yaml(path: str, version: int) -> dict[str, Any]:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when the wheel has it
    document: dict[str, Any] = yaml.load(Path(path).read_text(encoding="utf-8"), Loader=loader)  # noqa: S506 - a safe loader
    return document


@dataclass
class Components:
    """Everything the service is made of, built from one Settings object."""

    settings: Settings
    store: Store
    storage: Storage
    source: HttpSource
    tenants: TenantService
    assets: AssetService
    workspaces: WorkspaceService
    imports: ImportService
    compute: Compute
    executions: ExecutionService
    tes: TesService
    provisioning: ProvisioningService
    transfers: TransferService
    signaling: SignalingService
    poster: HttpPoster
    signaling_poster: HttpPoster
    auth: Authenticator
    events: EventLog
    sender: HttpWebhookSender
    subscriptions: SubscriptionService
    delivery: DeliveryWorker | None
    registry: CollectorRegistry
    notification_metrics: NotificationMetrics
    operations: OperationsMetrics
    tracing: Tracing
    reactions: list[reactions.Reaction]


def build_store(settings: Settings) -> SqlStore:
    url = settings.store.url or default_sqlite_url(settings.data_dir)
    return SqlStore(url, pool_size=settings.store.pool_size, echo=settings.store.echo)


def build_storage(settings: Settings) -> Storage:
    if settings.storage.backend == "s3":
        from provider.backends.storage.s3 import S3Options, S3Storage  # needs the optional aioboto3

        s3 = settings.storage.s3
        return S3Storage(
            S3Options(
                endpoint_url=s3.endpoint_url,
                public_endpoint_url=s3.public_endpoint_url,
                region=s3.region,
                access_key_id=s3.access_key_id,
                secret_access_key=s3.secret_access_key.get_secret_value() if s3.secret_access_key else None,
                addressing_style=s3.addressing_style,
                part_size=s3.part_size_bytes,
                parts_in_flight=s3.parts_in_flight,
                role_arn=s3.sts.role_arn,
                sts_endpoint_url=s3.sts.endpoint_url,
                isolation=s3.sts.mode,
                admin_endpoint_url=s3.sts.admin_endpoint_url,
                check_isolation=s3.sts.check_on_start,
                allow_role_chaining=s3.sts.allow_role_chaining,
                check_duration_seconds=s3.sts.duration_seconds,
                bucket_prefix=s3.bucket_prefix,
                layout=s3.layout,
                shared_buckets=s3.shared_buckets,
            )
        )
    return FilesystemStorage(settings.storage.fs.root or settings.data_dir / "workspaces")


def build_compute(settings: Settings, registry: CollectorRegistry) -> Compute:
    if settings.compute.backend == "kubernetes":
        return build_kubernetes(settings, registry)
    local = settings.compute.local
    # What a TES task's steps must not see of the host (provider/backends/compute/local_program.py).
    config = settings.source_path or resolve_config_path(None)
    hidden = [settings.data_dir, settings.storage.fs.root or settings.data_dir / "workspaces"]
    # Files of secrets the settings name, and a SQLite database kept outside the data directory.
    hidden += [p for p in (settings.server.tls_cert_file, settings.server.tls_key_file) if p is not None]
    url = sa.make_url(settings.store.url) if settings.store.url else None
    if url is not None and url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        hidden.append(Path(str(url.database)).parent)
    if config is not None:
        hidden.append(config)
    return LocalCompute(
        local.root or settings.data_dir / "executions",
        local.max_concurrent,
        settings.compute.per_tenant_max_concurrent,
        local.cancel_grace_seconds,
        local.niceness,
        hidden=tuple(hidden),
    )


def build_kubernetes(settings: Settings, registry: CollectorRegistry) -> Compute:
    # Imported here: the kubernetes extra is needed only when this backend is chosen.
    from provider.backends.compute.kubernetes import JobSettings, KubernetesCompute, KubernetesOptions

    k = settings.compute.kubernetes
    job = JobSettings(
        namespace=k.namespace,
        sidecar_image=k.sidecar_image,
        image_pull_policy=k.image_pull_policy,
        image_pull_secrets=tuple(k.image_pull_secrets),
        service_account=k.service_account,
        runtime_class=k.runtime_class,
        gpu_resource=k.gpu_resource,
        gpu_type_label=k.gpu_type_label,
        scratch=k.scratch,
        scratch_storage_class=k.scratch_storage_class,
        ttl_seconds_after_finished=k.ttl_seconds_after_finished,
        staging_seconds=k.staging_seconds,
    )
    return KubernetesCompute(
        KubernetesOptions(
            job=job,
            kubeconfig=k.kubeconfig,
            context=k.context,
            lease_name=k.lease_name,
            lease_seconds=k.lease_seconds,
            renew_seconds=k.renew_seconds,
            identity=k.identity,
            watch_timeout_seconds=k.watch_timeout_seconds,
            reconcile_seconds=k.reconcile_seconds,
            request_timeout_seconds=k.request_timeout_seconds,
            image_pull_grace_seconds=k.image_pull_grace_seconds,
            pod_create_grace_seconds=k.pod_create_grace_seconds,
        ),
        KubernetesMetrics(registry),
    )


def local_token_secret(data_dir: Path) -> str:
    """The embedded default: a random HS256 secret kept in the data directory (mode 0600).

    Several replicas must share keys instead: configure tokens.signing_keys.
    """
    path = data_dir / "token-signing.key"
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(secrets.token_urlsafe(48))
    return path.read_text().strip()


def build_token_codec(settings: Settings, clock: Clock = utcnow) -> JwtTokenCodec:
    keys: list[SigningKey] = []
    for key in settings.tokens.signing_keys:
        if key.algorithm == "HS256":
            assert key.secret is not None
            secret = key.secret.get_secret_value()
            keys.append(SigningKey(key.kid, "HS256", secret, secret))
        else:
            assert key.public_key_file is not None
            private = key.private_key_file.read_bytes() if key.private_key_file else None
            keys.append(SigningKey(key.kid, "RS256", private, key.public_key_file.read_bytes()))
    if not keys:
        secret = local_token_secret(settings.data_dir)
        keys.append(SigningKey("local", "HS256", secret, secret))
    return JwtTokenCodec(keys, issuer=settings.public_url, audience=settings.tokens.audience, clock=clock)


def build_delivery_policy(settings: Settings) -> DeliveryPolicy:
    n = settings.notifications
    return DeliveryPolicy(
        max_attempts=n.max_attempts,
        max_age_seconds=n.max_age_seconds,
        backoff_seconds=n.backoff_seconds,
        max_backoff_seconds=n.max_backoff_seconds,
        concurrency=n.concurrency,
        batch_size=n.batch_size,
        poll_seconds=n.poll_seconds,
        lease_seconds=n.lease_seconds,
        retention_seconds=n.retention_seconds,
    )


def build_components(
    settings: Settings,
    store: SqlStore | None = None,
    compute: Compute | None = None,
    clock: Clock = utcnow,
    storage: Storage | None = None,
) -> Components:
    """Every component; `compute` and `storage` replace the configured backends (benchmarks
    drive their own, service tests use fakes), and `clock` the wall clock (tests move time
    forward instead of waiting for it)."""
    store = store or build_store(settings)
    tracing = Tracing(
        settings.tracing.otlp_endpoint,
        settings.tracing.service_name,
        settings.tracing.sample_ratio,
        settings.tracing.headers,
        __version__,
    )
    store.tracing = tracing
    registry = CollectorRegistry()
    operations = OperationsMetrics(registry, backend=settings.compute.backend)
    metered = MeteredStorage(storage or build_storage(settings), operations.storage_failed)
    storage = cast(Storage, tracing.traced(metered, "storage"))
    events = EventLog(clock)
    notifications = settings.notifications
    sender = HttpWebhookSender(
        parse_networks(notifications.allowed_networks),
        notifications.allow_http,
        notifications.timeout_seconds,
        notifications.concurrency,
    )
    subscriptions = SubscriptionService(store, sender, events, clock)
    notification_metrics = NotificationMetrics(registry)
    delivery = (
        DeliveryWorker(store, sender, events, clock, build_delivery_policy(settings), notification_metrics)
        if notifications.deliver
        else None
    )
    codec = build_token_codec(settings, clock)
    key_cache = PrincipalCache(settings.auth.key_cache_seconds)
    token_cache = PrincipalCache(settings.auth.key_cache_seconds)
    tenants = TenantService(
        store,
        clock,
        settings.auth.operator_participant_id,
        settings.auth.operator_display_name,
    )
    location_prefix = settings.storage.s3.bucket_prefix if settings.storage.backend == "s3" else ""
    workspaces = WorkspaceService(
        store,
        storage,
        codec,
        clock,
        WorkspacePolicy(
            quota=Quota(settings.workspaces.quota_bytes, settings.workspaces.quota_objects),
            location_prefix=location_prefix,
            default_token_ttl=settings.tokens.default_ttl_seconds,
            max_token_ttl=settings.tokens.max_ttl_seconds,
            credentials_duration=settings.storage.s3.sts.duration_seconds,
            presign_seconds=settings.storage.presign_seconds,
        ),
        events=events,
    )
    source = HttpSource(
        parse_networks(settings.imports.allowed_networks),
        list(settings.imports.allowed_schemes),
        settings.imports.connect_timeout_seconds,
        settings.imports.read_timeout_seconds,
    )
    imports = ImportService(
        store,
        workspaces,
        source,
        clock,
        RetryPolicy(settings.imports.max_attempts, settings.imports.backoff_seconds),
        settings.imports.max_concurrent,
        events,
    )
    assets = AssetService(store, clock)
    compute = compute or build_compute(settings, registry)
    executions = ExecutionService(
        store,
        tracing.traced(compute, "compute"),
        storage,
        workspaces,
        assets,
        clock,
        ExecutionPolicy(
            api_url=settings.compute.api_url or settings.public_url,
            token_margin_seconds=settings.executions.credential_margin_seconds,
            max_wait_seconds=settings.executions.max_wait_seconds,
            cache_seconds=settings.executions.cache_seconds,
            max_attempts=settings.executions.retry.max_attempts,
            retry_backoff_seconds=settings.executions.retry.backoff_seconds,
            retry_max_backoff_seconds=settings.executions.retry.max_backoff_seconds,
        ),
        events,
        subscriptions,
    )
    edc = settings.edc
    poster = HttpPoster(
        edc.callback_timeout_seconds,
        {
            name: CallbackDestinations(frozenset(c.callback_hosts), parse_networks(c.callback_networks))
            for name, c in edc.connectors.items()
        },
    )
    provisioning = ProvisioningService(
        store,
        tenants,
        workspaces,
        executions,
        storage,
        poster,
        clock,
        ProvisioningPolicy(
            public_url=settings.public_url,
            deadline_seconds=edc.callback_deadline_seconds,
            backoff_seconds=edc.callback_backoff_seconds,
            max_backoff_seconds=edc.callback_max_backoff_seconds,
            retention_seconds=edc.retention_seconds,
            access_token_ttl_seconds=edc.access_token_ttl_seconds,
            content_address=edc.content_address,
            api_keys={
                name: c.management_api_key.get_secret_value()
                for name, c in edc.connectors.items()
                if c.management_api_key is not None
            },
            dataplane_assets={name: frozenset(c.dataplane_assets) for name, c in edc.connectors.items()},
        ),
        assets,
    )
    signaling_poster = HttpPoster(
        edc.callback_timeout_seconds,
        {
            name: CallbackDestinations(frozenset(c.callback_hosts), parse_networks(c.callback_networks))
            for name, c in settings.signaling.control_planes.items()
        },
    )
    signaling = build_signaling(
        settings, store, tenants, assets, workspaces, executions, imports, signaling_poster, clock
    )
    tes = TesService(
        store,
        storage,
        assets,
        workspaces,
        executions,
        imports,
        clock,
        step_errors_ignorable=compute.step_errors_ignorable,
        organization=(settings.tes.organization_name, settings.tes.organization_url or settings.public_url),
        service_id=settings.tes.service_id,
        version=__version__,
    )
    operations.backend = compute.name
    registry.register(ComputeCollector(compute))
    executions.shared.listeners.append(operations.execution_changed)
    imports.listeners.append(operations.import_changed)
    wired = reactions.wire(tenants, workspaces, imports, executions, key_cache, token_cache, signaling, tes)
    return Components(
        settings=settings,
        store=store,
        storage=storage,
        source=source,
        tenants=tenants,
        assets=assets,
        workspaces=workspaces,
        imports=imports,
        compute=compute,
        executions=executions,
        tes=tes,
        provisioning=provisioning,
        transfers=TransferService(
            store, workspaces, imports, clock, frozenset(settings.edc.events.participants)
        ),
        signaling=signaling,
        poster=poster,
        signaling_poster=signaling_poster,
        auth=Authenticator(
            [
                WorkspaceTokenVerifier(store, codec, clock, token_cache),
                ApiKeyVerifier(store, clock, key_cache),
            ]
        ),
        events=events,
        sender=sender,
        subscriptions=subscriptions,
        delivery=delivery,
        registry=registry,
        notification_metrics=notification_metrics,
        operations=operations,
        tracing=tracing,
        reactions=wired,
    )


def build_signaling(
    settings: Settings,
    store: Store,
    tenants: TenantService,
    assets: AssetService,
    workspaces: WorkspaceService,
    executions: ExecutionService,
    imports: ImportService,
    poster: HttpPoster,
    clock: Clock,
) -> SignalingService:
    s = settings.signaling
    if s.control_planes and not settings.public_url.startswith("https://"):
        raise ConfigError(
            "server.public_url: must be an https:// URL when signaling.control_planes is set "
            "(the data addresses of data flows point at it, and the HTTP profile requires HTTPS)"
        )
    policy = SignalingPolicy(
        public_url=settings.public_url,
        control_planes={
            name: ControlPlane(
                name,
                c.secret.get_secret_value(),
                str(c.endpoint).rstrip("/") if c.endpoint else None,
                c.callback_token.get_secret_value() if c.callback_token else None,
                frozenset(c.participants),
                Registration(
                    str(c.registration.url).rstrip("/"),
                    c.registration.authorization,
                    tuple(c.registration.labels),
                )
                if c.registration
                else None,
            )
            for name, c in s.control_planes.items()
        },
        token_ttl_seconds=s.token_ttl_seconds,
        http_networks=tuple(parse_networks(s.http_networks)),
        notice_max_attempts=s.notice_max_attempts,
        notice_backoff=Backoff(s.notice_backoff_seconds, s.notice_max_backoff_seconds),
        retention_seconds=s.retention_seconds,
        dataplane_id=s.dataplane_id or f"provider-{urlsplit(settings.public_url).hostname}",
        complete_after_idle_seconds=s.complete_after_idle_seconds,
    )
    return SignalingService(store, tenants, assets, workspaces, executions, imports, poster, clock, policy)


async def prepare_store(components: Components) -> None:
    """Migrate (or check the schema), then apply the bootstrap admin key."""
    settings = components.settings
    await components.store.prepare(settings.store.migrate_on_start)
    key = settings.auth.bootstrap_admin_key
    if key is not None and await components.tenants.register_bootstrap_key(key.get_secret_value()):
        log.info("bootstrap admin key registered")


def local_data_locks(store: Store, compute: Compute) -> DataLocks:
    """The local data that this service alone may use while it runs: a SQLite database, and the
    local compute backend's directory (another service would take its jobs for lost and delete
    them). PostgreSQL, S3 and the filesystem storage's directory may be shared by replicas."""
    locks = []
    database = store.local_file()
    if database is not None:
        locks.append(DataLock(database.with_name(database.name + ".lock"), f"the SQLite database {database}"))
    if isinstance(compute, LocalCompute):
        locks.append(DataLock(compute.root / ".lock", f"the local compute directory {compute.root}"))
    return DataLocks(locks)


def read_assets(settings: Settings) -> list[Asset]:
    """Asset files are read before start-up so that a bad one stops the process at once."""
    directory = settings.assets.directory
    if not directory.is_dir():
        log.warning("asset directory %s does not exist; no assets loaded from files", directory)
        return []
    return read_asset_directory(directory)


def create_app(
    settings: Settings,
    store: SqlStore | None = None,
    compute: Compute | None = None,
    clock: Clock = utcnow,
) -> web.Application:
    asset_files = read_assets(settings)
    components = build_components(settings, store, compute, clock)
    context = ApiContext(
        store=components.store,
        auth=components.auth,
        tenants=components.tenants,
        assets=components.assets,
        workspaces=components.workspaces,
        imports=components.imports,
        executions=components.executions,
        tes=components.tes,
        provisioning=components.provisioning,
        edc_connectors={
            name: ConnectorWebhook(c.secret.get_secret_value(), tuple(parse_networks(c.allowed_networks)))
            for name, c in settings.edc.connectors.items()
        },
        edc_events=EventWebhook(
            settings.edc.events.auth_key,
            settings.edc.events.auth_code.get_secret_value() if settings.edc.events.auth_code else None,
        ),
        transfers=components.transfers,
        signaling=components.signaling,
        storage_backend=components.storage.name,
        metrics=HttpMetrics(components.registry),
        subscriptions=components.subscriptions,
        notification_metrics=components.notification_metrics,
        operations=components.operations,
        tracing=components.tracing,
        stream_poll_seconds=settings.notifications.poll_seconds,
        stream_heartbeat_seconds=settings.notifications.stream_heartbeat_seconds,
        body_idle_timeout_seconds=settings.server.body_idle_timeout_seconds,
        openapi=openapi_document(),
        public_url=settings.public_url,
        dependencies={  # looked up at each check, so that a replaced backend is the one checked
            "store": lambda: components.store.ping(),
            "storage": lambda: components.storage.ping(),
            "compute": lambda: components.compute.ping(),
        },
    )
    app = build_api(context, settings.server.max_body_bytes, settings.server.header_timeout_seconds)
    app.cleanup_ctx.extend(lifecycles(components, asset_files))
    return app


def lifecycles(components: Components, asset_files: list[Asset]) -> list[Lifecycle]:
    """Each part's start with its stop, in start order; aiohttp stops them in reverse, and stops
    the ones already started when a later one fails to start."""
    c = components
    locks = local_data_locks(c.store, c.compute)

    async def local_data(_: web.Application) -> AsyncIterator[None]:
        locks.acquire()  # before anything reads or changes the data: it may be another's
        yield
        locks.release()  # last of all: the jobs are gone by now

    async def store(_: web.Application) -> AsyncIterator[None]:
        try:
            await prepare_store(c)
            yield
        finally:
            await c.store.close()
            await asyncio.to_thread(c.tracing.shutdown)  # the last spans go out

    async def storage(_: web.Application) -> AsyncIterator[None]:
        try:
            await c.storage.verify()
            yield
        finally:
            await c.storage.close()

    async def outbound(_: web.Application) -> AsyncIterator[None]:
        yield
        await c.sender.close()
        await c.poster.close()
        await c.signaling_poster.close()
        await c.source.close()

    async def workspaces_and_imports(_: web.Application) -> AsyncIterator[None]:
        count = await c.assets.load(asset_files)
        await c.workspaces.resume()
        resumed = await c.imports.resume()
        log.info(
            "catalog loaded, imports resumed", extra={"assets_loaded": count, "imports_resumed": resumed}
        )
        yield
        await c.tes.stop()
        await c.imports.stop()

    async def compute(_: web.Application) -> AsyncIterator[None]:
        await c.compute.start(c.executions.on_event, c.executions.reconcile)
        await c.tes.resume()  # tasks whose inputs arrived meanwhile go to the started backend
        yield
        await c.executions.stop()
        await c.compute.stop()

    async def background(_: web.Application) -> AsyncIterator[None]:
        c.provisioning.start()
        recovered = await c.signaling.recover()
        if recovered:
            log.info("data flows whose import ended while stopped", extra={"count": recovered})
        c.signaling.start_worker()
        if c.delivery is not None:
            c.delivery.start()
        log.info("service ready", extra={"public_url": c.settings.public_url})
        yield
        if c.delivery is not None:
            await c.delivery.stop()
        await c.signaling.stop()
        await c.provisioning.stop()

    return [local_data, store, storage, outbound, workspaces_and_imports, compute, background]
