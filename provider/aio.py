"""A small asyncio kit that every layer uses for its background work.

- `Tasks`: background tasks of one component, by key. The event loop keeps only weak references
  to tasks, so a task nobody holds can vanish; one that fails unobserved loses its error. Here each
  task is held until it ends, a failure is logged with the task's name, each runs in a fresh
  context (a request's id must not follow work that outlives the request), and `close()` cancels
  and awaits them all.
- `SingleFlight`: one load per key at a time, its result shared by every caller that asks
  meanwhile (no stampede when a hot cache entry expires).
- `wait_event`: wait for an `asyncio.Event` with a time limit, answering whether it was set,
  instead of `asyncio.wait_for(event.wait(), t)` and a suppressed `TimeoutError` at every caller.
- `Backoff` and `retry`: exponential delays with jitter (so that many clients that failed together
  do not come back together) and the loop that retries an operation with them.

Standard library only: the domain's rules stay pure, and services and backends share one kit.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import random
from collections.abc import Awaitable, Callable, Coroutine, Hashable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar

T = TypeVar("T")
K = TypeVar("K", bound=Hashable)

log = logging.getLogger(__name__)


class Tasks:
    """Background tasks of one component, each under a key (a name, an execution id, ...)."""

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self._log = logger or log
        self._tasks: dict[Hashable, asyncio.Task[Any]] = {}

    def spawn(
        self, key: Hashable, work: Coroutine[Any, Any, Any], name: str | None = None, *, replace: bool = False
    ) -> asyncio.Task[Any] | None:
        """Run `work` in the background under `key`. When a task under that key is still running,
        `replace` cancels it and takes its place; otherwise `work` is closed unrun and None returned."""
        current = self._tasks.get(key)
        if current is not None and not current.done():
            if not replace:
                work.close()
                return None
            current.cancel()
        task = asyncio.create_task(work, name=name or str(key), context=contextvars.Context())
        self._tasks[key] = task
        task.add_done_callback(lambda done: self._ended(key, done))
        return task

    def _ended(self, key: Hashable, task: asyncio.Task[Any]) -> None:
        if self._tasks.get(key) is task:
            del self._tasks[key]
        if not task.cancelled() and (error := task.exception()) is not None:
            self._log.error("background task %s failed", task.get_name(), exc_info=error)

    def running(self, key: Hashable) -> bool:
        task = self._tasks.get(key)
        return task is not None and not task.done()

    def cancel(self, key: Hashable) -> bool:
        """Cancel the task under `key`; False when none runs, or when it is the caller's own
        task (which goes on: it is the one asking)."""
        task = self._tasks.get(key)
        if task is None or task.done() or task is asyncio.current_task():
            return False
        del self._tasks[key]
        task.cancel()
        return True

    async def stop(self, key: Hashable) -> None:
        """Cancel the task under `key` and wait until it has ended, however it ends."""
        task = self._tasks.get(key)
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def join(self, key: Hashable) -> None:
        """Wait until the task under `key` has ended by itself (at once when none runs)."""
        task = self._tasks.get(key)
        if task is not None:
            await asyncio.gather(task, return_exceptions=True)

    def running_keys(self) -> list[Hashable]:
        """The keys of the tasks still running."""
        return [key for key, task in self._tasks.items() if not task.done()]

    def __len__(self) -> int:
        return len(self._tasks)

    def __iter__(self) -> Iterator[asyncio.Task[Any]]:
        return iter(list(self._tasks.values()))

    async def close(self) -> None:
        """Cancel every task and wait until all have ended (their `finally` blocks included)."""
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


class SingleFlight(Generic[K, T]):
    """One load per key at a time: callers that ask while it runs share its result (or its
    error), so that a cache entry that expires under load is read once, not once per request.
    The load runs as a task of its own: a caller that gives up (a client gone) ends no one else's
    wait."""

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self._log = logger or log
        self._loads: dict[K, asyncio.Task[T]] = {}

    async def do(self, key: K, load: Callable[[], Awaitable[T]]) -> T:
        """The result of the load under way for `key`, or of a new one."""
        return await asyncio.shield(self._start(key, load))

    def start(self, key: K, load: Callable[[], Awaitable[T]]) -> None:
        """Begin a load in the background unless one is under way (refreshing ahead of expiry);
        its failure is logged, and the next caller loads again."""
        self._start(key, load)

    def running(self, key: K) -> bool:
        return key in self._loads

    def _start(self, key: K, load: Callable[[], Awaitable[T]]) -> asyncio.Task[T]:
        task = self._loads.get(key)
        if task is None:

            async def run() -> T:
                return await load()

            task = asyncio.create_task(run(), context=contextvars.Context())
            self._loads[key] = task
            task.add_done_callback(lambda done: self._ended(key, done))
        return task

    def _ended(self, key: K, task: asyncio.Task[T]) -> None:
        if self._loads.get(key) is task:
            del self._loads[key]
        if not task.cancelled() and (error := task.exception()) is not None:
            self._log.debug("a shared load failed", exc_info=error)  # its callers were told


async def wait_event(event: asyncio.Event, seconds: float | None) -> bool:
    """True once `event` is set, False when `seconds` pass first (None: no limit)."""
    if event.is_set():
        return True
    try:
        async with asyncio.timeout(seconds):
            await event.wait()
    except TimeoutError:
        return False
    return True


@dataclass(frozen=True)
class Backoff:
    """Delays that double from `base` up to `maximum`, with jitter.

    `full` jitter picks in [0, ceiling]: the widest spread, for many clients of one server.
    `upper` picks in [ceiling / 2, ceiling]: never much sooner than asked, for retries whose
    delay an operator configured and users see.
    """

    base: float
    maximum: float
    jitter: Literal["full", "upper"] = "full"

    def ceiling(self, failures: int) -> float:
        """The longest delay after `failures` failures in a row (1 for the first)."""
        return float(min(self.maximum, self.base * 2.0 ** max(0, failures - 1)))

    def delay(self, failures: int, spread: float | None = None) -> float:
        """The delay after `failures` failures; `spread` in [0, 1) picks within the jitter's
        range (random when None, a fixed value in tests)."""
        ceiling = self.ceiling(failures)
        spread = random.random() if spread is None else spread  # noqa: S311 - jitter, not a secret
        low = 0.0 if self.jitter == "full" else ceiling / 2
        return low + (ceiling - low) * spread


async def retry(
    operation: Callable[[], Awaitable[T]],
    *,
    backoff: Backoff,
    retry_on: Callable[[Exception], bool],
    attempts: int | None = None,
    failures: int = 0,
    on_retry: Callable[[Exception, int, float], None] | None = None,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> T:
    """`operation()`, tried again after a `backoff` delay while it raises an error that `retry_on`
    accepts, at most `attempts` times in this call (None: until it succeeds or is cancelled).
    `failures` counts those that came before this call: when some did, the first try waits too.
    `on_retry(error, failures, delay)` hears each failure that is tried again; the last error, or
    one `retry_on` refuses, is raised."""
    if failures:
        await sleep(backoff.delay(failures))
    tries = 0
    while True:
        try:
            return await operation()
        except Exception as error:
            failures += 1
            tries += 1
            if not retry_on(error) or (attempts is not None and tries >= attempts):
                raise
            delay = backoff.delay(failures)
            if on_retry is not None:
                on_retry(error, failures, delay)
            await sleep(delay)
