"""The execution service against a compute backend the test drives: every cancel path,
late events, skipped states and reconciliation after a restart."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest

from provider.app import Components, build_components
from provider.config import Settings
from provider.domain.executions import State
from provider.domain.tenants import Principal
from provider.services.executions import ExecutionRequest
from provider.services.ports import ComputeEvent
from tests.conftest import WAIT_SECONDS, ServiceWorld, poll_until
from tests.fakes import DrivenCompute


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """Long-polls may wait far longer than a test does: an answer within the test's wait is a wake."""
    executions = settings.executions.model_copy(update={"max_wait_seconds": 300})
    return settings.model_copy(update={"executions": executions})


@pytest.fixture
async def world(services: ServiceWorld) -> tuple[Components, DrivenCompute, Principal, str]:
    components, admin = services.components, services.admin
    workspace = await components.workspaces.create(admin.tenant_id, "w", {})

    async def body() -> AsyncIterator[bytes]:
        yield b"input"

    await components.workspaces.put_object(admin, workspace.id, "in.bin", body())
    return components, services.compute, admin, workspace.id


async def start(world: tuple[Components, DrivenCompute, Principal, str]) -> str:
    components, _, admin, workspace = world
    request = ExecutionRequest("dummy", None, workspace, {"source": "in.bin"}, {}, {})
    execution, created = await components.executions.create(admin, request, None)
    assert created and execution.state is State.QUEUED
    return execution.id


PATHS = {
    State.QUEUED: [],
    State.INITIALIZING: [State.INITIALIZING],
    State.RUNNING: [State.INITIALIZING, State.RUNNING],
    State.FINALIZING: [State.INITIALIZING, State.RUNNING, State.FINALIZING],
}


@pytest.mark.parametrize("state", list(PATHS))
async def test_cancel_in_every_active_state(world, state: State) -> None:  # type: ignore[no-untyped-def]
    components, compute, admin, _ = world
    execution_id = await start(world)
    for step in PATHS[state]:
        await compute.emit(execution_id, step)
    assert (await components.executions.get(admin, execution_id)).state is state
    after = await components.executions.cancel(admin, execution_id)
    assert compute.canceled == [execution_id]
    if state is State.QUEUED:
        assert after.state is State.CANCELED  # nothing ran: canceled at once
    else:
        assert after.state is State.CANCELING
        await compute.emit(execution_id, State.RUNNING)  # progress while canceling is ignored
        assert (await components.executions.get(admin, execution_id)).state is State.CANCELING
        await compute.emit(execution_id, State.CANCELED, reason="Canceled")
    final = await components.executions.get(admin, execution_id)
    assert final.state is State.CANCELED
    assert [h.state for h in final.history][-1] is State.CANCELED
    assert compute.released == [execution_id]


async def test_late_events_after_a_final_state_change_nothing(world) -> None:  # type: ignore[no-untyped-def]
    components, compute, admin, _ = world
    execution_id = await start(world)
    await compute.emit(execution_id, State.EXECUTOR_ERROR, exit_code=3, reason="ExitCode")
    done = await components.executions.get(admin, execution_id)
    await compute.emit(execution_id, State.COMPLETE)
    await compute.emit(execution_id, State.RUNNING)
    assert await components.executions.get(admin, execution_id) == done
    assert done.exit_code == 3 and done.logs_key == f"executions/{execution_id}/logs/worker.log"


async def test_skipped_states_are_recorded_in_order(world) -> None:  # type: ignore[no-untyped-def]
    components, compute, admin, _ = world
    execution_id = await start(world)
    await compute.emit(execution_id, State.COMPLETE, exit_code=0)
    done = await components.executions.get(admin, execution_id)
    assert [h.state for h in done.history] == [
        State.QUEUED,
        State.INITIALIZING,
        State.RUNNING,
        State.FINALIZING,
        State.COMPLETE,
    ]
    assert done.version == 5 + 1  # four transitions, then the logs key


