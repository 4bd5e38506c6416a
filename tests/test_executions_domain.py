"""The execution state machine, table-driven."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from itertools import pairwise

import pytest

from provider.domain.errors import Conflict
from provider.domain.executions import (
    FINAL,
    FORWARD,
    RETRYABLE_REASONS,
    TRANSITIONS,
    Execution,
    OutputFile,
    Reason,
    State,
    Transition,
    behind,
    logs_key,
    observed_target,
    path,
    reach,
    should_retry,
)

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


T1 = T0 + timedelta(minutes=1)
ACTIVE = [s for s in State if s.active]


def test_the_forward_path_fills_in_the_states_a_backend_skipped() -> None:
    assert path(State.QUEUED, State.COMPLETE) == [
        State.INITIALIZING,
        State.RUNNING,
        State.FINALIZING,
        State.COMPLETE,
    ]
    assert path(State.RUNNING, State.FINALIZING) == [State.FINALIZING]
    assert path(State.RUNNING, State.SYSTEM_ERROR) == [State.SYSTEM_ERROR]  # off the path
    assert path(State.CANCELING, State.CANCELED) == [State.CANCELED]
    # every step of a path is a transition the table allows
    for i, current in enumerate(FORWARD):
        for target in FORWARD[i + 1 :]:
            steps = [current, *path(current, target)]
            assert all(b in TRANSITIONS[a] for a, b in pairwise(steps))


@pytest.mark.parametrize("current", FORWARD)
@pytest.mark.parametrize("observed", list(State))
def test_an_observation_is_behind_only_when_earlier_on_the_forward_path(
    current: State, observed: State
) -> None:
    earlier = observed in FORWARD and FORWARD.index(observed) < FORWARD.index(current)
    assert behind(current, observed) is earlier


def test_off_the_forward_path_nothing_is_behind() -> None:
    assert not behind(State.CANCELING, State.QUEUED)
    assert not behind(State.RUNNING, State.SYSTEM_ERROR)


@pytest.mark.parametrize("current", [s for s in ACTIVE if s is not State.CANCELING])
@pytest.mark.parametrize("observed", list(State))
def test_outside_a_cancel_an_observation_leads_where_it_says(current: State, observed: State) -> None:
    assert observed_target(current, observed, Reason.LOST) is observed
    assert observed_target(current, observed, None) is observed


@pytest.mark.parametrize(
    ("observed", "reason", "target"),
    [
        (State.SYSTEM_ERROR, Reason.LOST, State.CANCELED),  # the job went away as the cancel asked
        (State.SYSTEM_ERROR, "Lost", State.CANCELED),  # as read back from the store
        (State.SYSTEM_ERROR, Reason.STAGE_OUT, State.SYSTEM_ERROR),  # a failure of ours stands
        (State.CANCELED, Reason.CANCELED, State.CANCELED),
        (State.COMPLETE, None, State.CANCELED),  # ended while being canceled
        (State.EXECUTOR_ERROR, Reason.EXIT_CODE, State.CANCELED),
        (State.RUNNING, None, None),  # progress while canceling is ignored
        (State.QUEUED, Reason.UNSCHEDULABLE, None),
        (State.FINALIZING, None, None),
    ],
)
def test_while_canceling_every_end_is_the_cancels(
    observed: State, reason: str | None, target: State | None
) -> None:
    assert observed_target(State.CANCELING, observed, reason) is target


def test_a_canceled_execution_keeps_the_cancels_words() -> None:
    canceling = replace(execution(State.CANCELING), reason=Reason.CANCELED, message="canceled on request")
    ended = reach(canceling, State.CANCELED, T1, Reason.LOST, "the pod was deleted")
    assert ended is not None and ended.state is State.CANCELED
    assert (ended.reason, ended.message) == ("Canceled", "canceled on request")
    assert ended.history[-1] == Transition(State.CANCELED, T1, "Canceled")


def test_reaching_a_later_state_passes_through_the_skipped_ones_with_the_details_on_the_last() -> None:
    outputs = (OutputFile("result", "executions/exe_1/outputs/r.bin", 3, "ab" * 32),)
    done = reach(execution(State.QUEUED), State.COMPLETE, T1, None, None, 0, outputs)
    assert done is not None and done.state is State.COMPLETE and done.version == 3 + 4
    assert [t.state for t in done.history] == [State.QUEUED, *FORWARD[1:]]
    assert done.outputs == outputs and done.exit_code == 0


def test_the_same_state_again_changes_details_only_when_they_are_new() -> None:
    queued = reach(execution(State.QUEUED), State.QUEUED, T1, Reason.UNSCHEDULABLE, "no node")
    assert queued is not None and queued.version == 4 and len(queued.history) == 1
    assert queued.reason == "Unschedulable" and queued.message == "no node"
    assert reach(queued, State.QUEUED, T1, "Unschedulable", "no node") is None  # seen again


def test_a_retry_keeps_the_failed_attempt_with_its_log_and_queues_the_next() -> None:
    running = execution(State.RUNNING)
    retried = running.retry(T1, T1 + timedelta(seconds=5), State.SYSTEM_ERROR, Reason.LOST, "gone", None)
    assert retried.state is State.QUEUED and retried.attempt == 2 and retried.just_retried
    assert retried.reason == "Retry" and retried.history[-1].reason == "Retry"
    (failed,) = retried.attempts
    assert (failed.number, failed.state, failed.reason) == (1, State.SYSTEM_ERROR, "Lost")
    assert failed.logs_key == logs_key("exe_1", 1)
    with pytest.raises(Conflict):
        execution(State.CANCELING).retry(T1, T1, State.SYSTEM_ERROR, Reason.LOST, None, None)


def test_reasons_are_the_same_strings_in_json_and_only_failures_not_the_consumers_are_retried() -> None:
    assert json.loads(json.dumps({"reason": Reason.OOM_KILLED})) == {"reason": "OOMKilled"}
    assert Reason("Lost") is Reason.LOST and Reason.LOST == "Lost"
    assert should_retry(State.SYSTEM_ERROR, "Lost", 1, 2, False)  # read back from the store
    assert not should_retry(State.SYSTEM_ERROR, Reason.LOST, 2, 2, False)  # no attempts left
    for reason in (Reason.QUOTA_EXCEEDED, Reason.REJECTED, Reason.CANCELED):
        assert reason not in RETRYABLE_REASONS and not should_retry(State.SYSTEM_ERROR, reason, 1, 3, True)
    assert not should_retry(State.EXECUTOR_ERROR, Reason.EXIT_CODE, 1, 3, False)
    assert should_retry(State.EXECUTOR_ERROR, Reason.EXIT_CODE, 1, 3, True)
