"""Any storage backend, with its failures counted: the operator's `provider_storage_errors`.

A proxy rather than code in each backend, so that no operation of either backend goes uncounted.
What the caller got wrong (a missing object, a quota, a bad checksum or range) is no storage
error and is not counted.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import AsyncIterator, Callable
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


class _CallerBody:
    """The bytes a caller streams into `put`, noting whether reading them failed."""

    def __init__(self) -> None:
        self.failed = False

    def wrap(self, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        async def relay() -> AsyncIterator[bytes]:
            try:
                async for chunk in chunks:
                    yield chunk
            except Exception:
                self.failed = True
                raise

        return relay()


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
            caller = _CallerBody()
            if attribute == "put":  # put(location, key, chunks, limits): the chunks are the caller's
                args = (*args[:2], caller.wrap(args[2]), *args[3:]) if len(args) > 2 else args
                if "chunks" in kwargs:
                    kwargs["chunks"] = caller.wrap(kwargs["chunks"])
            try:
                return await value(*args, **kwargs)
            except CALLERS_MISTAKES:
                raise
            except Exception:
                if not caller.failed:  # a client that stalled or left is no storage error
                    self._failed(self.name, attribute)
                raise

        return counted
