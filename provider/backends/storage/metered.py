"""Any storage backend, with its failures counted: the operator's `provider_storage_errors`.

A proxy rather than code in each backend, so that no operation of either backend goes uncounted.
What the caller got wrong (a missing object, a quota, a bad checksum or range) is no storage
error and is not counted.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

from provider.domain.errors import (
    ChecksumMismatch,
    Conflict,
    Forbidden,
    InvalidInput,
    NotFound,
    NotSupported,
    PayloadTooLarge,
    RangeNotSatisfiable,
)

CALLERS_MISTAKES = (
    NotFound,
    InvalidInput,
    Conflict,
    Forbidden,
    PayloadTooLarge,
    ChecksumMismatch,
    RangeNotSatisfiable,
    NotSupported,
)


class MeteredStorage:
    def __init__(self, inner: Any, failed: Callable[[str, str], None]) -> None:
        self._inner = inner
        self._failed = failed
        self.name: str = inner.name

    def __getattr__(self, attribute: str) -> Any:
        value = getattr(self._inner, attribute)
        if not inspect.iscoroutinefunction(value):
            return value

        @functools.wraps(value)
        async def counted(*args: Any, **kwargs: Any) -> Any:
            try:
                return await value(*args, **kwargs)
            except CALLERS_MISTAKES:
                raise
            except Exception:
                self._failed(self.name, attribute)
                raise

        return counted
