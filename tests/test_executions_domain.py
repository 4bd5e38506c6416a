"""The execution state machine, table-driven."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from provider.domain.errors import Conflict
from provider.domain.executions import FINAL, TRANSITIONS, Execution, State, Transition

T0 = datetime(2026, 11, 28, tzinfo=UTC)

ALLOWED = {
    (State.QUEUED, State.INITIALIZING), (State.QUEUED, State.CANCELING), (State.QUEUED, State.CANCELED),
    (State.QUEUED, State.EXECUTOR_ERROR), (State.QUEUED, State.SYSTEM_ERROR),
    (State.INITIALIZING, State.RUNNING), (State.INITIALIZING, State.CANCELING),
    (State.INITIALIZING, State.EXECUTOR_ERROR), (State.INITIALIZING, State.SYSTEM_ERROR),
    (State.RUNNING, State.FINALIZING), (State.RUNNING, State.CANCELING),
    (State.RUNNING, State.EXECUTOR_ERROR), (State.RUNNING, State.SYSTEM_ERROR),
    (State.FINALIZING, State.COMPLETE), (State.FINALIZING, State.CANCELING),
    (State.FINALIZING, State.EXECUTOR_ERROR), (State.FINALIZING, State.SYSTEM_ERROR),
    (State.CANCELING, State.CANCELED), (State.CANCELING, State.SYSTEM_ERROR),
}  # fmt: skip


def execution(state: State) -> Execution:
    return Execution(
        "exe_1", "ten_1", "ws_1", "dummy", "1.0.0", {}, {}, {}, state, 3, T0, T0, (Transition(state, T0),)
    )


@pytest.mark.parametrize("source", list(State))
@pytest.mark.parametrize("target", list(State))
def test_every_pair_of_states(source: State, target: State) -> None:
    later = datetime(2026, 11, 28, 1, tzinfo=UTC)
    if (source, target) in ALLOWED:
        moved = execution(source).advance(target, later, reason="why")
        assert moved.state is target and moved.version == 4 and moved.updated_at == later
        assert moved.history[-1] == Transition(target, later, "why")
        assert moved.entered(target) == later
    else:
        with pytest.raises(Conflict, match=f"cannot become {target.value}"):
            execution(source).advance(target, later)


def test_final_states_have_no_way_out_and_the_table_matches() -> None:
    assert {s for s in State if not TRANSITIONS[s]} == FINAL
    assert {(a, b) for a, targets in TRANSITIONS.items() for b in targets} == ALLOWED
    assert all(s.final for s in FINAL) and not any(s.final for s in State if s not in FINAL)


def test_annotate_bumps_the_version_without_a_transition() -> None:
    queued = execution(State.QUEUED).annotate(T0, reason="Unschedulable", message="no node has a GPU")
    assert queued.state is State.QUEUED and queued.version == 4 and queued.reason == "Unschedulable"
    assert len(queued.history) == 1
