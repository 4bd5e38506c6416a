"""The asyncio kit (provider/aio.py): background tasks that are neither lost nor silent, waits with
a time limit, and backoff with jitter."""

from __future__ import annotations

import asyncio
import contextvars
import logging

import pytest

from provider.aio import Backoff, SingleFlight, Tasks, retry, wait_event
from tests.conftest import poll_until

request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)


def test_backoff_doubles_up_to_its_maximum_within_its_jitter() -> None:
    full = Backoff(2.0, 100.0)
    assert [full.ceiling(n) for n in (1, 2, 3, 10)] == [2.0, 4.0, 8.0, 100.0]
    assert full.delay(3, 0.0) == 0.0 and full.delay(3, 0.5) == 4.0  # anywhere in [0, 8]
    upper = Backoff(2.0, 100.0, "upper")
    assert upper.delay(1, 0.0) == 1.0 and upper.delay(1, 0.999) < 2.0  # in [1, 2]
    assert upper.delay(10, 0.0) == 50.0  # capped, then within the upper half
    delays = {full.delay(5) for _ in range(50)}
    assert len(delays) > 40 and all(0 <= d <= 32 for d in delays)  # spread out, never past the cap


async def test_retry_tries_again_what_may_pass_and_gives_up_on_the_rest() -> None:
    calls: list[int] = []
    slept: list[float] = []
    heard: list[int] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    async def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionError("reset")
        return "done"

    backoff = Backoff(1.0, 60.0, "upper")
    result = await retry(
        flaky,
        backoff=backoff,
        retry_on=lambda e: isinstance(e, ConnectionError),
        on_retry=lambda error, failures, delay: heard.append(failures),
        sleep=sleep,
    )
    assert result == "done" and len(calls) == 3 and heard == [1, 2]
    assert 0.5 <= slept[0] <= 1.0 and 1.0 <= slept[1] <= 2.0

    async def refused() -> None:
        raise PermissionError("no")

    with pytest.raises(PermissionError):  # not retryable: raised at once, nothing slept
        await retry(refused, backoff=backoff, retry_on=lambda e: isinstance(e, ConnectionError), sleep=sleep)
    assert len(slept) == 2

    calls.clear()

    async def down() -> None:
        calls.append(1)
        raise ConnectionError("down")

    with pytest.raises(ConnectionError):
        await retry(down, backoff=backoff, retry_on=lambda e: True, attempts=4, failures=1, sleep=sleep)
    assert len(calls) == 4  # at most `attempts` tries
    assert len(slept) == 2 + 4  # one wait before the first (a failure came before) and between each


async def test_wait_event_answers_whether_the_event_came() -> None:
    event = asyncio.Event()
    assert await wait_event(event, 0.01) is False
    asyncio.get_running_loop().call_soon(event.set)
    assert await wait_event(event, None) is True
    assert await wait_event(event, 0) is True  # already set: no wait at all


async def test_a_cancelled_waiter_stays_cancelled_even_as_the_event_is_set() -> None:
    """asyncio.wait_for on Python 3.11 may swallow a cancellation that races the result; a stop
    that cancels a worker must always stop it."""
    event = asyncio.Event()
    waiter = asyncio.create_task(wait_event(event, 60))
    await asyncio.sleep(0)
    event.set()
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter


async def test_tasks_are_held_logged_and_closed(caplog: pytest.LogCaptureFixture) -> None:
    tasks = Tasks(logging.getLogger("test.tasks"))
    release = asyncio.Event()
    seen: list[str | None] = []
    ended: list[str] = []

    async def work(name: str) -> None:
        seen.append(request_id.get())
        try:
            await release.wait()
        finally:
            ended.append(name)

    async def fails() -> None:
        raise RuntimeError("boom")

    request_id.set("req-1")  # the request that starts the work
    first = tasks.spawn("a", work("first"))
    assert first is not None and tasks.running("a")
    await asyncio.sleep(0)  # it starts
    second = work("second")
    assert tasks.spawn("a", second) is None  # one task per key: the newcomer is not run
    replacement = tasks.spawn("a", work("replacement"), replace=True)
    assert replacement is not None
    await asyncio.gather(first, return_exceptions=True)
    assert first.cancelled() and ended == ["first"]
    with caplog.at_level(logging.ERROR, "test.tasks"):
        failed = tasks.spawn("b", fails(), "failing task")
        assert failed is not None
        await asyncio.gather(failed, return_exceptions=True)
        await asyncio.sleep(0)  # done callbacks run on the next turn of the loop
    assert "background task failing task failed" in caplog.text and "boom" in caplog.text
    assert not tasks.running("b") and len(tasks) == 1
    await tasks.close()
    assert ended == ["first", "replacement"] and len(tasks) == 0
    assert seen == [None, None]  # each ran in a fresh context, without the request's id
    tasks.spawn("c", work("stopped"))
    await asyncio.sleep(0)  # it starts
    await tasks.stop("c")
    assert ended[-1] == "stopped"


async def test_single_flight_reads_once_for_everyone_who_asks_meanwhile() -> None:
    flight: SingleFlight[str, int] = SingleFlight()
    release = asyncio.Event()
    calls = 0

    async def load() -> int:
        nonlocal calls
        calls += 1
        await release.wait()
        return 42

    waiters = [asyncio.ensure_future(flight.do("k", load)) for _ in range(50)]
    await asyncio.sleep(0)
    waiters[0].cancel()  # one caller gives up (its client left): the others still get the answer
    release.set()
    results = await asyncio.gather(*waiters, return_exceptions=True)
    assert calls == 1 and isinstance(results[0], asyncio.CancelledError) and results[1:] == [42] * 49
    assert not flight.running("k")
    assert await flight.do("k", load) == 42 and calls == 2  # done: the next ask loads again


async def test_single_flight_shares_a_failure_and_forgets_it() -> None:
    flight: SingleFlight[str, int] = SingleFlight()
    attempts = 0

    async def failing() -> int:
        nonlocal attempts
        attempts += 1
        await asyncio.sleep(0)
        raise ConnectionError("store down")

    results = await asyncio.gather(*(flight.do("k", failing) for _ in range(5)), return_exceptions=True)
    assert attempts == 1 and all(isinstance(r, ConnectionError) for r in results)
    flight.start("k", failing)  # a background refresh that fails is not an error anyone awaits
    await poll_until(lambda: not flight.running("k"), "the refresh ended")
    assert attempts == 2
