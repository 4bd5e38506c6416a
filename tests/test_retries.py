"""Retries of failures that are not the consumer's, through the API, with the real local backend
running the jobs. A node that evicts a job is played by a compute backend that reports the first
attempts of chosen executions as Evicted, the way the Kubernetes backend reports an eviction."""

from __future__ import annotations

import json
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from provider.api.context import CONTEXT
from provider.app import build_compute
from provider.config import Settings
from provider.domain.executions import State, should_retry
from provider.services.ports import ComputeEvent, EventSink, JobSpec, Reconciler
from tests.conftest import REPO, Api, live_api
from tests.test_executions import run, setup, until
from tests.test_notifications import read_events

FINAL = {"COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR", "CANCELED"}


@dataclass
class EvictingCompute:
    """The local backend, except that the first `evictions` attempts of marked executions are
    evicted as soon as they are submitted."""

    inner: Any
    step_errors_ignorable = True
    evictions: int = 0
    marked: set[str] = field(default_factory=set)
    sink: EventSink | None = None
    submitted: list[tuple[str, int]] = field(default_factory=list)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def start(self, sink: EventSink, reconcile: Reconciler) -> None:
        self.sink = sink
        await self.inner.start(sink, reconcile)

    async def submit(self, job: JobSpec) -> None:
        self.submitted.append((job.execution_id, job.attempt))
        if job.env.get("EVICT") == "yes" and job.attempt <= self.evictions:
            assert self.sink is not None
            await self.sink(
                ComputeEvent(
                    job.execution_id,
                    State.SYSTEM_ERROR,
                    reason="Evicted",
                    message="node drained",
                    attempt=job.attempt,
                )
            )
            return
        await self.inner.submit(job)


def asset(name: str, code: str, **extra: Any) -> dict[str, Any]:
    return {
        "id": name,
        "version": "1.0.0",
        "title": name,
        "image": "python:3.12-slim",
        "inputs": [{"name": "source", "kind": "file", "mount_path": "/data/source", "required": False}],
        "outputs": [{"name": "result", "path": "result.txt"}],
        "consumer_env": {"EVICT": {"enum": ["yes", "no"], "default": "no"}},
        "local": {"command": ["{python}", "-c", code, "{result_dir}"]},
        **extra,
    }


ASSETS = {
    "copy": asset(
        "copy",
        "import sys, pathlib; print('attempt ran'); pathlib.Path(sys.argv[1], 'result.txt').write_text('ok')",
    ),
    "fail": asset("fail", "import sys; print('failing'); sys.exit(7)"),
    "flaky": asset(
        "flaky",
        "import sys; print('failing'); sys.exit(7)",
        retry={"max_attempts": 2, "on_executor_error": True},
    ),
}


async def retried(api: Api, key: str, execution: dict[str, Any]) -> dict[str, Any]:
    """Follow the execution with long-polls until its first attempt was given up and retried."""
    while execution["attempt"] == 1:
        answer = await api.request(
            "GET", f"/api/v1/executions/{execution['id']}?wait=5&version={execution['version']}", key=key
        )
        if answer.status == 200:
            execution = await answer.json()
    return execution


def retry_settings(settings: Settings, tmp_path: Path, backoff: float) -> Settings:
    """The test assets, and retries after between half of `backoff` and `backoff` seconds."""
    assets = tmp_path / "assets"
    assets.mkdir()
    shutil.copy(REPO / "config" / "assets" / "dummy.yaml", assets)
    for name, spec in ASSETS.items():
        (assets / f"{name}.yaml").write_text(yaml.safe_dump(spec))
    return settings.model_copy(
        update={
            "assets": settings.assets.model_copy(update={"directory": assets}),
            "executions": settings.executions.model_validate(
                {"retry": {"max_attempts": 3, "backoff_seconds": backoff, "max_backoff_seconds": backoff}}
            ),
        }
    )


@pytest.fixture
async def retrying(
    settings: Settings, tmp_path: Path, contract
) -> AsyncIterator[tuple[Api, EvictingCompute]]:  # type: ignore[no-untyped-def]
    settings = retry_settings(settings, tmp_path, backoff=0.05)
    compute = EvictingCompute(build_compute(settings, CollectorRegistry()), evictions=1)
    api, close = await live_api(settings, contract, compute=compute)
    yield api, compute
    await close()


async def test_an_evicted_attempt_runs_again_and_completes(retrying: tuple[Api, EvictingCompute]) -> None:
    api, compute = retrying
    key, ws = await setup(api)
    stream = await api.client.get(
        "/api/v1/events", params={"types": "execution.*"}, headers={"Authorization": f"Bearer {key}"}
    )
    started = await run(api, key, ws, "copy", env={"EVICT": "yes"})
    done = await until(api, key, started, FINAL)
    assert done["state"] == "COMPLETE", done
    assert done["attempt"] == 2 and compute.submitted.count((done["id"], 2)) == 1
    [first] = done["attempts"]
    assert first["attempt"] == 1 and first["state"] == "SYSTEM_ERROR" and first["reason"] == "Evicted"
    assert first["message"] == "node drained"
    assert [o["name"] for o in done["outputs"]] == ["result"]
    logs = await api.request("GET", f"/api/v1/executions/{done['id']}/logs", key=key)
    assert (await logs.text()).strip() == "attempt ran"
    # The event stream reported the retry as its own change: QUEUED again, attempt 2, reason Retry.
    seen = [json.loads(e["data"])["data"] for e in await read_events(stream, 6)]
    stream.close()
    assert any(d["state"] == "QUEUED" and d["attempt"] == 2 and d["reason"] == "Retry" for d in seen), seen
    assert seen[-1]["attempt"] == 2


