"""What the HTTP layer needs from the rest of the application, handed over by provider.app."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from provider.api.metrics import HttpMetrics, NotificationMetrics, OperationsMetrics
from provider.domain.addresses import IPNetwork
from provider.services.assets import AssetService
from provider.services.auth import Authenticator
from provider.services.executions import ExecutionService
from provider.services.imports import ImportService
from provider.services.notifications import SubscriptionService
from provider.services.ports import Store
from provider.services.provisioning import ProvisioningService
from provider.services.signaling import SignalingService
from provider.services.tenants import TenantService
from provider.services.tes import TesService
from provider.services.transfers import TransferService
from provider.services.workspaces import WorkspaceService
from provider.tracing import Tracing


@dataclass(frozen=True)
class ConnectorWebhook:
    """How a connector's webhook calls are recognised: its secret path segment, and the source
    networks it may call from (empty: any)."""

    secret: str
    sources: tuple[IPNetwork, ...] = ()


@dataclass(frozen=True)
class EventWebhook:
    """The header EDC's event callback carries, and its value (None: event callbacks are off)."""

    header: str
    code: str | None


@dataclass
class ApiContext:
    store: Store
    auth: Authenticator
    tenants: TenantService
    assets: AssetService
    workspaces: WorkspaceService
    imports: ImportService
    executions: ExecutionService
    tes: TesService
    provisioning: ProvisioningService
    edc_connectors: dict[str, ConnectorWebhook]
    edc_events: EventWebhook
    transfers: TransferService
    signaling: SignalingService
    storage_backend: str
    metrics: HttpMetrics
    openapi: dict[str, Any]
    public_url: str
    subscriptions: SubscriptionService
    notification_metrics: NotificationMetrics
    operations: OperationsMetrics
    tracing: Tracing
    stream_poll_seconds: float
    stream_heartbeat_seconds: float
    body_idle_timeout_seconds: float
    # Readiness: each dependency's check, raising when it cannot serve (store, storage, compute).
    dependencies: dict[str, Callable[[], Awaitable[None]]] = field(default_factory=dict)


CONTEXT = web.AppKey("context", ApiContext)


def ctx(request: web.Request) -> ApiContext:
    return request.app[CONTEXT]