async def test_queued_reason_is_visible_without_a_transition(world) -> None:  # type: ignore[no-untyped-def]
    components, compute, admin, _ = world
    execution_id = await start(world)
    await compute.emit(execution_id, State.QUEUED, reason="Unschedulable", message="0/3 nodes have a GPU")
    queued = await components.executions.get(admin, execution_id)
    assert queued.state is State.QUEUED and queued.reason == "Unschedulable" and queued.version == 2


async def test_restart_reconciliation(world) -> None:  # type: ignore[no-untyped-def]
    components, compute, admin, _ = world
    running = await start(world)
    await compute.emit(running, State.RUNNING)
    canceling = await start(world)
    await compute.emit(canceling, State.RUNNING)
    await components.executions.cancel(admin, canceling)
    queued = await start(world)
    survivor = await start(world)
    await compute.emit(survivor, State.RUNNING)
    finished = await start(world)
    await compute.emit(finished, State.COMPLETE, exit_code=0)
    # The service restarts: the backend remembers `survivor` (a Kubernetes Job, say) and the job of
    # `finished`, which nothing released.
    compute.running = {survivor, finished}
    compute.submitted.clear()
    compute.released.clear()
    # Within the grace, a QUEUED execution may be being submitted elsewhere: it is left alone.
    await components.executions.reconcile(3600)
    assert compute.submitted == []
    await components.executions.reconcile()
    assert finished in compute.released and survivor not in compute.released  # job without execution: gone
    lost = await components.executions.get(admin, running)  # lost, and queued for its next attempt
    assert lost.state is State.QUEUED and lost.attempt == 2 and lost.reason == "Retry"
    assert lost.attempts[0].reason == "Lost" and "RUNNING" in (lost.attempts[0].message or "")
    assert (await components.executions.get(admin, canceling)).state is State.CANCELED
    assert (await components.executions.get(admin, survivor)).state is State.RUNNING
    assert [job.execution_id for job in compute.submitted] == [queued]  # submitted again
    assert (await components.executions.get(admin, queued)).state is State.QUEUED


async def test_long_poll_sees_a_change_made_by_another_replica(world, settings: Settings) -> None:  # type: ignore[no-untyped-def]
    components, _, admin, _ = world
    execution_id = await start(world)
    other = build_components(settings)  # a second replica on the same database
    try:
        # Waits of 300 s, answered within the test's far shorter wait: only the change can answer.
        waiters = [
            asyncio.create_task(components.executions.wait(admin, execution_id, 1, 300)) for _ in range(3)
        ]
        await poll_until(
            lambda: components.executions.reads._waited.get(execution_id) == 3, "three long-polls waiting"
        )
        assert not any(w.done() for w in waiters)
        await other.executions.on_event(ComputeEvent(execution_id, State.RUNNING))
        seen = await asyncio.wait_for(asyncio.gather(*waiters), WAIT_SECONDS)
        assert all(s is not None and s.state is State.RUNNING for s in seen)
        assert components.executions.reads._waited == {}  # no waiter left registered
    finally:
        await other.storage.close()
        await other.store.close()


async def test_held_executions_wait_out_reconciliation_and_holds_cost_no_retry(world) -> None:  # type: ignore[no-untyped-def]
    """A suspended data flow holds its workspace's queued executions (provider/services/signaling.py)."""
    components, compute, admin, workspace = world
    executions = components.executions
    executions.deps.policy = replace(executions.deps.policy, max_attempts=2)
    execution_id = await start(world)
    for _ in range(2):  # suspended and resumed twice: two withdrawn attempts
        await components.workspaces.suspend(workspace)
        assert await executions.hold_workspace(workspace) == 1
        assert await executions.hold_workspace(workspace) == 0  # held already
        compute.submitted.clear()
        await executions.reconcile()  # a restart meanwhile: held stays held
        assert compute.submitted == []
        compute.running.add(execution_id)  # its job outlived the hold (a crash in between)
        await executions.reconcile()
        assert execution_id not in compute.running and compute.withdrawn.count(execution_id) >= 2
        await components.workspaces.unsuspend(workspace)
        assert await executions.release_workspace(workspace) == 1
    execution = await executions.get(admin, execution_id)
    assert (execution.state, execution.attempt, execution.tries) == (State.QUEUED, 3, 1)
    assert [job.attempt for job in compute.submitted] == [3]
    # Its first real try fails in a way worth retrying: with two tries allowed, it is retried.
    await compute.emit(execution_id, State.SYSTEM_ERROR, reason="Lost", attempt=3)
    retried = await executions.get(admin, execution_id)
    assert (retried.state, retried.reason, retried.attempt) == (State.QUEUED, "Retry", 4)


