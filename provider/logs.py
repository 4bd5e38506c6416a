"""Structured logging: JSON lines off a terminal, a request id on every line, secrets masked."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import logging
import re
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from provider import tracing as _tracing

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
trace_id_var = _tracing.trace_id_var  # the current request's trace, when tracing is on

# Bearer values, our API keys, JWTs and anything that looks like key=value for secret-ish keys.
_SECRET_PATTERNS = [
    (re.compile(r"(?i)(bearer\s+)[^\s\"',]+"), r"\1[redacted]"),
    (re.compile(r"\bpk\.[A-Za-z0-9_\-]{8,}"), "pk.[redacted]"),
    (re.compile(r"\beyJ[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]*"), "[redacted-jwt]"),
    (
        re.compile(
            r"(?i)\b([\w-]*(?:secret|password|token|api[_-]?key|authorization)[\w-]*\s*[=:]\s*)[^\s,;&\"']+"
        ),
        r"\1[redacted]",
    ),
]
_STANDARD_ATTRS = set(vars(logging.makeLogRecord({})).keys()) | {
    "message",
    "asctime",
    "request_id",
    "trace_id",
}


class ThrottledWarnings:
    """At most one WARNING line per `interval_seconds` for each kind of event, counting the ones
    held back: clients can cause some events at will (malformed requests, dropped connections),
    and a line for each would let them fill the logs. `kind` must come from a fixed set."""

    def __init__(
        self,
        logger: logging.Logger,
        interval_seconds: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._logger = logger
        self._interval = interval_seconds
        self._clock = clock
        self._logged_at: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def warn(self, kind: str, message: str, *args: object) -> bool:
        """Log `message % args` unless a line of this kind was logged within the interval."""
        now = self._clock()
        logged_at = self._logged_at.get(kind)
        if logged_at is not None and now - logged_at < self._interval:
            self._held[kind] = self._held.get(kind, 0) + 1
            return False
        held = self._held.pop(kind, 0)
        self._logged_at[kind] = now
        if held and logged_at is not None:
            message += f" ({held} more like it in the last {now - logged_at:.0f} s not logged)"
        self._logger.warning(message, *args, extra={"kind": kind, "suppressed": held})
        return True


def redact(text: str) -> str:
    for pattern, replacement in _SECRET_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


class _ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        record.trace_id = trace_id_var.get()
        return True


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD_ATTRS and not k.startswith("_")}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = getattr(record, "request_id", None)
        if request_id:
            entry["request_id"] = request_id
        trace_id = getattr(record, "trace_id", None)
        if trace_id:
            entry["trace_id"] = trace_id
        entry.update(_extras(record))
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return redact(json.dumps(entry, default=str))


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        stamp = datetime.fromtimestamp(record.created).strftime("%H:%M:%S")
        request_id = getattr(record, "request_id", None)
        rid = f" [{request_id}]" if request_id else ""
        extras = " ".join(f"{k}={v}" for k, v in _extras(record).items())
        line = f"{stamp} {record.levelname:<7} {record.name}{rid}: {record.getMessage()}"
        if extras:
            line += f"  {extras}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return redact(line)


class AccessLog:
    """One line per HTTP request, in the same shape as every other log line, at a fraction of the
    cost: no LogRecord, filter, formatter or redaction per request (every field is one the
    service chose: a method token, a route template, a status, a duration, an address, a request
    id), and lines are written in batches once per turn of the event loop, not one write each.

    It writes to the stream `configure_logging` set up while that handler is the root logger's;
    otherwise (tests that capture records) each request is an ordinary INFO record of
    `provider.http`.
    """

    def __init__(self) -> None:
        self.logger = logging.getLogger("provider.http")
        self._handler: logging.StreamHandler[Any] | None = None
        self._json = True
        self._lines: list[str] = []
        self._second = -1
        self._stamp = ""
        self._plain: dict[tuple[str, str], bool] = {}

    def attach(self, handler: logging.StreamHandler[Any], json_lines: bool) -> None:
        self.flush()
        self._handler, self._json = handler, json_lines

    def record(
        self, method: str, route: str, status: int, ms: float, remote: str | None, request_id: str
    ) -> None:
        if not self.logger.isEnabledFor(logging.INFO):
            return
        handler = self._handler
        plain = self._plain.get((method, route))
        if plain is None:
            plain = self._plain[(method, route)] = _plain(method + route)
            if len(self._plain) > 10_000:  # routes are templates, methods few: never in practice
                self._plain.clear()
        if handler is None or logging.getLogger().handlers != [handler] or not plain:
            self.logger.info(
                "%s %s %s",
                method,
                route,
                status,
                extra={"status": status, "duration_ms": ms, "remote": remote},
            )
            return
        now = time.time()
        second = int(now)
        if second != self._second:
            stamp = datetime.fromtimestamp(second, UTC) if self._json else datetime.fromtimestamp(second)
            self._second = second
            self._stamp = stamp.strftime("%Y-%m-%dT%H:%M:%S" if self._json else "%H:%M:%S")
        if self._json:
            millis = int((now - second) * 1000)
            address = f'"{remote}"' if remote is not None and _plain(remote) else "null"
            trace_id = trace_id_var.get()
            trace = f', "trace_id": "{trace_id}"' if trace_id else ""
            line = (
                f'{{"time": "{self._stamp}.{millis:03d}+00:00", "level": "INFO", "logger": "provider.http", '
                f'"message": "{method} {route} {status}", "request_id": "{request_id}"{trace}, '
                f'"status": {status}, "duration_ms": {ms}, "remote": {address}}}\n'
            )
        else:
            line = (
                f"{self._stamp} INFO    provider.http [{request_id}]: {method} {route} {status}  "
                f"status={status} duration_ms={ms} remote={remote}\n"
            )
        self._lines.append(line)
        if len(self._lines) == 1:
            try:
                asyncio.get_running_loop().call_soon(self.flush)
            except RuntimeError:  # no loop: write now
                self.flush()

    def flush(self) -> None:
        """Write what is buffered (also at each turn of the loop, and before a new stream)."""
        lines, self._lines = self._lines, []
        if lines and self._handler is not None:
            stream = self._handler.stream
            with self._handler.lock or contextlib.nullcontext():
                stream.write("".join(lines))
                stream.flush()


def _plain(text: str) -> bool:
    """Nothing in it that JSON would have to escape."""
    return text.isascii() and text.isprintable() and '"' not in text and "\\" not in text


access_log = AccessLog()


def configure_logging(level: str = "INFO", fmt: str = "auto", stream: Any = None) -> None:
    stream = stream or sys.stderr
    if fmt == "auto":
        fmt = "text" if getattr(stream, "isatty", lambda: False)() else "json"
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(_ContextFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    access_log.attach(handler, fmt == "json")
    root.setLevel(level)
    # aiohttp's access log would print raw request lines; our middleware logs requests instead.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    # Alembic narrates every step at INFO; the migrate module logs one line per upgrade instead.
    logging.getLogger("alembic").setLevel(logging.WARNING)
