"""Logs: JSON lines with a request id, and never a credential."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator
from datetime import datetime

import pytest

from provider.logs import JsonFormatter, ThrottledWarnings, access_log, configure_logging, redact
from tests.conftest import ADMIN_KEY, Api


@pytest.fixture
def log_stream() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    stream = io.StringIO()
    configure_logging("INFO", "json", stream)
    yield stream
    root.handlers[:] = saved_handlers
    root.setLevel(saved_level)


async def test_request_lines_are_json_with_request_id_and_no_secrets(
    api: Api, log_stream: io.StringIO
) -> None:
    issued = await api.json("POST", "/api/v1/tenants", 201, key=ADMIN_KEY, json={"participant_id": "logs"})
    key = await api.json("POST", f"/api/v1/tenants/{issued['id']}/api-keys", 201, key=ADMIN_KEY, json={})
    await api.json("GET", "/api/v1/me", 200, key=key["key"], headers={"X-Request-ID": "trace-me"})
    await api.json("GET", "/api/v1/me", 401, key=key["key"] + "x")
    access_log.flush()
    text = log_stream.getvalue()
    assert ADMIN_KEY not in text and key["key"] not in text
    entries = [json.loads(line) for line in text.splitlines()]
    me = [e for e in entries if e.get("request_id") == "trace-me"]
    assert me and me[0]["message"] == "GET /api/v1/me 200" and me[0]["status"] == 200
    assert all("time" in e and "level" in e for e in entries)
    # The access line, written without logging's records, reads as any other line of the logger.
    record = logging.makeLogRecord(
        {
            "name": "provider.http",
            "levelno": logging.INFO,
            "levelname": "INFO",
            "msg": "GET /api/v1/me 200",
            "created": datetime.fromisoformat(me[0]["time"]).timestamp(),
            "request_id": "trace-me",
            "status": 200,
            "duration_ms": me[0]["duration_ms"],
            "remote": me[0]["remote"],
        }
    )
    assert json.loads(JsonFormatter().format(record)) == me[0]


async def test_request_lines_on_a_terminal_read_as_the_other_lines(api: Api) -> None:
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    stream = io.StringIO()
    configure_logging("INFO", "text", stream)
    try:
        await api.json("GET", "/healthz", 200, headers={"X-Request-ID": "on-a-tty"})
        access_log.flush()
    finally:
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
    [line] = [line for line in stream.getvalue().splitlines() if "on-a-tty" in line]
    assert re.fullmatch(
        r"\d\d:\d\d:\d\d INFO    provider.http \[on-a-tty\]: GET /healthz 200  "
        r"status=200 duration_ms=[0-9.]+ remote=127\.0\.0\.1",
        line,
    ), line


def test_secrets_in_messages_are_masked(log_stream: io.StringIO) -> None:
    log = logging.getLogger("provider.test")
    log.warning("calling with Authorization: Bearer abc.def.ghi and key pk.AAAAAAAAAAAAAAAAAAAA")
    log.warning("jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl and password=hunter2")
    text = log_stream.getvalue()
    for secret in ("abc.def.ghi", "pk.AAAAAAAAAAAAAAAAAAAA", "eyJzdWIiOiIxIn0", "hunter2"):
        assert secret not in text
    assert text.count("redacted") >= 4


def test_redact_leaves_ordinary_text_alone() -> None:
    assert redact("GET /api/v1/assets/dummy 200") == "GET /api/v1/assets/dummy 200"


def test_throttled_warnings_log_one_line_per_kind_and_interval_with_the_count_held_back(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [1000.0]
    warnings = ThrottledWarnings(logging.getLogger("provider.test"), 60.0, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="provider.test"):
        assert warnings.warn("a", "client %s did a", "x")
        assert not warnings.warn("a", "client %s did a", "y")
        assert not warnings.warn("a", "client %s did a", "z")
        assert warnings.warn("b", "client did b")  # another kind has its own interval
        now[0] += 59.9
        assert not warnings.warn("a", "client %s did a", "w")
        now[0] += 0.1
        assert warnings.warn("a", "client %s did a", "v")
    assert [r.getMessage() for r in caplog.records] == [
        "client x did a",
        "client did b",
        "client v did a (3 more like it in the last 60 s not logged)",
    ]
    assert [getattr(r, "suppressed", None) for r in caplog.records] == [0, 0, 3]
