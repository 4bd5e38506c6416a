"""Metrics for Prometheus; each application has its own registry (tests build many)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from provider.domain.dataflows import FlowState
from provider.domain.executions import Execution, State
from provider.domain.imports import Import, ImportState
from provider.domain.provisioning import ProvisioningState
from provider.services.ports import Store

log = logging.getLogger(__name__)


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


# Execution phases, by the state an execution was in: how long each took is a histogram.
PHASES = {
    State.QUEUED: "queued",
    State.INITIALIZING: "staging_in",
    State.RUNNING: "running",
    State.FINALIZING: "staging_out",
    State.CANCELING: "canceling",
}
PHASE_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 4 * 3600, 24 * 3600)


class OperationsMetrics:
    """What an operator asks of a running service: executions by state, asset and backend, how
    long each phase took, how deep the queue is and how old its oldest entry; imports, EDC
    provisionings and signaling flows by outcome; storage errors; the compute backend's health.

    Gauges of what the store holds are read at scrape time (`refresh`, at most once per
    `refresh_seconds`); everything else is counted as it happens.
    """

    def __init__(self, registry: CollectorRegistry, backend: str, refresh_seconds: float = 2.0) -> None:
        self.backend = backend
        self.refresh_seconds = refresh_seconds
        self._refreshed = -1e9
        self._lock = asyncio.Lock()
        self.executions = Gauge(
            "provider_executions",
            "Active executions by state, asset and compute backend",
            ["state", "asset", "backend"],
            registry=registry,
        )
        self.queue_depth = Gauge(
            "provider_execution_queue_depth", "Executions waiting in QUEUED", registry=registry
        )
        self.oldest_queued = Gauge(
            "provider_execution_oldest_queued_seconds",
            "How long the execution that has waited longest in QUEUED has waited (0: none waits)",
            registry=registry,
        )
        self.phase = Histogram(
            "provider_execution_phase_seconds",
            "Time executions spent in each phase: queued, staging_in, running, staging_out, canceling",
            ["phase", "asset"],
            registry=registry,
            buckets=PHASE_BUCKETS,
        )
        self.finished = Counter(
            "provider_executions_finished",
            "Executions that reached a final state, by state, asset and reason",
            ["state", "asset", "reason"],
            registry=registry,
        )
        self.imports = Counter(
            "provider_imports_finished", "Imports that ended, by outcome", ["outcome"], registry=registry
        )
        self.import_bytes = Counter(
            "provider_import_bytes", "Bytes brought in by imports that succeeded", registry=registry
        )
        self.provisionings = Gauge(
            "provider_edc_provisionings", "EDC provisioned resources by state", ["state"], registry=registry
        )
        self.dataflows = Gauge(
            "provider_dataflows", "Data Plane Signaling flows by state", ["state"], registry=registry
        )
        self.refresh_failures = Counter(
            "provider_metrics_store_errors",
            "Scrapes whose store figures could not be read (the gauges kept their last values)",
            registry=registry,
        )
        self.storage_errors = Counter(
            "provider_storage_errors",
            "Storage operations that failed for a reason not the caller's (unreachable, refused, broken)",
            ["backend", "operation"],
            registry=registry,
        )

    async def refresh(self, store: Store, now: datetime) -> None:
        """Read the gauges' figures from the store, unless that was done moments ago."""
        async with self._lock:
            if time.monotonic() - self._refreshed < self.refresh_seconds:
                return
            try:
                async with store.read() as uow:
                    stats = await uow.stats.snapshot()
            except Exception:
                # The store is down: the last figures stay, and /metrics still answers, with
                # everything else an operator needs to see why.
                log.warning("metrics: the store's figures could not be read", exc_info=True)
                self.refresh_failures.inc()
                return
            self._refreshed = time.monotonic()
        self.executions.clear()
        for (state, asset), count in stats.executions.items():
            self.executions.labels(state, asset, self.backend).set(count)
        self.queue_depth.set(sum(n for (state, _), n in stats.executions.items() if state == State.QUEUED))
        waited = (now - stats.oldest_queued).total_seconds() if stats.oldest_queued else 0.0
        self.oldest_queued.set(max(0.0, waited))
        # Every state, none at 0 too: a series that appears at 1 shows no change to alert on.
        for state in ProvisioningState:
            self.provisionings.labels(state.value).set(stats.provisionings.get(state.value, 0))
        for flow_state in FlowState:
            self.dataflows.labels(flow_state.value).set(stats.dataflows.get(flow_state.value, 0))

    def execution_changed(self, execution: Execution) -> None:
        """A committed change: the phase it ended, and the end of the execution."""
        if len(execution.history) < 2:
            return
        last, before = execution.history[-1], execution.history[-2]
        if last.at != execution.updated_at:
            return  # details without a transition
        phase = PHASES.get(before.state)
        if phase is not None:
            self.phase.labels(phase, execution.asset_id).observe(
                max(0.0, (last.at - before.at).total_seconds())
            )
        if execution.state.final:
            self.finished.labels(execution.state.value, execution.asset_id, execution.reason or "").inc()

    def import_changed(self, item: Import) -> None:
        if not item.state.final:
            return
        self.imports.labels(item.state.value).inc()
        if item.state is ImportState.SUCCEEDED:
            self.import_bytes.inc(item.bytes_done)

    def storage_failed(self, backend: str, operation: str) -> None:
        self.storage_errors.labels(backend, operation).inc()


class ComputeCollector:
    """The compute backend's health, read at scrape time: whether this replica leads (observes
    jobs), and for Kubernetes the API errors and watch restarts it has counted."""

    def __init__(self, compute: Any) -> None:
        self.compute = compute

    def collect(self) -> Iterator[Any]:
        leading = getattr(self.compute, "leading", True)
        yield GaugeMetricFamily(
            "provider_leader",
            "1 while this replica observes jobs (the Kubernetes leader; the local backend always)",
            value=1.0 if leading else 0.0,
        )
        counts = getattr(self.compute, "counts", None)
        api_errors: dict[str, int] = counts.api_errors if counts else {}
        restarts: dict[tuple[str, str], int] = counts.watch_restarts if counts else {}
        errors = CounterMetricFamily(
            "provider_kubernetes_api_errors",
            "Kubernetes API calls that failed, by status (0: the API server could not be reached)",
            labels=["status"],
        )
        for status, count in sorted(api_errors.items()):
            errors.add_metric([status], count)
        yield errors
        watches = CounterMetricFamily(
            "provider_kubernetes_watch_restarts",
            "Watches started again, by resource and cause (expired: listed again; error: after a failure)",
            labels=["resource", "cause"],
        )
        for (resource, cause), count in sorted(restarts.items()):
            watches.add_metric([resource, cause], count)
        yield watches
