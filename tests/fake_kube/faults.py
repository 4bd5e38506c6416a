"""Scripted failures, delays and latency for requests (`inject_fault`, `set_latency`)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from tests.fake_kube.store import Store


@dataclass
class Fault:
    """A scripted failure or delay for requests matching `method` and the `path` pattern."""

    method: str | None
    path: re.Pattern[str] | None
    status: int | None
    count: int | None
    reason: str | None
    message: str | None
    delay: float
    disconnect: bool
    retry_after: int | None
    late: float = 0.0
    hits: int = 0

    def matches(self, method: str, path: str, path_qs: str) -> bool:
        if self.count is not None and self.hits >= self.count:
            return False
        if self.method is not None and self.method.upper() != method:
            return False
        return self.path is None or bool(self.path.search(path) or self.path.search(path_qs))

    @property
    def exhausted(self) -> bool:
        return self.count is not None and self.hits >= self.count


class Faults(Store):
    def __init__(self) -> None:
        super().__init__()
        self._faults: list[Fault] = []
        self._latency = 0.0

    def inject_fault(
        self,
        method: str | None = None,
        path: str | None = None,
        status: int | None = 500,
        count: int | None = 1,
        reason: str | None = None,
        message: str | None = None,
        delay: float = 0.0,
        *,
        disconnect: bool = False,
        retry_after: int | None = None,
        late: float = 0.0,
    ) -> Fault:
        """Make the next `count` matching requests (None: all) fail, stall, drop the connection,
        or (`late`) be carried out at once but answered only `late` seconds after.

        `path` is a regular expression searched in the request path, and failing that in the path
        with its query string (so `r"/jobs$"` matches a list with a labelSelector, and `r"watch="`
        any watch). `status=None` with a `delay` only adds latency; `disconnect=True` closes the
        connection without answering.
        """
        fault = Fault(
            method=method,
            path=re.compile(path) if path is not None else None,
            status=status,
            count=count,
            reason=reason,
            message=message,
            delay=delay,
            disconnect=disconnect,
            retry_after=retry_after,
            late=late,
        )
        self._faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        self._faults.clear()

    def set_latency(self, seconds: float) -> None:
        """Delay every request by `seconds` before it is handled."""
        self._latency = seconds
