"""OpenTelemetry tracing: off by default; when `tracing.enabled`, a span for each request (its
trace continued from a W3C `traceparent`) and child spans for the store, storage and compute
calls made on its behalf, exported with OTLP over HTTP (docs/operations.md).

Disabled, nothing of OpenTelemetry is imported and a span costs one call to a null context. The
trace id of the current request is also in `trace_id_var`, which the log formatters add to
every line, so a log line leads to its trace.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import inspect
from collections.abc import Iterator
from typing import Any

trace_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("trace_id", default=None)


class Tracing:
    """The service's tracer; `Tracing.off()` does nothing."""

    def __init__(
        self,
        endpoint: str | None,
        service_name: str = "provider",
        sample_ratio: float = 1.0,
        headers: dict[str, str] | None = None,
        version: str = "",
    ) -> None:
        self.enabled = endpoint is not None
        self._provider: Any = None
        self._tracer: Any = None
        if endpoint is None:
            return
        # Imported only when tracing is on: the default start-up stays as quick as it was.
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

        resource = Resource.create({"service.name": service_name, "service.version": version})
        provider = TracerProvider(resource=resource, sampler=ParentBased(TraceIdRatioBased(sample_ratio)))
        exporter = OTLPSpanExporter(endpoint=endpoint.rstrip("/") + "/v1/traces", headers=headers or {})
        provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=1000))
        self._provider = provider
        self._tracer = provider.get_tracer("provider")

    @classmethod
    def off(cls) -> Tracing:
        return cls(None)

    @contextlib.contextmanager
    def span(self, name: str, **attributes: Any) -> Iterator[Any]:
        """A child span of the current one (or nothing, when tracing is off)."""
        if self._tracer is None:
            yield None
            return
        with self._tracer.start_as_current_span(name, attributes=attributes) as span:
            yield span

    @contextlib.contextmanager
    def request(self, method: str, route: str, headers: Any) -> Iterator[Any]:
        """The server span of one HTTP request, continuing the caller's trace when it sent one."""
        if self._tracer is None:
            yield None
            return
        from opentelemetry import trace
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        # The headers as they came, looked up without regard to case (Go sends "Traceparent").
        parent = TraceContextTextMapPropagator().extract(carrier=headers)
        with self._tracer.start_as_current_span(
            f"{method} {route}",
            context=parent,
            kind=trace.SpanKind.SERVER,
            attributes={"http.request.method": method, "http.route": route},
        ) as span:
            token = trace_id_var.set(format(span.get_span_context().trace_id, "032x"))
            try:
                yield span
            finally:
                trace_id_var.reset(token)

    @staticmethod
    def ended(span: Any, status: int, error: BaseException | None = None) -> None:
        """Record how a request's span ended: its status, and as an error from 500 on."""
        from opentelemetry.trace import Status, StatusCode

        span.set_attribute("http.response.status_code", status)
        if error is not None:
            span.record_exception(error)
        if status >= 500:
            span.set_status(Status(StatusCode.ERROR))

    def traced(self, target: Any, prefix: str) -> Any:
        """`target` with a span around each of its coroutine methods (`prefix.method`); itself
        when tracing is off."""
        if self._tracer is None:
            return target
        return _Traced(target, prefix, self)

    def shutdown(self) -> None:
        """Export what is left and stop (at the service's end)."""
        if self._provider is not None:
            self._provider.shutdown()


class _Traced:
    """A backend whose coroutine methods run in spans of their own."""

    def __init__(self, inner: Any, prefix: str, tracing: Tracing) -> None:
        self._inner = inner
        self._prefix = prefix
        self._tracing = tracing

    def __getattr__(self, attribute: str) -> Any:
        value = getattr(self._inner, attribute)
        if not inspect.iscoroutinefunction(value):
            return value

        @functools.wraps(value)
        async def traced(*args: Any, **kwargs: Any) -> Any:
            with self._tracing.span(f"{self._prefix}.{attribute}"):
                return await value(*args, **kwargs)

        return traced
