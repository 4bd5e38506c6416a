"""HTTP metrics for Prometheus; each application has its own registry (tests build many)."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class HttpMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.requests = Counter(
            "provider_http_requests",
            "HTTP requests by method, route template and status code",
            ["method", "route", "status"],
            registry=registry,
        )
        self.latency = Histogram(
            "provider_http_request_duration_seconds",
            "HTTP request latency by method and route template",
            ["method", "route"],
            registry=registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        # The labelled children are looked up once per (method, route, status): finding them
        # through `labels()` on every request costs more than the counting.
        key = (method, route, status)
        children = self._children.get(key)
        if children is None:
            children = (self.requests.labels(method, route, str(status)), self.latency.labels(method, route))
            if len(self._children) < 10_000:  # routes are templates; methods and statuses are few
                self._children[key] = children
        children[0].inc()
        children[1].observe(seconds)


class NotificationMetrics:
    """Webhook deliveries and event streams (the delivery worker reports through DeliveryObserver)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.deliveries = Counter(
            "provider_webhook_deliveries",
            "Webhook delivery attempts by outcome (succeeded, failed, dead, gone)",
            ["outcome"],
            registry=registry,
        )
        self.depth = Gauge(
            "provider_webhook_outbox_depth", "Deliveries waiting in the outbox", registry=registry
        )
        self.latency = Histogram(
            "provider_webhook_delivery_latency_seconds",
            "From the event's state change to the receiver's successful answer",
            registry=registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600),
        )
        self.streams = Gauge("provider_event_streams_open", "Open event streams (SSE)", registry=registry)

    def delivered(self, outcome: str, seconds_since_event: float | None) -> None:
        self.deliveries.labels(outcome).inc()
        if seconds_since_event is not None:
            self.latency.observe(max(0.0, seconds_since_event))

    def outbox_depth(self, pending: int) -> None:
        self.depth.set(pending)


class KubernetesMetrics:
    """What the Kubernetes backend counts beside execution states (it reports through its observer)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.stale = Counter(
            "provider_kubernetes_stale_observations",
            "Observations of a Job behind its execution's state (a replaced pod, say), ignored",
            registry=registry,
        )

    def stale_observation(self) -> None:
        self.stale.inc()
