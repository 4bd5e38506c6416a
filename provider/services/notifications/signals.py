"""Wake-ups within this process: a commit that recorded events wakes the delivery worker and the
event streams at once, instead of leaving them to their next poll."""

from __future__ import annotations

import asyncio


class Signal:
    """Wakes everything waiting in this process (the worker, event streams) after a commit."""

    def __init__(self) -> None:
        self._waiters: set[asyncio.Event] = set()

    def notify(self) -> None:
        for waiter in self._waiters:
            waiter.set()

    def register(self) -> asyncio.Event:
        waiter = asyncio.Event()
        self._waiters.add(waiter)
        return waiter

    def unregister(self, waiter: asyncio.Event) -> None:
        self._waiters.discard(waiter)
