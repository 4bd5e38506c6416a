"""The Kubernetes backend against a real cluster (kind, say): `PROVIDER_TEST_KUBECONFIG=...`.

Skipped without it. Each run works in a namespace of its own, removed afterwards. The sidecar
image defaults to busybox, which has no `stage-in` command: a real pod then fails in stage-in,
which the backend must report as SYSTEM_ERROR/StageIn; with PROVIDER_TEST_SIDECAR_IMAGE set to the
project's sidecar image the same tests still hold for the failures they provoke.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from kubernetes_asyncio import client as k8s

from provider.backends.compute.kubernetes import JobSettings, KubernetesCompute, KubernetesOptions
from provider.backends.compute.kubernetes.client import load_configuration
from provider.domain.executions import State
from tests.test_kubernetes_backend import Recorder, dummy_asset, job_spec

KUBECONFIG = os.environ.get("PROVIDER_TEST_KUBECONFIG", "")
pytestmark = [
    pytest.mark.k8s_real,
    pytest.mark.skipif(not KUBECONFIG, reason="PROVIDER_TEST_KUBECONFIG is not set"),
]


@pytest.fixture
async def namespace() -> AsyncIterator[str]:
    name = f"provider-test-{uuid.uuid4().hex[:8]}"
    configuration = await load_configuration(Path(KUBECONFIG), None)
    async with k8s.ApiClient(configuration) as api_client:
        core = k8s.CoreV1Api(api_client)
        await core.create_namespace({"metadata": {"name": name}})
        try:
            yield name
        finally:
            await core.delete_namespace(name)


@pytest.fixture
async def backend(namespace: str) -> AsyncIterator[tuple[KubernetesCompute, Recorder]]:
    image = os.environ.get("PROVIDER_TEST_SIDECAR_IMAGE", "busybox:1.36")
    compute = KubernetesCompute(
        KubernetesOptions(
            job=JobSettings(namespace=namespace, sidecar_image=image, ttl_seconds_after_finished=60),
            kubeconfig=Path(KUBECONFIG),
            lease_seconds=5,
            renew_seconds=1,
            image_pull_grace_seconds=20,
        )
    )
    recorder = Recorder()
    await compute.start(recorder, recorder.reconcile)
    deadline = time.monotonic() + 30
    while not compute.leading:
        assert time.monotonic() < deadline, "no leadership on the real cluster"
        await asyncio.sleep(0.2)
    yield compute, recorder
    await compute.stop()


async def test_a_real_pod_that_fails_in_stage_in(backend: tuple[KubernetesCompute, Recorder]) -> None:
    compute, recorder = backend
    spec = job_spec()
    await compute.submit(spec)
    event = await recorder.wait_for(spec.execution_id, State.SYSTEM_ERROR, within=180)
    assert event.reason in ("StageIn", "ImagePull"), event
    assert State.INITIALIZING in recorder.states(spec.execution_id)


async def test_an_image_that_does_not_exist(backend: tuple[KubernetesCompute, Recorder]) -> None:
    compute, recorder = backend
    asset = dummy_asset().model_copy(update={"image": "registry.invalid/none:0"})
    spec = dataclasses.replace(job_spec(), asset=asset)
    await compute.submit(spec)
    event = await recorder.wait_for(spec.execution_id, State.SYSTEM_ERROR, within=180)
    assert event.reason in ("ImagePull", "StageIn"), event


async def test_cancel_removes_the_job(backend: tuple[KubernetesCompute, Recorder]) -> None:
    compute, recorder = backend
    spec = job_spec()
    await compute.submit(spec)
    await compute.cancel(spec.execution_id)
    await recorder.wait_for(spec.execution_id, State.CANCELED)
    assert spec.execution_id not in await compute.known()