async def test_retries_stop_at_the_limit(retrying: tuple[Api, EvictingCompute]) -> None:
    api, compute = retrying
    compute.evictions = 99
    key, ws = await setup(api)
    done = await until(api, key, await run(api, key, ws, "copy", env={"EVICT": "yes"}), FINAL)
    assert done["state"] == "SYSTEM_ERROR" and done["reason"] == "Evicted" and done["attempt"] == 3
    assert [a["attempt"] for a in done["attempts"]] == [1, 2]
    assert [a for (e, a) in compute.submitted if e == done["id"]] == [1, 2, 3]


async def test_the_worker_s_own_failure_is_not_retried(retrying: tuple[Api, EvictingCompute]) -> None:
    api, _ = retrying
    key, ws = await setup(api)
    done = await until(api, key, await run(api, key, ws, "fail"), FINAL)
    assert done["state"] == "EXECUTOR_ERROR" and done["exit_code"] == 7
    assert done["attempt"] == 1 and done["attempts"] == []


async def test_an_asset_may_ask_for_its_own_failures_to_be_retried_and_keeps_each_attempt_s_log(
    retrying: tuple[Api, EvictingCompute],
) -> None:
    api, _ = retrying
    key, ws = await setup(api)
    done = await until(api, key, await run(api, key, ws, "flaky"), FINAL)
    while done["logs_key"] is None:  # kept in the workspace right after the end
        answer = await api.request(
            "GET", f"/api/v1/executions/{done['id']}?wait=5&version={done['version']}", key=key
        )
        if answer.status == 200:
            done = await answer.json()
    assert done["state"] == "EXECUTOR_ERROR" and done["attempt"] == 2  # the asset allows 2 attempts
    [first] = done["attempts"]
    assert first["state"] == "EXECUTOR_ERROR" and first["exit_code"] == 7
    for attempt in (1, 2):
        answer = await api.request("GET", f"/api/v1/executions/{done['id']}/logs?attempt={attempt}", key=key)
        assert answer.status == 200 and (await answer.text()).strip() == "failing"
    assert first["logs_key"].endswith("/logs/worker.log") and done["logs_key"].endswith(
        "worker.attempt-2.log"
    )
    await api.json("GET", f"/api/v1/executions/{done['id']}/logs?attempt=3", 404, key=key)


async def test_a_retry_waiting_for_its_turn_can_be_canceled(retrying: tuple[Api, EvictingCompute]) -> None:
    api, compute = retrying
    deps = api.app[CONTEXT].executions.deps  # a wait long enough to cancel inside it
    deps.policy = replace(deps.policy, retry_backoff_seconds=60, retry_max_backoff_seconds=60)
    key, ws = await setup(api)
    started = await run(api, key, ws, "copy", env={"EVICT": "yes"})
    waiting = await retried(api, key, started)
    assert waiting["state"] == "QUEUED" and waiting["retry_at"] is not None
    canceled = await api.json("POST", f"/api/v1/executions/{started['id']}/cancel", 202, key=key)
    assert canceled["state"] == "CANCELED"
    assert [a for (e, a) in compute.submitted if e == started["id"]] == [1]


def test_which_failures_are_retried() -> None:
    assert should_retry(State.SYSTEM_ERROR, "Lost", 1, 3, False)
    assert should_retry(State.SYSTEM_ERROR, "Evicted", 2, 3, False)
    assert not should_retry(State.SYSTEM_ERROR, "Evicted", 3, 3, False)  # the limit
    assert not should_retry(State.SYSTEM_ERROR, "QuotaExceeded", 1, 3, False)  # not a known transient
    assert not should_retry(State.EXECUTOR_ERROR, "ExitCode", 1, 3, False)
    assert should_retry(State.EXECUTOR_ERROR, "ExitCode", 1, 3, True)
    assert not should_retry(State.CANCELED, "Canceled", 1, 3, True)


async def test_a_retry_waiting_when_the_service_stops_runs_after_the_restart(
    settings: Settings, tmp_path: Path, contract
) -> None:  # type: ignore[no-untyped-def]
    # A wait of 3 to 6 s: the service is stopped well inside it, however slowly the machine runs.
    settings = retry_settings(settings, tmp_path, backoff=6)
    first = EvictingCompute(build_compute(settings, CollectorRegistry()), evictions=1)
    api, close = await live_api(settings, contract, compute=first)
    key, ws = await setup(api)
    started = await run(api, key, ws, "copy", env={"EVICT": "yes"})
    waiting = await retried(api, key, started)
    await close()  # stopped while the retry waits for its turn
    second = EvictingCompute(build_compute(settings, CollectorRegistry()), evictions=1)
    api, close = await live_api(settings, contract, compute=second)
    try:
        done = await until(api, key, waiting, FINAL)
        assert done["state"] == "COMPLETE" and done["attempt"] == 2, done
        assert second.submitted == [(started["id"], 2)]
    finally:
        await close()