async def test_a_held_execution_can_be_canceled(world) -> None:  # type: ignore[no-untyped-def]
    components, _, admin, workspace = world
    execution_id = await start(world)
    await components.workspaces.suspend(workspace)
    await components.executions.hold_workspace(workspace)
    canceled = await components.executions.cancel(admin, execution_id)
    assert canceled.state is State.CANCELED
    await components.workspaces.unsuspend(workspace)
    assert await components.executions.release_workspace(workspace) == 0


async def test_an_execution_polled_by_many_at_once_is_read_from_the_store_once(world) -> None:  # type: ignore[no-untyped-def]
    """No stampede: when its cache entry has expired, the first poll reads it and the others wait
    for that read."""
    components, _, admin, _ = world
    execution_id = await start(world)
    executions = components.executions
    executions.shared.cache = type(executions.shared.cache)(seconds=0)  # every poll finds it expired
    store, reads = executions.deps.store, []

    class Counting:
        def __getattr__(self, name: str) -> object:
            return getattr(store, name)

        def read(self) -> object:
            reads.append(1)
            return store.read()

    executions.deps.store = Counting()
    try:
        polled = await asyncio.gather(*(executions.get(admin, execution_id) for _ in range(64)))
    finally:
        executions.deps.store = store
    assert len(reads) == 1 and {e.id for e in polled} == {execution_id}


async def test_a_queued_execution_found_in_a_suspended_workspace_is_held_not_failed(world) -> None:  # type: ignore[no-untyped-def]
    """The hold of a suspension was lost (a crash between storing the suspension and holding), or
    a retry came due meanwhile: whoever submits it next finds the workspace suspended and holds
    it, where it would have ended the execution as Lost."""
    components, compute, admin, workspace = world
    execution_id = await start(world)
    compute.running.discard(execution_id)  # its job is gone (a restart)
    await components.workspaces.suspend(workspace)  # and nobody held it
    await components.executions.reconcile()
    held = await components.executions.get(admin, execution_id)
    assert (held.state, held.reason) == (State.QUEUED, "Suspended")


async def test_reconciliation_releases_held_executions_of_a_resumed_workspace(world) -> None:  # type: ignore[no-untyped-def]
    components, compute, admin, workspace = world
    execution_id = await start(world)
    await components.workspaces.suspend(workspace)
    await components.executions.hold_workspace(workspace)
    await components.workspaces.unsuspend(workspace)  # resumed, and the release was lost
    compute.submitted.clear()
    await components.executions.reconcile()
    released = await components.executions.get(admin, execution_id)
    assert (released.state, released.reason) == (State.QUEUED, None)
    assert [(j.execution_id, j.attempt) for j in compute.submitted] == [(execution_id, 2)]


async def test_a_job_of_the_held_attempt_that_began_anyway_is_stopped(world) -> None:  # type: ignore[no-untyped-def]
    """A submission of the held attempt still being retried elsewhere made its job after the
    hold: its first report is not taken, and the job is withdrawn."""
    components, compute, admin, workspace = world
    execution_id = await start(world)
    await components.workspaces.suspend(workspace)
    await components.executions.hold_workspace(workspace)
    assert compute.withdrawn == [execution_id]
    await compute.emit(execution_id, State.INITIALIZING, attempt=1)
    await poll_until(lambda: compute.withdrawn == [execution_id, execution_id], "the late job withdrawn")
    assert (await components.executions.get(admin, execution_id)).state is State.QUEUED
