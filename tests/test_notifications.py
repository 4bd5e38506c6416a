"""Notifications: the outbox written with each state change, signed deliveries with retries, dead
letters and ordering, the SSRF guard, faults of receivers and of the service, the event stream."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from typing import Any

import pytest
import sqlalchemy as sa
from aiohttp import web

from provider.app import Components, build_components, prepare_store, read_assets
from provider.backends.sql import SqlStore, tables
from provider.backends.webhooks import HttpWebhookSender
from provider.client import ApiClient
from provider.config import NotificationSettings, Settings
from provider.domain.addresses import parse_networks
from provider.domain.executions import State
from provider.domain.notifications import Attempt, DeliveryState, Outcome, SubscriptionState
from provider.domain.pagination import PageRequest
from provider.domain.tenants import Principal
from provider.services.executions import CallbackRequest, ExecutionRequest
from provider.services.notifications import DeliveryWorker
from tests.conftest import ADMIN_KEY, WAIT_SECONDS, Api, MovableClock, free_port, live_api
from tests.fakes import DrivenCompute

FAST = {
    "allow_http": True,
    "allowed_networks": ["127.0.0.1/32"],
    "timeout_seconds": 0.5,
    "backoff_seconds": 0.05,
    "max_backoff_seconds": 0.2,
    "poll_seconds": 0.1,
    "lease_seconds": 5,
    "max_attempts": 4,
}


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"notifications": NotificationSettings(**FAST)})  # type: ignore[arg-type]


# --- a receiver -------------------------------------------------------------------------------


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float

    @property
    def event(self) -> dict[str, Any]:
        document: dict[str, Any] = json.loads(self.body)
        return document


@dataclass
class Receiver:
    """A webhook receiver; each path answers as `behaviour[path]` says (default 204)."""

    port: int = field(default_factory=free_port)
    received: list[Received] = field(default_factory=list)
    behaviour: dict[str, str] = field(default_factory=dict)
    slow_seconds: float = 2.0
    released: asyncio.Event = field(default_factory=asyncio.Event)  # answers "hold" requests
    runner: web.AppRunner | None = None

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def at(self, path: str) -> list[Received]:
        return [r for r in self.received if r.path == path]

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.received.append(Received(request.path, dict(request.headers), body, time.time()))
        mode = self.behaviour.get(request.path, "ok")
        if mode == "slow":
            await asyncio.sleep(self.slow_seconds)
        if mode == "hold":
            await self.released.wait()
        if mode == "fail":
            return web.Response(status=503)
        if mode == "gone":
            return web.Response(status=410)
        if mode == "redirect":
            return web.Response(status=307, headers={"Location": "/elsewhere"})
        return web.Response(status=204)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app, shutdown_timeout=0.1)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        self.released.set()
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    item = Receiver()
    await item.start()
    yield item
    await item.stop()


async def eventually(check: Any, seconds: float = WAIT_SECONDS) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            result = check()
            if asyncio.iscoroutine(result):
                result = await result
            if result is None or result:
                return
        except AssertionError:
            if time.monotonic() > deadline:
                raise
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


# --- the service against a driven compute backend, on SQLite and PostgreSQL ----------------------


@dataclass
class World:
    components: Components
    compute: DrivenCompute
    admin: Principal
    workspace_id: str
    clock: MovableClock
    workers: list[DeliveryWorker] = field(default_factory=list)
    senders: list[HttpWebhookSender] = field(default_factory=list)

    def patient_sender(self) -> HttpWebhookSender:
        """A sender that waits an hour for an answer: a request it makes stays under way."""
        sender = HttpWebhookSender(parse_networks(["127.0.0.1/32"]), True, 3600, connections=10)
        self.senders.append(sender)
        return sender

    async def subscribe(self, url: str, events: tuple[str, ...] = ("execution.*",), **filters: Any) -> Any:
        subscription, secret = await self.components.subscriptions.create(
            self.admin,
            url,
            events,
            filters.pop("secret", None),
            filters.get("execution_id"),
            filters.get("workspace_id"),
            filters.get("labels", {}),
        )
        return subscription, secret

    async def run(self, labels: dict[str, str] | None = None, callback: CallbackRequest | None = None) -> Any:
        request = ExecutionRequest("dummy", None, self.workspace_id, {"source": "in.bin"}, {}, labels or {})
        return await self.components.executions.start(self.admin, request, None, callback)

    async def finish(self, execution_id: str) -> None:
        for state in (State.INITIALIZING, State.RUNNING, State.FINALIZING):
            await self.compute.emit(execution_id, state)
        await self.compute.emit(execution_id, State.COMPLETE, exit_code=0)

    def worker(self, sender: HttpWebhookSender | None = None, **policy: Any) -> DeliveryWorker:
        c = self.components
        assert c.delivery is not None
        worker = DeliveryWorker(
            c.store, sender or c.sender, c.events, c.delivery.clock, replace(c.delivery.policy, **policy)
        )
        worker.start()
        self.workers.append(worker)
        return worker

    async def deliveries(self, subscription_id: str) -> list[Any]:
        async with self.components.store.read() as uow:
            return (await uow.deliveries.list_for_subscription(subscription_id, PageRequest(500))).items


async def make_world(settings: Settings, store: SqlStore, clock: MovableClock) -> World:
    compute = DrivenCompute()
    components = build_components(settings, store, compute, clock=clock)
    await prepare_store(components)
    await components.assets.load(read_assets(settings))
    await compute.start(components.executions.on_event, components.executions.reconcile)
    admin = await components.auth.authenticate(f"Bearer {ADMIN_KEY}")
    workspace = await components.workspaces.create(admin.tenant_id, "w", {})

    async def body() -> AsyncIterator[bytes]:
        yield b"input"

    await components.workspaces.put_object(admin, workspace.id, "in.bin", body())
    return World(components, compute, admin, workspace.id, clock)


@pytest.fixture
async def world(settings: Settings, store: SqlStore, clock: MovableClock) -> AsyncIterator[World]:
    item = await make_world(settings, store, clock)
    yield item
    for worker in item.workers:
        await worker.stop()
    for sender in item.senders:
        await sender.close()
    await item.components.sender.close()
    await item.components.storage.close()


def verify_standard_webhook(secret: str, headers: dict[str, str], body: bytes, tolerance: int = 300) -> bool:
    """Standard Webhooks verification written from the specification, independent of the service:
    the signed content is `{webhook-id}.{webhook-timestamp}.{body}`, the key the base64-decoded
    secret after its `whsec_` prefix, the signature `v1,` + base64(HMAC-SHA256); the header may
    carry several space-separated signatures, and the timestamp must be recent."""
    lowered = {k.lower(): v for k, v in headers.items()}
    msg_id, stamp = lowered["webhook-id"], lowered["webhook-timestamp"]
    if abs(time.time() - int(stamp)) > tolerance:
        return False
    key = base64.b64decode(secret.split("_", 1)[1])
    content = msg_id.encode() + b"." + stamp.encode() + b"." + body
    expected = base64.b64encode(hmac.new(key, content, hashlib.sha256).digest()).decode()
    for candidate in lowered["webhook-signature"].split(" "):
        version, _, signature = candidate.partition(",")
        if version == "v1" and hmac.compare_digest(signature, expected):
            return True
    return False


async def test_state_changes_are_delivered_in_order(world: World, receiver: Receiver) -> None:
    subscription, _ = await world.subscribe(receiver.url("/all"), ("execution.state_changed",))
    world.worker()
    started = await world.run()
    await world.finish(started.execution.id)
    await eventually(lambda: len(receiver.at("/all")) == 5)
    states = [r.event["data"]["state"] for r in receiver.at("/all")]
    assert states == ["QUEUED", "INITIALIZING", "RUNNING", "FINALIZING", "COMPLETE"]
    versions = [r.event["data"]["version"] for r in receiver.at("/all")]
    assert versions == sorted(versions)
    event = receiver.at("/all")[-1].event
    assert set(event) == {"id", "type", "occurred_at", "data", "version"}
    assert event["type"] == "execution.state_changed" and event["data"]["id"] == started.execution.id

    async def all_succeeded() -> bool:
        items = await world.deliveries(subscription.id)
        return len(items) == 5 and all(d.state is DeliveryState.SUCCEEDED for d in items)

    await eventually(all_succeeded)


async def test_signature_verifies_with_an_independent_standard_webhooks_check(
    world: World, receiver: Receiver
) -> None:
    secret = "whsec_" + base64.b64encode(b"k" * 32).decode()
    await world.subscribe(receiver.url("/signed"), ("execution.state_changed",), secret=secret)
    world.worker()
    await world.run()
    await eventually(lambda: len(receiver.at("/signed")) == 1)
    got = receiver.at("/signed")[0]
    assert verify_standard_webhook(secret, got.headers, got.body)
    assert not verify_standard_webhook(secret, got.headers, got.body + b" ")
    wrong = "whsec_" + base64.b64encode(b"x" * 32).decode()
    assert not verify_standard_webhook(wrong, got.headers, got.body)
    assert got.headers["webhook-id"].startswith("msg_")


async def test_final_events_and_payload_is_the_execution(world: World, receiver: Receiver) -> None:
    await world.subscribe(receiver.url("/done"), ("execution.completed", "execution.failed"))
    world.worker()
    ok, bad = await world.run(), await world.run()
    await world.finish(ok.execution.id)
    await world.compute.emit(bad.execution.id, State.EXECUTOR_ERROR, exit_code=3)
    await eventually(lambda: len(receiver.at("/done")) == 2)
    by_type = {r.event["type"]: r.event for r in receiver.at("/done")}
    assert by_type["execution.completed"]["data"]["id"] == ok.execution.id
    assert by_type["execution.failed"]["data"]["exit_code"] == 3
    from provider.domain.representations import execution_out

    current = execution_out(await world.components.executions.get(world.admin, bad.execution.id))
    # Afterwards the worker's log was kept (logs_key): a change without an event of its own.
    later = {"version", "updated_at", "logs_key"}
    sent = by_type["execution.failed"]["data"]
    assert set(sent) == set(current)
    assert {k: v for k, v in sent.items() if k not in later} == {
        k: v for k, v in current.items() if k not in later
    }


async def test_label_and_execution_filters(world: World, receiver: Receiver) -> None:
    gpu, _ = await world.subscribe(receiver.url("/gpu"), ("execution.state_changed",), labels={"team": "gpu"})
    first = await world.run({"team": "gpu", "x": "1"})
    await world.run({"team": "cpu"})
    await world.subscribe(receiver.url("/one"), ("execution.*",), execution_id=first.execution.id)
    await world.finish(first.execution.id)
    world.worker()
    await eventually(lambda: len(receiver.at("/gpu")) == 5 and len(receiver.at("/one")) == 5)
    assert {r.event["data"]["id"] for r in receiver.at("/gpu")} == {first.execution.id}
    # Deliveries are queued with the events they report: these five are all there will be.
    assert len(await world.deliveries(gpu.id)) == 5


async def test_receiver_down_then_back_gets_everything_in_order(world: World, receiver: Receiver) -> None:
    subscription, _ = await world.subscribe(receiver.url("/down"), ("execution.state_changed",))
    await receiver.stop()
    world.worker(max_attempts=1000)
    executions = [await world.run() for _ in range(3)]
    for started in executions:
        await world.finish(started.execution.id)

    async def refused() -> bool:
        return any(d.history for d in await world.deliveries(subscription.id))

    await eventually(refused)  # the worker has met the receiver down
    await receiver.start()
    await eventually(lambda: len(receiver.at("/down")) >= 15)
    ids = [r.headers["webhook-id"] for r in receiver.at("/down")]
    assert len(set(ids)) == 15  # every event, none twice
    order = [r.event["id"] for r in receiver.at("/down")]
    assert order == sorted(order)  # one subscription: in the order the events happened


async def test_a_commit_that_queues_deliveries_wakes_the_worker_at_once(
    world: World, receiver: Receiver
) -> None:
    subscription, _ = await world.subscribe(receiver.url("/now"), ("execution.state_changed",))
    worker = world.worker(poll_seconds=3600)  # only the in-process wake can deliver within the test
    await eventually(lambda: worker.rounds >= 1)  # its first round found nothing: it sleeps

    async def delivered(count: int) -> bool:
        items = await world.deliveries(subscription.id)
        settled = all(d.state is DeliveryState.SUCCEEDED for d in items)
        return len(receiver.at("/now")) == count and len(items) == count and settled

    started = await world.run()
    await eventually(lambda: delivered(1))
    # One commit at a time, each after the last delivery settled: each delivery is sent because
    # its own commit woke the worker, not because the worker was busy anyway.
    for count, state in enumerate((State.INITIALIZING, State.RUNNING, State.FINALIZING), start=2):
        await world.compute.emit(started.execution.id, state)
        await eventually(lambda count=count: delivered(count))
    await world.compute.emit(started.execution.id, State.COMPLETE, exit_code=0)
    await eventually(lambda: delivered(5))


async def test_slow_receiver_times_out(world: World, receiver: Receiver) -> None:
    receiver.behaviour["/slow"] = "slow"  # 2 s, beyond the 0.5 s timeout
    slow, _ = await world.subscribe(receiver.url("/slow"), ("execution.state_changed",))
    world.worker()
    await world.run()
    await eventually(lambda: len(receiver.at("/slow")) >= 2)
    deliveries = await world.deliveries(slow.id)
    assert deliveries[0].history[0].status is None
    assert "no answer within" in (deliveries[0].history[0].error or "")


async def test_a_receiver_that_does_not_answer_delays_no_other(world: World, receiver: Receiver) -> None:
    receiver.behaviour["/held"] = "hold"  # answers only at the end of the test
    await world.subscribe(receiver.url("/held"), ("execution.state_changed",))
    await world.subscribe(receiver.url("/fast"), ("execution.state_changed",))
    world.worker(sender=world.patient_sender(), lease_seconds=7200)  # waits for /held
    await world.run()
    await eventually(lambda: len(receiver.at("/held")) == 1)  # its request is under way
    await world.run()
    await eventually(lambda: len(receiver.at("/fast")) == 2)  # sent beside it
    assert len(receiver.at("/held")) == 1  # still unanswered; its next waits its turn


async def test_a_wait_for_one_of_our_connections_does_not_count_against_the_receiver(
    receiver: Receiver,
) -> None:
    # One connection, receivers that take 0.5 s and a 2 s timeout: the sixth request waits at
    # least 2.5 s for the connection, which is our queue, not the receiver's slowness.
    receiver.behaviour["/busy"] = "slow"
    receiver.slow_seconds = 0.5
    sender = HttpWebhookSender(parse_networks(["127.0.0.1/32"]), True, 2.0, connections=1)
    began = time.time()
    try:
        answers = await asyncio.gather(*(sender.send(receiver.url("/busy"), {}, b"{}") for _ in range(6)))
    finally:
        await sender.close()
    assert receiver.at("/busy")[-1].at - began >= 2.5  # the last one did wait longer than the timeout
    assert [a.status for a in answers] == [204] * 6


async def test_5xx_retries_then_dead_letter_then_manual_retry(world: World, receiver: Receiver) -> None:
    receiver.behaviour["/flaky"] = "fail"
    subscription, _ = await world.subscribe(receiver.url("/flaky"), ("execution.state_changed",))
    world.worker()
    await world.run()

    async def dead() -> bool:
        items = await world.deliveries(subscription.id)
        return bool(items) and items[0].state is DeliveryState.DEAD

    await eventually(dead)
    delivery = (await world.deliveries(subscription.id))[0]
    assert [a.status for a in delivery.history] == [503] * FAST["max_attempts"]  # type: ignore[list-item]
    assert len({r.headers["webhook-id"] for r in receiver.at("/flaky")}) == 1  # same id on every attempt
    receiver.behaviour["/flaky"] = "ok"
    requeued = await world.components.subscriptions.retry(world.admin, subscription.id, delivery.id)
    assert requeued.state is DeliveryState.PENDING

    async def succeeded() -> bool:
        return (await world.deliveries(subscription.id))[0].state is DeliveryState.SUCCEEDED

    await eventually(succeeded)
    from provider.domain.errors import Conflict

    with pytest.raises(Conflict):
        await world.components.subscriptions.retry(world.admin, subscription.id, delivery.id)


async def test_410_gone_disables_the_subscription(world: World, receiver: Receiver) -> None:
    receiver.behaviour["/gone"] = "gone"
    subscription, _ = await world.subscribe(receiver.url("/gone"), ("execution.state_changed",))
    await world.subscribe(receiver.url("/control"), ("execution.state_changed",))
    world.worker()
    started = await world.run()

    async def disabled() -> bool:
        current = await world.components.subscriptions.get(world.admin, subscription.id)
        return current.state is SubscriptionState.DISABLED

    await eventually(disabled)
    current = await world.components.subscriptions.get(world.admin, subscription.id)
    assert "410" in (current.disabled_reason or "")
    await world.finish(started.execution.id)
    await eventually(lambda: len(receiver.at("/control")) == 5)  # the later events went out
    assert len(receiver.at("/gone")) == 1  # nothing more is sent
    assert len(await world.deliveries(subscription.id)) == 1  # nor queued


async def test_redirect_is_a_failed_attempt_and_not_followed(world: World, receiver: Receiver) -> None:
    receiver.behaviour["/moved"] = "redirect"
    subscription, _ = await world.subscribe(receiver.url("/moved"), ("execution.state_changed",))
    world.worker()
    await world.run()

    async def attempted() -> bool:
        items = await world.deliveries(subscription.id)
        return bool(items) and len(items[0].history) >= 2

    await eventually(attempted)
    assert receiver.at("/elsewhere") == []
    history = (await world.deliveries(subscription.id))[0].history
    assert history[0].status == 307 and "redirect" in (history[0].error or "")


async def test_connect_time_check_refuses_an_address_that_became_forbidden(
    world: World, receiver: Receiver
) -> None:
    subscription, _ = await world.subscribe(f"http://localhost:{receiver.port}/late", ("execution.*",))
    world.components.sender.allowed.clear()  # as if the name now resolved somewhere forbidden
    world.worker()
    await world.run()

    async def attempted() -> bool:
        items = await world.deliveries(subscription.id)
        return bool(items) and bool(items[0].history)

    await eventually(attempted)
    attempt = (await world.deliveries(subscription.id))[0].history[0]
    assert attempt.status is None and "refused at connect time" in (attempt.error or "")
    assert receiver.at("/late") == []


async def test_stopped_mid_delivery_then_restarted_delivers_all_with_the_same_id(
    world: World, receiver: Receiver
) -> None:
    receiver.behaviour["/restart"] = "hold"  # the first request stays unanswered
    await world.subscribe(receiver.url("/restart"), ("execution.state_changed",))
    first = world.worker(sender=world.patient_sender(), lease_seconds=7200)
    started = await world.run()
    await world.finish(started.execution.id)
    await eventually(lambda: len(receiver.at("/restart")) == 1)
    await first.stop()  # the first request is in flight: its answer is lost
    world.workers.remove(first)
    receiver.behaviour["/restart"] = "ok"
    receiver.released.set()
    world.worker()
    await eventually(lambda: len({r.headers["webhook-id"] for r in receiver.at("/restart")}) == 5)
    ids = [r.headers["webhook-id"] for r in receiver.at("/restart")]
    assert ids[0] == ids[1]  # the repeated delivery carries the same webhook-id
    states = [r.event["data"]["state"] for r in receiver.at("/restart")[1:]]
    assert states == ["QUEUED", "INITIALIZING", "RUNNING", "FINALIZING", "COMPLETE"]


async def test_a_queue_whose_head_mark_was_missed_is_delivered_after_the_sweep(
    world: World, receiver: Receiver
) -> None:
    # What a race on PostgreSQL can leave behind: a delivery inserted while its predecessor was
    # being settled elsewhere is first in its queue but not marked as the head.
    subscription, _ = await world.subscribe(receiver.url("/missed"), ("execution.state_changed",))
    started = await world.run()
    await world.finish(started.execution.id)
    async with world.components.store.transaction() as uow:
        await uow.conn.execute(sa.update(tables.deliveries).values(ready=False))
    world.worker()
    await eventually(lambda: len(receiver.at("/missed")) == 5)
    order = [r.event["id"] for r in receiver.at("/missed")]
    assert order == sorted(order)

    async def settled() -> bool:
        return {d.state for d in await world.deliveries(subscription.id)} == {DeliveryState.SUCCEEDED}

    await eventually(settled)


async def test_a_crashed_worker_s_claims_come_back_after_their_lease(
    world: World, receiver: Receiver
) -> None:
    receiver.behaviour["/crash"] = "hold"  # the first request stays unanswered
    await world.subscribe(receiver.url("/crash"), ("execution.state_changed",))
    first = world.worker(sender=world.patient_sender(), lease_seconds=60)
    started = await world.run()
    await eventually(lambda: len(receiver.at("/crash")) == 1)
    # The process dies: no clean stop, its claim stays in the outbox until the lease ends.
    await first._loop.close()  # its tasks end, and nothing releases the claim
    await first._inflight.close()
    world.workers.remove(first)
    receiver.behaviour["/crash"] = "ok"
    receiver.released.set()
    second = world.worker(lease_seconds=60)
    await eventually(lambda: second.rounds >= 3)  # rounds while the dead worker's lease runs
    assert len(receiver.at("/crash")) == 1  # not before that lease ran out
    world.clock.advance(61)
    await eventually(lambda: len(receiver.at("/crash")) >= 2)
    ids = [r.headers["webhook-id"] for r in receiver.at("/crash")]
    assert ids[0] == ids[1]  # the same delivery, sent again
    assert receiver.at("/crash")[1].event["data"]["id"] == started.execution.id


async def test_two_workers_share_one_outbox_without_double_sends(
    world: World, receiver: Receiver, store: SqlStore
) -> None:
    if store.dialect != "postgresql":
        pytest.skip("several delivering replicas need PostgreSQL")
    subscriptions = [await world.subscribe(receiver.url(f"/s{i}"), ("execution.*",)) for i in range(8)]
    # Claims last two hours: on a loaded machine a 5 s lease can run out mid-send, and the other
    # worker would then rightly send again; only a real double claim may produce two successes.
    world.worker(lease_seconds=7200)
    world.worker(lease_seconds=7200)
    runs = [await world.run() for _ in range(10)]
    for started in runs:
        await world.finish(started.execution.id)
    expected = 10 * 6 * len(subscriptions)  # 5 state changes and one completion each
    # 480 requests through two workers: tens of seconds on a loaded machine.
    await eventually(lambda: len(receiver.received) >= expected, 5 * WAIT_SECONDS)

    async def settled() -> bool:
        states = [d.state for s, _ in subscriptions for d in await world.deliveries(s.id)]
        return len(states) == expected and set(states) == {DeliveryState.SUCCEEDED}

    await eventually(settled)
    for worker in world.workers:
        await worker.stop()  # any send still under way has ended
    ids = [r.headers["webhook-id"] for r in receiver.received]
    assert len(set(ids)) == expected
    # A claim is held by one worker: a delivery has exactly one successful attempt, and a
    # request arrives once per recorded attempt (a resend follows only a failed attempt, which
    # is at-least-once delivery doing its job, not two workers sending the same thing).
    for subscription, _ in subscriptions:
        for delivery in await world.deliveries(subscription.id):
            assert delivery.state is DeliveryState.SUCCEEDED
            assert [a.status for a in delivery.history].count(204) == 1
            assert ids.count(delivery.id) == len(delivery.history)
    for i in range(len(subscriptions)):
        order = [r.event["id"] for r in receiver.at(f"/s{i}")]
        assert order == sorted(order)


async def test_a_delivery_queued_while_its_predecessor_settles_is_its_queue_s_head(
    world: World, receiver: Receiver, store: SqlStore
) -> None:
    """Two replicas: one settles a subscription's only delivery while the other queues the next.
    Without care the queueing sees the first still pending (not committed yet) and the settling
    sees no successor (not committed yet): the next waits for the housekeeping sweep."""
    if store.dialect != "postgresql":
        pytest.skip("SQLite has one writer at a time")
    subscription, _ = await world.subscribe(receiver.url("/race"), ("execution.*",))
    now = world.clock()

    def delivery(n: int) -> dict[str, Any]:
        return {
            "id": f"dlv_race{n}",
            "subscription_id": subscription.id,
            "event_id": f"evt_race{n}",
            "event_seq": n,
            "event_type": "execution.state_changed",
            "created_at": now,
        }

    async with store.transaction() as uow:
        await uow.deliveries.add_many([delivery(1)])

    async def queue_the_next() -> None:
        async with store.transaction() as uow:
            await uow.deliveries.add_many([delivery(2)])

    async def waiting_on_a_lock() -> bool:
        async with store.engine.connect() as conn:
            query = sa.text("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'")
            return bool((await conn.execute(query)).scalar_one())

    succeeded = Outcome("dlv_race1", subscription.id, Attempt(now, 5, 204, None), DeliveryState.SUCCEEDED)
    async with store.transaction() as settling:
        await settling.deliveries.record([succeeded], now)
        queueing = asyncio.create_task(queue_the_next())
        # The queueing either waits for this settling to commit, or (the race) commits first.
        await eventually(lambda: queueing.done() or waiting_on_a_lock())
    await queueing
    async with store.engine.connect() as conn:
        d = tables.deliveries.c
        ready = (await conn.execute(sa.select(d.ready).where(d.id == "dlv_race2"))).scalar_one()
    assert ready  # the head of its queue at once, not after a sweep


async def test_inline_callback_makes_a_subscription_for_that_execution(
    world: World, receiver: Receiver
) -> None:
    world.worker()
    started = await world.run(callback=CallbackRequest(receiver.url("/cb")))
    assert started.subscription is not None and started.secret is not None
    assert started.subscription.execution_id == started.execution.id
    await world.run()  # another execution: not reported
    await eventually(lambda: len(receiver.at("/cb")) == 1)
    got = receiver.at("/cb")[0]
    assert verify_standard_webhook(started.secret, got.headers, got.body)
    assert got.event["data"]["id"] == started.execution.id


async def test_imports_and_workspaces_are_reported(world: World, receiver: Receiver) -> None:
    await world.subscribe(receiver.url("/ws"), ("workspace.*",))
    world.worker()
    created = await world.components.workspaces.create(world.admin.tenant_id, "second", {})
    await world.components.workspaces.delete(world.admin, created.id)
    await eventually(lambda: len(receiver.at("/ws")) == 2)
    assert [r.event["type"] for r in receiver.at("/ws")] == ["workspace.created", "workspace.deleted"]
    assert receiver.at("/ws")[1].event["data"]["state"] == "deleted"


# --- the HTTP API -------------------------------------------------------------------------------


async def test_forbidden_address_is_400_naming_the_rule(api: Api) -> None:
    for url, rule in (
        ("https://[::1]/hook", "loopback"),
        ("https://169.254.169.254/latest", "cloud metadata"),
        ("https://10.1.2.3/hook", "private"),
        ("https://224.0.0.1/hook", "multicast"),
        ("ftp://93.184.215.14/hook", "scheme"),
    ):
        problem = await api.json(
            "POST",
            "/api/v1/subscriptions",
            400,
            key=ADMIN_KEY,
            json={"url": url, "events": ["execution.*"]},
        )
        assert problem["type"].endswith("forbidden-address"), problem
        assert rule in problem["detail"], problem
        assert problem["errors"][0]["field"] == "body.url"


async def test_unknown_event_type_is_422(api: Api) -> None:
    problem = await api.json(
        "POST",
        "/api/v1/subscriptions",
        422,
        key=ADMIN_KEY,
        json={"url": "https://93.184.215.14/hook", "events": ["execution.*", "execution.exploded"]},
    )
    assert any("execution.exploded" in e["message"] for e in problem["errors"])


async def test_bad_secret_is_422(api: Api) -> None:
    valid = "whsec_" + base64.b64encode(b"k" * 30).decode()
    # Padding past the last group of four is not base64, although Python's decoder takes it.
    for secret in ("plain", "whsec_" + base64.b64encode(b"short").decode(), "whsec_not base64!", valid + "="):
        problem = await api.json(
            "POST",
            "/api/v1/subscriptions",
            422,
            key=ADMIN_KEY,
            json={"url": "https://93.184.215.14/hook", "events": ["workspace.*"], "secret": secret},
        )
        assert problem["errors"][0]["field"] == "body.secret"


async def test_subscription_lifecycle_and_tenancy(api: Api, new_consumer: Any, receiver: Receiver) -> None:
    owner, other = await new_consumer(), await new_consumer()
    created = await api.json(
        "POST",
        "/api/v1/subscriptions",
        201,
        key=owner.key,
        json={"url": receiver.url("/life"), "events": ["workspace.*"]},
    )
    assert created["secret"].startswith("whsec_") and created["state"] == "active"
    path = f"/api/v1/subscriptions/{created['id']}"
    shown = await api.json("GET", path, 200, key=owner.key)
    assert "secret" not in shown
    assert (await api.json("GET", "/api/v1/subscriptions", 200, key=owner.key))["items"] == [shown]
    assert (await api.json("GET", "/api/v1/subscriptions", 200, key=other.key))["items"] == []
    await api.json("GET", path, 404, key=other.key)
    await api.json("DELETE", path, 404, key=other.key)
    await api.json("GET", path + "/deliveries", 404, key=other.key)
    await api.json("POST", "/api/v1/workspaces", 201, key=owner.key, json={"name": "x"})

    async def delivered() -> bool:
        page = await api.json("GET", path + "/deliveries", 200, key=owner.key)
        return bool(page["items"]) and page["items"][0]["state"] == "succeeded"

    await eventually(delivered)
    page = await api.json("GET", path + "/deliveries", 200, key=owner.key)
    item = page["items"][0]
    assert item["attempts"][0]["response_status"] == 204 and item["event_type"] == "workspace.created"
    await api.json("POST", f"{path}/deliveries/{item['id']}/retry", 409, key=owner.key)
    await api.json("DELETE", path, 204, key=owner.key)
    await api.json("GET", path, 404, key=owner.key)


async def test_workspace_token_subscription_sees_only_its_workspace(
    api: Api, new_consumer: Any, receiver: Receiver
) -> None:
    owner = await new_consumer()
    mine = await api.json("POST", "/api/v1/workspaces", 201, key=owner.key, json={"name": "mine"})
    theirs = await api.json("POST", "/api/v1/workspaces", 201, key=owner.key, json={"name": "theirs"})
    token = await api.json("POST", f"/api/v1/workspaces/{mine['id']}/tokens", 201, key=owner.key, json={})
    created = await api.json(
        "POST",
        "/api/v1/subscriptions",
        201,
        key=token["token"],
        json={"url": receiver.url("/token"), "events": ["workspace.*"]},
    )
    assert created["workspace_id"] == mine["id"]
    await api.json(
        "POST",
        "/api/v1/subscriptions",
        404,
        key=token["token"],
        json={"url": receiver.url("/t"), "events": ["workspace.*"], "filter": {"workspace_id": theirs["id"]}},
    )
    await api.json("DELETE", f"/api/v1/workspaces/{theirs['id']}", 204, key=owner.key)
    await api.json("DELETE", f"/api/v1/workspaces/{mine['id']}", 204, key=owner.key)
    # One subscription's deliveries arrive in order: had the earlier deletion been queued for it,
    # it would have come first.
    await eventually(lambda: any(r.event["data"]["id"] == mine["id"] for r in receiver.at("/token")))
    assert [r.event["data"]["id"] for r in receiver.at("/token")] == [mine["id"]]


async def test_execution_create_with_callback_answers_with_its_subscription(
    settings: Settings, contract: Any, receiver: Receiver
) -> None:
    api, close = await live_api(settings, contract)  # job sidecars reach it at its public URL
    try:
        ws = await api.json("POST", "/api/v1/workspaces", 201, key=ADMIN_KEY, json={"name": "cb"})
        await api.json("PUT", f"/api/v1/workspaces/{ws['id']}/objects/in", 201, key=ADMIN_KEY, data=b"x")
        body = {
            "asset_id": "dummy",
            "workspace_id": ws["id"],
            "inputs": {"source": "in"},
            "env": {"SLEEP_SECONDS": "0"},
            "callback": {"url": receiver.url("/exec"), "events": ["execution.completed", "execution.failed"]},
        }
        created = await api.json("POST", "/api/v1/executions", 201, key=ADMIN_KEY, json=body)
        callback = created["callback"]
        assert callback["secret"].startswith("whsec_")
        subscription = await api.json(
            "GET", f"/api/v1/subscriptions/{callback['subscription_id']}", 200, key=ADMIN_KEY
        )
        assert subscription["filter"]["execution_id"] == created["id"]
        await eventually(lambda: len(receiver.at("/exec")) == 1)
        event = receiver.at("/exec")[0]
        assert verify_standard_webhook(callback["secret"], event.headers, event.body)
        current = await api.json("GET", f"/api/v1/executions/{created['id']}", 200, key=ADMIN_KEY)
        assert event.event["data"]["state"] == current["state"]
        body["callback"] = {"url": receiver.url("/exec"), "events": ["import.*"]}
        await api.json("POST", "/api/v1/executions", 422, key=ADMIN_KEY, json=body)
    finally:
        await close()


async def read_events(response: Any, count: int, seconds: float = WAIT_SECONDS) -> list[dict[str, str]]:
    """`count` SSE messages (comments skipped) from a streaming response."""
    events: list[dict[str, str]] = []
    current: dict[str, str] = {}
    async with asyncio.timeout(seconds):
        while len(events) < count:
            line = (await response.content.readline()).decode().rstrip("\n")
            if not line:
                if "data" in current:
                    events.append(current)
                current = {}
                continue
            if line.startswith(":"):
                continue
            name, _, value = line.partition(": ")
            current[name] = value
    return events


async def test_event_stream_is_scoped_filtered_and_resumable(api: Api, new_consumer: Any) -> None:
    owner, other = await new_consumer(), await new_consumer()
    headers = {"Authorization": f"Bearer {owner.key}"}
    response = await api.client.get("/api/v1/events", params={"types": "workspace.*"}, headers=headers)
    assert response.status == 200 and response.content_type == "text/event-stream"
    await api.json("POST", "/api/v1/workspaces", 201, key=other.key, json={"name": "not mine"})
    first = await api.json("POST", "/api/v1/workspaces", 201, key=owner.key, json={"name": "one"})
    second = await api.json("POST", "/api/v1/workspaces", 201, key=owner.key, json={"name": "two"})
    events = await read_events(response, 2)
    response.close()
    assert [json.loads(e["data"])["data"]["id"] for e in events] == [first["id"], second["id"]]
    assert events[0]["event"] == "workspace.created"
    resumed = await api.client.get(
        "/api/v1/events",
        params={"types": "workspace.created"},
        headers={**headers, "Last-Event-ID": events[0]["id"]},
    )
    again = await read_events(resumed, 1)
    resumed.close()
    assert again[0]["id"] == events[1]["id"]
    bad = await api.request("GET", "/api/v1/events?types=nope.*", key=owner.key)
    assert bad.status == 400
    token = await api.json("POST", f"/api/v1/workspaces/{first['id']}/tokens", 201, key=owner.key, json={})
    read_only = await api.json(
        "POST",
        f"/api/v1/workspaces/{first['id']}/tokens",
        201,
        key=owner.key,
        json={"scopes": ["objects:read"]},
    )
    assert (await api.request("GET", "/api/v1/events", key=read_only["token"])).status == 403
    scoped = await api.client.get(
        "/api/v1/events",
        params={"types": "workspace.deleted"},
        headers={"Authorization": f"Bearer {token['token']}"},
    )
    await api.json("DELETE", f"/api/v1/workspaces/{second['id']}", 204, key=owner.key)
    await api.json("DELETE", f"/api/v1/workspaces/{first['id']}", 204, key=owner.key)
    seen = await read_events(scoped, 1)
    scoped.close()
    assert json.loads(seen[0]["data"])["data"]["id"] == first["id"]


async def test_metrics_report_deliveries_outbox_and_streams(api: Api, receiver: Receiver) -> None:
    await api.json(
        "POST",
        "/api/v1/subscriptions",
        201,
        key=ADMIN_KEY,
        json={"url": receiver.url("/m"), "events": ["workspace.*"]},
    )
    await api.json("POST", "/api/v1/workspaces", 201, key=ADMIN_KEY, json={"name": "m"})
    await eventually(lambda: len(receiver.at("/m")) == 1)
    stream = await api.client.get("/api/v1/events", headers={"Authorization": f"Bearer {ADMIN_KEY}"})

    async def reported() -> bool:
        text = await (await api.client.get("/metrics")).text()
        return 'provider_webhook_deliveries_total{outcome="succeeded"} 1.0' in text and (
            "provider_event_streams_open 1.0" in text
        )

    await eventually(reported)
    stream.close()
    text = await (await api.client.get("/metrics")).text()
    assert (
        "provider_webhook_outbox_depth" in text and "provider_webhook_delivery_latency_seconds_bucket" in text
    )


async def test_cli_watch_follows_an_execution_until_it_ends(
    settings: Settings, contract: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    from provider.cli import main

    served, close = await live_api(settings, contract)  # job sidecars reach it at its public URL
    try:
        url = str(served.client.make_url("")).rstrip("/")
        async with ApiClient(url, ADMIN_KEY) as client:
            ws = await client.json("POST", "/api/v1/workspaces", json={"name": "watch"})
            await client.json("PUT", f"/api/v1/workspaces/{ws['id']}/objects/in", data=b"x")
            body = {
                "asset_id": "dummy",
                "workspace_id": ws["id"],
                "inputs": {"source": "in"},
                "env": {"SLEEP_SECONDS": "1"},
            }
            execution = await client.json("POST", "/api/v1/executions", json=body)
        argv = ["watch", execution["id"], "--url", url, "--key", ADMIN_KEY]
        assert await asyncio.wait_for(asyncio.to_thread(main, argv), 60) == 0
        out = capsys.readouterr().out
        assert re.search(rf"{execution['id']}\s+COMPLETE", out), out
        assert "RUNNING" in out
    finally:
        await close()
