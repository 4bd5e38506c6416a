"""The fake Kubernetes API server, driven over HTTP by the real kubernetes_asyncio client.

These tests pin the wire protocol and the semantics the Kubernetes backend relies on, so a
test that passes against the fake exercises the same client code paths a real cluster would.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from kubernetes_asyncio import client, config, watch
from kubernetes_asyncio.client.exceptions import ApiException

from tests.conftest import WAIT_SECONDS
from tests.fake_kube import KubeError
from tests.fake_kube.fixtures import fake_kube  # noqa: F401
from tests.fake_kube.rbac import allows
from tests.fake_kube.server import FakeKube

NS = "default"


@pytest_asyncio.fixture
async def api(fake_kube: FakeKube) -> AsyncIterator[client.ApiClient]:  # noqa: F811
    async with client.ApiClient(client.Configuration(host=fake_kube.url)) as api_client:
        yield api_client


def status_of(error: ApiException) -> dict[str, Any]:
    body = error.body.decode() if isinstance(error.body, bytes) else error.body
    return json.loads(body)


async def expect_error(call: Any, code: int) -> dict[str, Any]:
    with pytest.raises(ApiException) as caught:
        await call
    assert caught.value.status == code, caught.value.body
    status = status_of(caught.value)
    assert status["kind"] == "Status" and status["apiVersion"] == "v1"
    assert status["status"] == "Failure" and status["code"] == code
    return status


def job_body(name: str = "job-a", **spec: Any) -> dict[str, Any]:
    template_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "initContainers": [{"name": "fetch", "image": "busybox:1.36"}],
        "containers": [{"name": "main", "image": "python:3.12"}],
    }
    body = {"metadata": {"name": name}, "spec": {"template": {"spec": template_spec}}}
    body["spec"].update(spec)
    return body


def pod_body(name: str, labels: dict[str, str] | None = None, node: str | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "containers": [{"name": "a", "image": "busybox:1"}, {"name": "b", "image": "busybox:1"}]
    }
    if node:
        spec["nodeName"] = node
    return {"metadata": {"name": name, "labels": labels or {}}, "spec": spec}


async def read_events(
    response: aiohttp.ClientResponse, count: int, within: float = 3.0
) -> list[dict[str, Any]]:
    """Read `count` watch events, one JSON object per line, as the backend does."""
    events = []
    async with asyncio.timeout(within):
        while len(events) < count:
            line = await response.content.readline()
            assert line, f"stream ended after {events}"
            events.append(json.loads(line))
    return events


# --------------------------------------------------------------------------- basics


async def test_kubeconfig_and_version(fake_kube: FakeKube, tmp_path: Path) -> None:  # noqa: F811
    path = fake_kube.write_kubeconfig(tmp_path / "kube" / "config", namespace="team-a")
    configuration = client.Configuration()
    loader = await config.load_kube_config(config_file=str(path), client_configuration=configuration)
    assert configuration.host == fake_kube.url
    assert loader.current_context["name"] == "fake"
    assert loader.current_context["context"]["namespace"] == "team-a"
    async with client.ApiClient(configuration) as api_client:
        info = await client.VersionApi(api_client).get_code()
        assert info.git_version == "v1.34.0" and info.major == "1" and info.minor == "34"
        async with aiohttp.ClientSession() as session, session.get(fake_kube.url + "/version/") as response:
            assert response.status == 200
            assert (await response.json())["gitVersion"] == "v1.34.0"


async def test_unknown_paths_and_methods(fake_kube: FakeKube) -> None:  # noqa: F811
    async with aiohttp.ClientSession() as session:
        async with session.get(fake_kube.url + "/apis/apps/v1/namespaces/default/deployments") as response:
            assert response.status == 404
            body = await response.json()
            assert body["message"] == "the server could not find the requested resource"
        async with session.post(fake_kube.url + "/api/v1/namespaces/default/pods/x", json={}) as response:
            assert response.status == 405
            assert (await response.json())["reason"] == "MethodNotAllowed"
        async with session.get(fake_kube.url + "/api/v1/namespaces/default/configmaps/x/status") as response:
            assert response.status == 404


@pytest.mark.parametrize(
    ("plural", "create", "read", "list_", "replace", "delete", "body", "list_kind"),
    [
        (
            "configmaps",
            "create_namespaced_config_map",
            "read_namespaced_config_map",
            "list_namespaced_config_map",
            "replace_namespaced_config_map",
            "delete_namespaced_config_map",
            {"data": {"k": "v"}},
            "ConfigMapList",
        ),
        (
            "secrets",
            "create_namespaced_secret",
            "read_namespaced_secret",
            "list_namespaced_secret",
            "replace_namespaced_secret",
            "delete_namespaced_secret",
            {"data": {"k": base64.b64encode(b"v").decode()}},
            "SecretList",
        ),
        (
            "leases",
            "create_namespaced_lease",
            "read_namespaced_lease",
            "list_namespaced_lease",
            "replace_namespaced_lease",
            "delete_namespaced_lease",
            {"spec": {"holderIdentity": "a", "leaseDurationSeconds": 15}},
            "LeaseList",
        ),
    ],
)
async def test_crud_round_trip(
    fake_kube: FakeKube,  # noqa: F811
    api: client.ApiClient,
    plural: str,
    create: str,
    read: str,
    list_: str,
    replace: str,
    delete: str,
    body: dict[str, Any],
    list_kind: str,
) -> None:
    group = client.CoordinationV1Api(api) if plural == "leases" else client.CoreV1Api(api)
    response = await getattr(group, create)(
        NS, {"metadata": {"name": "thing"}, **body}, _preload_content=False
    )
    assert response.status == 201
    created = await response.json()
    meta = created["metadata"]
    assert meta["namespace"] == NS and len(meta["uid"]) == 36
    assert meta["resourceVersion"].isdigit()
    datetime.strptime(meta["creationTimestamp"], "%Y-%m-%dT%H:%M:%SZ")

    got = await (await getattr(group, read)("thing", NS, _preload_content=False)).json()
    assert got == created

    listed = await (await getattr(group, list_)(NS, _preload_content=False)).json()
    assert listed["kind"] == list_kind
    assert int(listed["metadata"]["resourceVersion"]) >= int(meta["resourceVersion"])
    assert [item["metadata"]["name"] for item in listed["items"]] == ["thing"]
    assert "kind" not in listed["items"][0] and "apiVersion" not in listed["items"][0]

    stale = {**created, "metadata": {**meta, "resourceVersion": "1"}}
    status = await expect_error(getattr(group, replace)("thing", NS, stale), 409)
    assert status["reason"] == "Conflict"
    qualified = "leases.coordination.k8s.io" if plural == "leases" else plural
    assert status["message"] == (
        f'Operation cannot be fulfilled on {qualified} "thing": the object has been modified; '
        "please apply your changes to the latest version and try again"
    )

    changed = {**created, "metadata": {**meta, "labels": {"x": "y"}}}
    replaced = await (await getattr(group, replace)("thing", NS, changed, _preload_content=False)).json()
    assert replaced["metadata"]["labels"] == {"x": "y"}
    assert int(replaced["metadata"]["resourceVersion"]) > int(meta["resourceVersion"])
    assert replaced["metadata"]["uid"] == meta["uid"]

    deleted = await (await getattr(group, delete)("thing", NS, _preload_content=False)).json()
    assert deleted["kind"] == "Status" and deleted["status"] == "Success"
    assert deleted["details"]["name"] == "thing" and deleted["details"]["kind"] == plural
    assert deleted["details"]["uid"] == meta["uid"]
    assert "code" not in deleted

    status = await expect_error(getattr(group, read)("thing", NS), 404)
    assert status["reason"] == "NotFound" and status["message"] == f'{qualified} "thing" not found'
    assert status["details"]["name"] == "thing" and status["details"]["kind"] == plural


async def test_generate_name_unknown_namespace_and_already_exists(api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    made = await core.create_namespaced_config_map(NS, {"metadata": {"generateName": "cfg-"}})
    assert made.metadata.name.startswith("cfg-") and len(made.metadata.name) == 9

    status = await expect_error(core.create_namespaced_config_map("nope", {"metadata": {"name": "x"}}), 404)
    assert status["message"] == 'namespaces "nope" not found'
    assert status["details"] == {"name": "nope", "kind": "namespaces"}

    await core.create_namespaced_config_map(NS, {"metadata": {"name": "dup"}})
    status = await expect_error(core.create_namespaced_config_map(NS, {"metadata": {"name": "dup"}}), 409)
    assert status["reason"] == "AlreadyExists" and status["message"] == 'configmaps "dup" already exists'


async def test_invalid_objects_are_rejected_like_the_server(api: client.ApiClient) -> None:
    batch = client.BatchV1Api(api)
    core = client.CoreV1Api(api)

    status = await expect_error(batch.create_namespaced_job(NS, {"metadata": {"name": "j"}, "spec": {}}), 422)
    assert status["reason"] == "Invalid"
    assert status["message"].startswith('Job.batch "j" is invalid: ')
    assert status["details"]["kind"] == "Job" and status["details"]["group"] == "batch"
    assert {
        "reason": "FieldValueRequired",
        "message": "Required value",
        "field": "spec.template.spec.containers",
    } in (status["details"]["causes"])

    body = job_body("j")
    body["spec"]["template"]["spec"]["containers"] = [{"name": "main"}]
    status = await expect_error(batch.create_namespaced_job(NS, body), 422)
    assert (
        status["message"]
        == 'Job.batch "j" is invalid: spec.template.spec.containers[0].image: Required value'
    )

    body = job_body("j")
    del body["spec"]["template"]["spec"]["restartPolicy"]
    status = await expect_error(batch.create_namespaced_job(NS, body), 422)
    assert status["details"]["causes"] == [
        {
            "reason": "FieldValueNotSupported",
            "message": 'Unsupported value: "Always": supported values: "OnFailure", "Never"',
            "field": "spec.template.spec.restartPolicy",
        }
    ]

    status = await expect_error(batch.create_namespaced_job(NS, job_body("Bad_Name")), 422)
    assert status["details"]["causes"][0]["field"] == "metadata.name"
    assert "a lowercase RFC 1123 subdomain" in status["message"]

    long_name = "a" * 64
    status = await expect_error(batch.create_namespaced_job(NS, job_body(long_name)), 422)
    assert (
        f'spec.template.labels: Invalid value: "{long_name}": must be no more than 63 characters'
        in (status["message"])
    )

    status = await expect_error(core.create_namespaced_config_map(NS, {"data": {}}), 422)
    assert status["message"] == (
        'ConfigMap "" is invalid: metadata.name: Required value: name or generateName is required'
    )

    status = await expect_error(
        core.create_namespaced_config_map(NS, {"metadata": {"name": "x", "namespace": "other"}}), 400
    )
    assert status["reason"] == "BadRequest"
    assert (
        status["message"]
        == "the namespace of the provided object does not match the namespace sent on the request"
    )


async def test_job_defaults(api: client.ApiClient) -> None:
    batch = client.BatchV1Api(api)
    body = job_body()
    body["spec"]["template"]["metadata"] = {"labels": {"app": "compute"}}
    job = await (await batch.create_namespaced_job(NS, body, _preload_content=False)).json()
    uid = job["metadata"]["uid"]
    spec = job["spec"]
    assert spec["selector"] == {"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}
    assert spec["template"]["metadata"]["labels"] == {
        "app": "compute",
        "controller-uid": uid,
        "batch.kubernetes.io/controller-uid": uid,
        "job-name": "job-a",
        "batch.kubernetes.io/job-name": "job-a",
    }
    assert (spec["backoffLimit"], spec["completions"], spec["parallelism"]) == (6, 1, 1)
    assert spec["template"]["spec"]["containers"][0]["imagePullPolicy"] == "IfNotPresent"
    assert job["status"] == {}
    assert job["metadata"]["generation"] == 1
    assert job["metadata"]["labels"] == {"app": "compute"}


async def test_secret_string_data_and_base64(api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    created = await (
        await core.create_namespaced_secret(
            NS,
            {
                "metadata": {"name": "s"},
                "data": {"a": base64.b64encode(b"1").decode()},
                "stringData": {"b": "two"},
            },
            _preload_content=False,
        )
    ).json()
    assert created["data"] == {"a": "MQ==", "b": base64.b64encode(b"two").decode()}
    assert "stringData" not in created and created["type"] == "Opaque"

    status = await expect_error(
        core.create_namespaced_secret(NS, {"metadata": {"name": "bad"}, "data": {"a": "not base64!"}}), 400
    )
    assert status["message"].startswith(
        'Secret in version "v1" cannot be handled as a Secret: illegal base64 data'
    )


async def test_status_subresource_and_main_resource_split(api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    pod = await (await core.create_namespaced_pod(NS, pod_body("p"), _preload_content=False)).json()
    assert pod["status"]["phase"] == "Pending"

    pod["status"]["phase"] = "Running"
    pod["metadata"]["labels"] = {"seen": "yes"}
    replaced = await (await core.replace_namespaced_pod("p", NS, pod, _preload_content=False)).json()
    assert replaced["status"]["phase"] == "Pending"
    assert replaced["metadata"]["labels"] == {"seen": "yes"}

    patched = await (
        await core.patch_namespaced_pod_status(
            "p",
            NS,
            {"status": {"phase": "Running"}, "spec": {"nodeName": "elsewhere"}},
            _preload_content=False,
        )
    ).json()
    assert patched["status"]["phase"] == "Running"
    assert "nodeName" not in patched["spec"]
    got = await (await core.read_namespaced_pod_status("p", NS, _preload_content=False)).json()
    assert got["status"]["phase"] == "Running"


async def test_noop_update_keeps_resource_version(api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    created = await (
        await core.create_namespaced_config_map(
            NS, {"metadata": {"name": "c"}, "data": {"a": "1"}}, _preload_content=False
        )
    ).json()
    same = await (await core.replace_namespaced_config_map("c", NS, created, _preload_content=False)).json()
    assert same["metadata"]["resourceVersion"] == created["metadata"]["resourceVersion"]


# --------------------------------------------------------------------------- patch


async def test_patch_flavours(fake_kube: FakeKube, api: client.ApiClient) -> None:  # noqa: F811
    core = client.CoreV1Api(api)
    await core.create_namespaced_pod(NS, pod_body("p", {"keep": "1", "drop": "1"}))

    # A dict body goes out as a strategic merge patch: containers merge by name.
    patched = await core.patch_namespaced_pod(
        "p", NS, {"spec": {"containers": [{"name": "b", "image": "busybox:2"}]}}, _preload_content=False
    )
    body = await patched.json()
    assert [(c["name"], c["image"]) for c in body["spec"]["containers"]] == [
        ("a", "busybox:1"),
        ("b", "busybox:2"),
    ]
    assert fake_kube.requests[-1].content_type == "application/strategic-merge-patch+json"

    # The same body as a JSON merge patch replaces the list, which a pod update may not do.
    status = await expect_error(
        core.patch_namespaced_pod(
            "p",
            NS,
            {"spec": {"containers": [{"name": "b", "image": "busybox:3"}]}},
            _content_type="application/merge-patch+json",
        ),
        422,
    )
    assert status["details"]["causes"][0]["field"] == "spec"
    assert "pod updates may not change fields" in status["message"]

    merged = await core.patch_namespaced_pod(
        "p",
        NS,
        {"metadata": {"labels": {"drop": None, "new": "2"}}},
        _content_type="application/merge-patch+json",
    )
    assert merged.metadata.labels == {"keep": "1", "new": "2"}

    # A list body goes out as a JSON patch.
    operations = [
        {"op": "test", "path": "/metadata/labels/keep", "value": "1"},
        {"op": "add", "path": "/metadata/annotations", "value": {"a": "1"}},
        {"op": "replace", "path": "/metadata/labels/new", "value": "3"},
        {"op": "copy", "from": "/metadata/labels/new", "path": "/metadata/labels/copied"},
        {"op": "remove", "path": "/metadata/labels/keep"},
    ]
    result = await core.patch_namespaced_pod("p", NS, operations)
    assert fake_kube.requests[-1].content_type == "application/json-patch+json"
    assert result.metadata.labels == {"new": "3", "copied": "3"}
    assert result.metadata.annotations == {"a": "1"}

    status = await expect_error(
        core.patch_namespaced_pod("p", NS, [{"op": "test", "path": "/metadata/labels/new", "value": "nope"}]),
        422,
    )
    assert status["reason"] == "Invalid"

    status = await expect_error(
        core.patch_namespaced_pod("p", NS, {"metadata": {"labels": {}}}, _content_type="application/json"),
        415,
    )
    assert status["reason"] == "UnsupportedMediaType"
    assert "application/strategic-merge-patch+json" in status["message"]

    status = await expect_error(core.patch_namespaced_pod("ghost", NS, {"metadata": {}}), 404)
    assert status["message"] == 'pods "ghost" not found'

    stale = {"metadata": {"resourceVersion": "1", "labels": {"x": "y"}}}
    status = await expect_error(core.patch_namespaced_pod("p", NS, stale), 409)
    assert status["reason"] == "Conflict"


async def test_strategic_merge_of_job_conditions(fake_kube: FakeKube, api: client.ApiClient) -> None:  # noqa: F811
    batch = client.BatchV1Api(api)
    await batch.create_namespaced_job(NS, job_body())
    fake_kube.set_job_condition(NS, "job-a", "SuccessCriteriaMet")
    result = await batch.patch_namespaced_job_status(
        "job-a",
        NS,
        {"status": {"conditions": [{"type": "Complete", "status": "True"}]}},
        _preload_content=False,
    )
    conditions = (await result.json())["status"]["conditions"]
    assert [c["type"] for c in conditions] == ["SuccessCriteriaMet", "Complete"]


# --------------------------------------------------------------------------- leases


async def test_lease_concurrency_and_micro_times(api: client.ApiClient) -> None:
    leases = client.CoordinationV1Api(api)
    renew = datetime(2025, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)
    body = {
        "metadata": {"name": "leader"},
        "spec": {"holderIdentity": "a", "leaseDurationSeconds": 15, "renewTime": renew},
    }
    created = await (await leases.create_namespaced_lease(NS, body, _preload_content=False)).json()
    assert created["spec"]["renewTime"] == "2025-01-02T03:04:05.123456Z"

    unconditional = {
        "metadata": {"name": "leader"},
        "spec": {"holderIdentity": "b", "leaseDurationSeconds": 15},
    }
    status = await expect_error(leases.replace_namespaced_lease("leader", NS, unconditional), 422)
    assert status["message"] == (
        'leases.coordination.k8s.io "leader" is invalid: metadata.resourceVersion: Invalid value: 0x0: '
        "must be specified for an update"
    )

    current = created["metadata"]["resourceVersion"]
    taken = {"metadata": {"name": "leader", "resourceVersion": current}, "spec": {"holderIdentity": "b"}}
    updated = await leases.replace_namespaced_lease("leader", NS, taken)
    assert updated.spec.holder_identity == "b"
    status = await expect_error(leases.replace_namespaced_lease("leader", NS, taken), 409)
    assert status["reason"] == "Conflict"

    # PUT may create a lease (AllowCreateOnUpdate), and naive times are refused like Go's parser does.
    made = await leases.replace_namespaced_lease(
        "other", NS, {"metadata": {"name": "other"}, "spec": {}}, _preload_content=False
    )
    assert made.status == 201
    naive = {"metadata": {"name": "naive"}, "spec": {"renewTime": "2025-01-02T03:04:05"}}
    status = await expect_error(leases.create_namespaced_lease(NS, naive), 400)
    assert "cannot be handled as a Lease" in status["message"]


async def test_client_leader_election_takes_the_lease(fake_kube: FakeKube, api: client.ApiClient) -> None:  # noqa: F811
    from kubernetes_asyncio.leaderelection import electionconfig, leaderelection
    from kubernetes_asyncio.leaderelection.resourcelock.leaselock import LeaseLock

    leading = asyncio.Event()

    async def started() -> None:
        leading.set()

    async def stopped() -> None:
        pass

    lock = LeaseLock("provider-leader", NS, "replica-1", api)
    elector = leaderelection.LeaderElection(electionconfig.Config(lock, 3, 2, 1, started, stopped))
    task = asyncio.create_task(elector.run())
    try:
        async with asyncio.timeout(WAIT_SECONDS):
            await leading.wait()
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    lease = fake_kube.get("leases", NS, "provider-leader")
    assert lease is not None
    assert lease["spec"]["holderIdentity"] == "replica-1" and lease["spec"]["leaseDurationSeconds"] == 3
    assert lease["spec"]["renewTime"].endswith("Z")


# --------------------------------------------------------------------------- listing


async def test_label_and_field_selectors(fake_kube: FakeKube, api: client.ApiClient) -> None:  # noqa: F811
    core = client.CoreV1Api(api)
    for name, labels in (("p1", {"app": "x", "tier": "a"}), ("p2", {"app": "y"}), ("p3", {"tier": "b"})):
        await core.create_namespaced_pod(NS, pod_body(name, labels))
    fake_kube.set_pod_phase(NS, "p2", "Running")

    async def names(**query: Any) -> list[str]:
        listed = await (await core.list_namespaced_pod(NS, _preload_content=False, **query)).json()
        return [item["metadata"]["name"] for item in listed["items"]]

    assert await names(label_selector="app=x") == ["p1"]
    assert await names(label_selector="app==x") == ["p1"]
    assert await names(label_selector="app!=x") == ["p2", "p3"]
    assert await names(label_selector="app") == ["p1", "p2"]
    assert await names(label_selector="!app") == ["p3"]
    assert await names(label_selector="app in (x, y),tier") == ["p1"]
    assert await names(label_selector="tier notin (a)") == ["p2", "p3"]
    assert await names(field_selector="metadata.name=p3") == ["p3"]
    assert await names(field_selector="status.phase!=Running") == ["p1", "p3"]
    assert await names(field_selector="status.phase==Running", label_selector="app") == ["p2"]

    status = await expect_error(core.list_namespaced_pod(NS, label_selector="app in x"), 400)
    assert status["reason"] == "BadRequest"
    status = await expect_error(core.list_namespaced_pod(NS, field_selector="spec.bogus=1"), 400)
    assert status["message"] == "field label not supported: spec.bogus"


async def test_limit_and_continue(fake_kube: FakeKube, api: client.ApiClient) -> None:  # noqa: F811
    core = client.CoreV1Api(api)
    for index in range(5):
        await core.create_namespaced_config_map(NS, {"metadata": {"name": f"c{index}"}})

    first = await (await core.list_namespaced_config_map(NS, limit=2, _preload_content=False)).json()
    assert [i["metadata"]["name"] for i in first["items"]] == ["c0", "c1"]
    assert first["metadata"]["remainingItemCount"] == 3
    token = first["metadata"]["continue"]

    # Pages are served from the snapshot of the first one.
    await core.create_namespaced_config_map(NS, {"metadata": {"name": "c15"}})
    await core.delete_namespaced_config_map("c3", NS)
    second = await (
        await core.list_namespaced_config_map(NS, limit=2, _continue=token, _preload_content=False)
    ).json()
    assert [i["metadata"]["name"] for i in second["items"]] == ["c2", "c3"]
    assert second["metadata"]["resourceVersion"] == first["metadata"]["resourceVersion"]
    third = await (
        await core.list_namespaced_config_map(
            NS, limit=2, _continue=second["metadata"]["continue"], _preload_content=False
        )
    ).json()
    assert [i["metadata"]["name"] for i in third["items"]] == ["c4"]
    assert "continue" not in third["metadata"]

    # Once that snapshot is compacted away the token expires, with an inconsistent one offered.
    fake_kube.compact()
    status = await expect_error(core.list_namespaced_config_map(NS, limit=2, _continue=token), 410)
    assert status["reason"] == "Expired"
    assert status["message"].startswith("The provided continue parameter is too old")
    rest = await (
        await core.list_namespaced_config_map(
            NS, limit=10, _continue=status["metadata"]["continue"], _preload_content=False
        )
    ).json()
    assert [i["metadata"]["name"] for i in rest["items"]] == ["c15", "c2", "c4"]

    status = await expect_error(core.list_namespaced_config_map(NS, _continue="garbage!"), 400)
    assert status["message"].startswith("continue key is not valid")


# --------------------------------------------------------------------------- watch


async def test_watch_replays_existing_then_streams_changes(
    fake_kube: FakeKube,  # noqa: F811
    api: client.ApiClient,
) -> None:
    core = client.CoreV1Api(api)
    await core.create_namespaced_pod(NS, pod_body("before", {"run": "1"}))
    await core.create_namespaced_pod(NS, pod_body("other", {"run": "2"}))
    response = await core.list_namespaced_pod(NS, label_selector="run=1", watch=True, _preload_content=False)
    try:
        assert response.headers["Content-Type"] == "application/json"
        assert response.headers["Transfer-Encoding"] == "chunked"
        [replayed] = await read_events(response, 1)
        assert replayed["type"] == "ADDED" and replayed["object"]["metadata"]["name"] == "before"
        assert replayed["object"]["kind"] == "Pod" and replayed["object"]["apiVersion"] == "v1"

        await core.create_namespaced_pod(NS, pod_body("after", {"run": "1"}))
        await core.patch_namespaced_pod("other", NS, {"metadata": {"labels": {"touched": "y"}}})
        await core.patch_namespaced_pod("after", NS, {"metadata": {"labels": {"x": "y"}}})
        await core.patch_namespaced_pod("before", NS, {"metadata": {"labels": {"run": "9"}}})
        await core.patch_namespaced_pod("other", NS, {"metadata": {"labels": {"run": "1"}}})
        events = await read_events(response, 4)
        assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [
            ("ADDED", "after"),
            ("MODIFIED", "after"),
            ("DELETED", "before"),  # no longer matches the selector
            ("ADDED", "other"),  # starts to match
        ]
        versions = [int(e["object"]["metadata"]["resourceVersion"]) for e in events]
        assert versions == sorted(versions)
        assert events[2]["object"]["metadata"]["labels"] == {"run": "1"}
    finally:
        response.release()


async def test_watch_resumes_from_resource_version(fake_kube: FakeKube, api: client.ApiClient) -> None:  # noqa: F811
    core = client.CoreV1Api(api)
    created = await core.create_namespaced_config_map(NS, {"metadata": {"name": "c"}})
    since = created.metadata.resource_version
    await core.patch_namespaced_config_map("c", NS, {"data": {"a": "1"}})
    await core.delete_namespaced_config_map("c", NS)
    seen = []
    async with watch.Watch() as stream:
        async for event in stream.stream(
            core.list_namespaced_config_map, NS, resource_version=since, timeout_seconds=1
        ):
            seen.append((event["type"], event["object"].metadata.name, event["object"].data))
    assert seen == [("MODIFIED", "c", {"a": "1"}), ("DELETED", "c", {"a": "1"})]


async def test_watch_from_compacted_version_is_expired(fake_kube: FakeKube, api: client.ApiClient) -> None:  # noqa: F811
    core = client.CoreV1Api(api)
    created = await core.create_namespaced_config_map(NS, {"metadata": {"name": "c"}})
    since = created.metadata.resource_version
    await core.patch_namespaced_config_map("c", NS, {"data": {"a": "1"}})
    compacted = fake_kube.compact()

    response = await core.list_namespaced_config_map(
        NS, watch=True, resource_version=since, _preload_content=False
    )
    try:
        assert response.status == 200
        [event] = await read_events(response, 1)
        assert await response.content.readline() == b""
    finally:
        response.release()
    assert event["type"] == "ERROR"
    assert event["object"] == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": f"too old resource version: {since} ({compacted})",
        "reason": "Expired",
        "code": 410,
    }

    # The client's Watch turns the ERROR event into ApiException(410); watching forever it
    # retries once from the same version first.
    before = len(fake_kube.watch_requests)
    with pytest.raises(ApiException) as caught:
        async with watch.Watch() as stream:
            async for _ in stream.stream(core.list_namespaced_config_map, NS, resource_version=since):
                pass
    assert caught.value.status == 410
    assert "too old resource version" in caught.value.reason
    assert len(fake_kube.watch_requests) - before == 2

    # Watching from the current version is fine.
    async with watch.Watch() as stream:
        events = [
            e
            async for e in stream.stream(
                core.list_namespaced_config_map, NS, resource_version=str(compacted), timeout_seconds=1
            )
        ]
    assert events == []


async def test_bookmarks_and_initial_events_end(fake_kube: FakeKube, api: client.ApiClient) -> None:  # noqa: F811
    fake_kube.bookmark_interval = 0.1
    batch = client.BatchV1Api(api)
    await batch.create_namespaced_job(NS, job_body())
    response = await batch.list_namespaced_job(
        NS,
        watch=True,
        allow_watch_bookmarks=True,
        send_initial_events=True,
        resource_version_match="NotOlderThan",
        _preload_content=False,
    )
    try:
        added, end, bookmark = await read_events(response, 3)
    finally:
        response.release()
    assert added["type"] == "ADDED"
    assert end == {
        "type": "BOOKMARK",
        "object": {
            "kind": "Job",
            "apiVersion": "batch/v1",
            "metadata": {
                "resourceVersion": fake_kube.resource_version,
                "annotations": {"k8s.io/initial-events-end": "true"},
            },
        },
    }
    assert bookmark == {
        "type": "BOOKMARK",
        "object": {
            "kind": "Job",
            "apiVersion": "batch/v1",
            "metadata": {"resourceVersion": fake_kube.resource_version},
        },
    }

    async with watch.Watch() as stream:
        types = []
        async for event in stream.stream(
            batch.list_namespaced_job, NS, allow_watch_bookmarks=True, timeout_seconds=1
        ):
            types.append(event["type"])
        assert stream.resource_version == fake_kube.resource_version
    assert types[0] == "ADDED" and "BOOKMARK" in types


async def test_timeout_seconds_ends_the_stream_cleanly(api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    started = time.monotonic()
    response = await core.list_namespaced_pod(NS, watch=True, timeout_seconds=1, _preload_content=False)
    try:
        assert await response.content.read() == b""
    finally:
        response.release()
    assert 0.9 < time.monotonic() - started < 2.5


async def test_drop_watches_and_open_watch_counts(fake_kube: FakeKube, api: client.ApiClient) -> None:  # noqa: F811
    core = client.CoreV1Api(api)
    batch = client.BatchV1Api(api)
    await core.create_namespace({"metadata": {"name": "team"}})
    pods = await core.list_namespaced_pod("team", watch=True, label_selector="a=b", _preload_content=False)
    jobs = await batch.list_namespaced_job("team", watch=True, _preload_content=False)
    everywhere = await core.list_pod_for_all_namespaces(watch=True, _preload_content=False)
    try:
        await fake_kube.wait_for_watches("pods", "team")
        await fake_kube.wait_for_watches("jobs", "team")
        await fake_kube.wait_for_watches("pods", None)
        assert fake_kube.open_watches == {("pods", "team"): 1, ("jobs", "team"): 1, ("pods", None): 1}
        assert [w.params.get("labelSelector") for w in fake_kube.watch_requests] == ["a=b", None, None]
        assert [(w["resource"], w["namespace"]) for w in fake_kube.watch_requests] == [
            ("pods", "team"),
            ("jobs", "team"),
            ("pods", None),
        ]
        assert fake_kube.watch_requests[0]["labelSelector"] == "a=b"

        assert fake_kube.drop_watches() == 3
        with pytest.raises(aiohttp.ClientPayloadError):
            async with asyncio.timeout(WAIT_SECONDS):
                await pods.content.read()
    finally:
        for response in (pods, jobs, everywhere):
            response.release()
    await fake_kube.wait_until(lambda: not fake_kube.open_watches, within=WAIT_SECONDS)

    clean = await core.list_namespaced_pod("team", watch=True, _preload_content=False)
    try:
        await fake_kube.wait_for_watches("pods", "team")
        fake_kube.drop_watches(abrupt=False)
        async with asyncio.timeout(WAIT_SECONDS):
            assert await clean.content.read() == b""
    finally:
        clean.release()


# --------------------------------------------------------------------------- logs


async def test_pod_logs(fake_kube: FakeKube, api: client.ApiClient) -> None:  # noqa: F811
    core = client.CoreV1Api(api)
    batch = client.BatchV1Api(api)
    await batch.create_namespaced_job(NS, job_body())
    pod = fake_kube.create_job_pod(NS, "job-a")["metadata"]["name"]

    status = await expect_error(core.read_namespaced_pod_log(pod, NS, container="main"), 400)
    assert status["message"] == f'container "main" in pod "{pod}" is waiting to start: PodInitializing'
    status = await expect_error(core.read_namespaced_pod_log(pod, NS, container="nope"), 400)
    assert status["message"] == f"container nope is not valid for pod {pod}"

    fake_kube.set_container_state(NS, pod, "fetch", "running")
    fake_kube.write_log(NS, pod, "fetch", "one\ntwo\nthree\n")
    assert await core.read_namespaced_pod_log(pod, NS, container="fetch") == "one\ntwo\nthree\n"
    assert await core.read_namespaced_pod_log(pod, NS, container="fetch", tail_lines=2) == "two\nthree\n"
    assert await core.read_namespaced_pod_log(pod, NS, container="fetch", limit_bytes=5) == "one\nt"
    stamped = await core.read_namespaced_pod_log(pod, NS, container="fetch", timestamps=True, tail_lines=1)
    stamp, text = stamped.split(" ", 1)
    assert text == "three\n" and len(stamp) == len("2025-01-01T00:00:00.000000000Z") and stamp.endswith("Z")
    fake_kube.set_container_state(NS, pod, "fetch", "terminated", exit_code=0)

    fake_kube.set_container_state(NS, pod, "main", "waiting", reason="ErrImagePull")
    status = await expect_error(core.read_namespaced_pod_log(pod, NS, container="main"), 400)
    assert status["message"] == f'container "main" in pod "{pod}" is waiting to start: image can\'t be pulled'

    fake_kube.set_container_state(NS, pod, "main", "running")
    fake_kube.write_log(NS, pod, "main", "early\n")
    response = await core.read_namespaced_pod_log(
        pod, NS, container="main", follow=True, _preload_content=False
    )
    try:
        assert response.headers["Content-Type"].startswith("text/plain")
        assert await response.content.readline() == b"early\n"
        fake_kube.write_log(NS, pod, "main", "later\n")
        async with asyncio.timeout(WAIT_SECONDS):
            assert await response.content.readline() == b"later\n"
        fake_kube.write_log(NS, pod, "main", "last\n")
        fake_kube.set_container_state(NS, pod, "main", "terminated", exit_code=3)
        async with asyncio.timeout(WAIT_SECONDS):
            assert await response.content.read() == b"last\n"
    finally:
        response.release()
    pod_now = fake_kube.get("pods", NS, pod)
    assert pod_now is not None
    terminated = pod_now["status"]["containerStatuses"][0]["state"]["terminated"]
    assert terminated["exitCode"] == 3 and terminated["reason"] == "Error"
    assert pod_now["status"]["initContainerStatuses"][0]["state"]["terminated"]["reason"] == "Completed"


async def test_log_needs_a_container_name_when_ambiguous(fake_kube: FakeKube, api: client.ApiClient) -> None:  # noqa: F811
    core = client.CoreV1Api(api)
    await core.create_namespaced_pod(NS, pod_body("two", node="node-1"))
    status = await expect_error(core.read_namespaced_pod_log("two", NS), 400)
    assert status["message"] == "a container name must be specified for pod two, choose one of: [a b]"
    status = await expect_error(core.read_namespaced_pod_log("two", NS, container="b"), 400)
    assert status["message"] == 'container "b" in pod "two" is waiting to start: ContainerCreating'


# --------------------------------------------------------------------------- deletion


async def test_background_delete_collects_dependents(fake_kube: FakeKube, api: client.ApiClient) -> None:  # noqa: F811
    core = client.CoreV1Api(api)
    batch = client.BatchV1Api(api)
    job = await batch.create_namespaced_job(NS, job_body())
    owner = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "name": "job-a",
        "uid": job.metadata.uid,
        "controller": True,
    }
    await core.create_namespaced_secret(NS, {"metadata": {"name": "job-a-env", "ownerReferences": [owner]}})
    pod = fake_kube.create_job_pod(NS, "job-a")["metadata"]["name"]
    fake_kube.set_container_state(NS, pod, "main", "running")
    events = await core.list_namespaced_pod(
        NS, watch=True, resource_version=fake_kube.resource_version, _preload_content=False
    )
    try:
        response = await batch.delete_namespaced_job(
            "job-a", NS, propagation_policy="Background", _preload_content=False
        )
        body = await response.json()
        assert response.status == 200 and "Warning" not in response.headers
        assert body["kind"] == "Status" and body["status"] == "Success"
        assert body["details"] == {"name": "job-a", "group": "batch", "kind": "jobs", "uid": job.metadata.uid}
        await fake_kube.settle()
        assert fake_kube.objects("pods", NS) == [] and fake_kube.objects("secrets", NS) == []
        seen = await read_events(events, 4)
    finally:
        events.release()
    assert [e["type"] for e in seen] == ["MODIFIED", "MODIFIED", "MODIFIED", "DELETED"]
    assert seen[0]["object"]["metadata"]["deletionGracePeriodSeconds"] == 30
    assert seen[1]["object"]["status"]["phase"] == "Failed"


async def test_default_job_delete_orphans_pods(fake_kube: FakeKube, api: client.ApiClient) -> None:  # noqa: F811
    batch = client.BatchV1Api(api)
    await batch.create_namespaced_job(NS, job_body())
    pod = fake_kube.create_job_pod(NS, "job-a")["metadata"]["name"]
    response = await batch.delete_namespaced_job("job-a", NS, _preload_content=False)
    body = await response.json()
    assert response.status == 200
    assert "child pods are preserved by default" in response.headers["Warning"]
    assert body["kind"] == "Job" and body["metadata"]["finalizers"] == ["orphan"]
    assert body["metadata"]["deletionTimestamp"]
    await fake_kube.settle()
    assert fake_kube.get("jobs", NS, "job-a") is None
    orphan = fake_kube.get("pods", NS, pod)
    assert orphan is not None and "ownerReferences" not in orphan["metadata"]


async def test_foreground_delete_waits_for_dependents(fake_kube: FakeKube, api: client.ApiClient) -> None:  # noqa: F811
    fake_kube.pod_termination_delay = None
    batch = client.BatchV1Api(api)
    await batch.create_namespaced_job(NS, job_body())
    pod = fake_kube.create_job_pod(NS, "job-a")["metadata"]["name"]
    body = client.V1DeleteOptions(propagation_policy="Foreground")
    response = await batch.delete_namespaced_job("job-a", NS, body=body, _preload_content=False)
    deleted = await response.json()
    assert deleted["kind"] == "Job" and deleted["metadata"]["finalizers"] == ["foregroundDeletion"]
    await fake_kube.settle()
    terminating = fake_kube.get("pods", NS, pod)
    assert terminating is not None and terminating["metadata"]["deletionTimestamp"]
    assert fake_kube.get("jobs", NS, "job-a") is not None  # blocked by the pod
    fake_kube.complete_pod_deletion(NS, pod)
    await fake_kube.settle()
    assert fake_kube.get("pods", NS, pod) is None
    assert fake_kube.get("jobs", NS, "job-a") is None


async def test_delete_preconditions_and_finalizers(fake_kube: FakeKube, api: client.ApiClient) -> None:  # noqa: F811
    core = client.CoreV1Api(api)
    made = await core.create_namespaced_config_map(
        NS, {"metadata": {"name": "c", "finalizers": ["example.com/hold"]}}
    )
    wrong = client.V1DeleteOptions(preconditions=client.V1Preconditions(uid="not-it"))
    status = await expect_error(core.delete_namespaced_config_map("c", NS, body=wrong), 409)
    assert status["message"] == (
        f'Operation cannot be fulfilled on configmaps "c": Precondition failed: UID in precondition: not-it, '
        f"UID in object meta: {made.metadata.uid}"
    )

    held = await (await core.delete_namespaced_config_map("c", NS, _preload_content=False)).json()
    assert held["kind"] == "ConfigMap" and held["metadata"]["deletionTimestamp"]
    status = await expect_error(
        core.patch_namespaced_config_map("c", NS, {"metadata": {"finalizers": ["example.com/more"]}}), 422
    )
    assert "no new finalizers can be added" in status["message"]
    await core.patch_namespaced_config_map("c", NS, [{"op": "remove", "path": "/metadata/finalizers"}])
    assert fake_kube.get("configmaps", NS, "c") is None


async def test_namespace_deletion_cleans_up(fake_kube: FakeKube, api: client.ApiClient) -> None:  # noqa: F811
    core = client.CoreV1Api(api)
    await core.create_namespace({"metadata": {"name": "scratch"}})
    await core.create_namespaced_config_map("scratch", {"metadata": {"name": "c"}})
    fake_kube.gc_delay = 0.3  # leave the namespace terminating for a moment
    gone = await (await core.delete_namespace("scratch", _preload_content=False)).json()
    assert gone["status"]["phase"] == "Terminating"
    status = await expect_error(
        core.create_namespaced_config_map("scratch", {"metadata": {"name": "d"}}), 403
    )
    assert "because it is being terminated" in status["message"]
    await fake_kube.settle()
    assert fake_kube.get("namespaces", None, "scratch") is None
    assert fake_kube.objects("configmaps", "scratch") == []


async def test_pod_deletion_is_graceful_for_bound_pods(fake_kube: FakeKube, api: client.ApiClient) -> None:  # noqa: F811
    fake_kube.pod_termination_delay = None
    core = client.CoreV1Api(api)
    batch = client.BatchV1Api(api)

    await core.create_namespaced_pod(NS, pod_body("loose"))
    gone = await (await core.delete_namespaced_pod("loose", NS, _preload_content=False)).json()
    assert gone["kind"] == "Pod" and gone["metadata"]["deletionGracePeriodSeconds"] == 0
    assert fake_kube.get("pods", NS, "loose") is None  # never scheduled: deleted at once

    await batch.create_namespaced_job(NS, job_body())
    pod = fake_kube.create_job_pod(NS, "job-a")["metadata"]["name"]
    fake_kube.set_container_state(NS, pod, "main", "running")
    terminating = await (await core.delete_namespaced_pod(pod, NS, _preload_content=False)).json()
    assert terminating["metadata"]["deletionGracePeriodSeconds"] == 30
    assert terminating["metadata"]["finalizers"] == ["batch.kubernetes.io/job-tracking"]
    still = await core.read_namespaced_pod(pod, NS)
    assert still.metadata.deletion_timestamp is not None
    job = await batch.read_namespaced_job_status("job-a", NS)
    assert job.status.terminating == 1 and not job.status.active

    fake_kube.complete_pod_deletion(NS, pod)
    assert fake_kube.get("pods", NS, pod) is None
    job = await batch.read_namespaced_job_status("job-a", NS)
    assert job.status.failed == 1 and job.status.terminating == 0


async def test_job_updates(fake_kube: FakeKube, api: client.ApiClient) -> None:  # noqa: F811
    batch = client.BatchV1Api(api)
    created = await (await batch.create_namespaced_job(NS, job_body(), _preload_content=False)).json()

    suspended = {**created, "spec": {**created["spec"], "suspend": True}, "status": {"active": 5}}
    updated = await (
        await batch.replace_namespaced_job("job-a", NS, suspended, _preload_content=False)
    ).json()
    assert updated["spec"]["suspend"] is True and updated["metadata"]["generation"] == 2
    assert updated["status"] == {}

    changed = json.loads(json.dumps(updated))
    changed["spec"]["template"]["spec"]["containers"][0]["image"] = "python:3.13"
    changed["spec"]["backoffLimit"] = 1
    changed["spec"]["completions"] = 2
    status = await expect_error(batch.replace_namespaced_job("job-a", NS, changed), 422)
    fields = {cause["field"] for cause in status["details"]["causes"]}
    assert fields == {"spec.template", "spec.completions"}
    assert all(cause["message"].endswith("field is immutable") for cause in status["details"]["causes"])

    dry = await (
        await batch.create_namespaced_job(NS, job_body("dry"), dry_run="All", _preload_content=False)
    ).json()
    assert dry["metadata"]["name"] == "dry" and fake_kube.get("jobs", NS, "dry") is None


async def test_auto_pods_and_previous_logs(fake_kube: FakeKube, api: client.ApiClient) -> None:  # noqa: F811
    fake_kube.auto_pods = True
    batch = client.BatchV1Api(api)
    core = client.CoreV1Api(api)
    await batch.create_namespaced_job(NS, job_body())
    await fake_kube.settle()
    [pod] = fake_kube.objects("pods", NS)
    name = pod["metadata"]["name"]
    assert pod["metadata"]["labels"]["batch.kubernetes.io/job-name"] == "job-a"

    fake_kube.set_container_state(NS, name, "main", "running")
    fake_kube.write_log(NS, name, "main", "first run\n")
    fake_kube.set_container_state(NS, name, "main", "terminated", exit_code=1)
    fake_kube.set_container_state(NS, name, "main", "running", restart_count=1)
    fake_kube.write_log(NS, name, "main", "second run\n")
    assert await core.read_namespaced_pod_log(name, NS, container="main") == "second run\n"
    assert await core.read_namespaced_pod_log(name, NS, container="main", previous=True) == "first run\n"
    status = await expect_error(core.read_namespaced_pod_log(name, NS, container="fetch", previous=True), 400)
    assert status["message"] == f'previous terminated container "fetch" in pod "{name}" not found'


async def test_watch_all_namespaces_with_field_selector(fake_kube: FakeKube, api: client.ApiClient) -> None:  # noqa: F811
    core = client.CoreV1Api(api)
    await core.create_namespace({"metadata": {"name": "other"}})
    response = await core.list_pod_for_all_namespaces(
        watch=True, field_selector="status.phase=Running", _preload_content=False
    )
    try:
        await fake_kube.wait_for_watches("pods", None)
        await core.create_namespaced_pod("other", pod_body("p", node="node-1"))
        fake_kube.set_pod_phase("other", "p", "Running")
        fake_kube.set_pod_phase("other", "p", "Succeeded")
        added, deleted = await read_events(response, 2)
    finally:
        response.release()
    assert (added["type"], added["object"]["metadata"]["namespace"]) == ("ADDED", "other")
    assert deleted["type"] == "DELETED" and deleted["object"]["status"]["phase"] == "Running"


async def test_refused_pods_leave_failed_create_events_selected_by_field(
    fake_kube: FakeKube,  # noqa: F811
    api: client.ApiClient,
) -> None:
    batch = client.BatchV1Api(api)
    core = client.CoreV1Api(api)
    await batch.create_namespaced_job(NS, job_body())
    selector = "involvedObject.kind=Job,reason=FailedCreate"
    listed = await core.list_namespaced_event(NS, field_selector=selector, _preload_content=False)
    since = json.loads(await listed.read())["metadata"]["resourceVersion"]
    response = await core.list_namespaced_event(
        NS, field_selector=selector, watch=True, resource_version=since, _preload_content=False
    )
    try:
        fake_kube.refuse_pods(NS, "job-a", 'pod rejected: RuntimeClass "gvisor" not found')
        with pytest.raises(KubeError) as refused:
            fake_kube.create_job_pod(NS, "job-a")
        assert refused.value.code == 403 and refused.value.reason == "Forbidden"
        assert refused.value.message.startswith('pods "job-a-')
        assert refused.value.message.endswith('" is forbidden: pod rejected: RuntimeClass "gvisor" not found')
        with pytest.raises(KubeError):
            fake_kube.create_job_pod(NS, "job-a", name="job-a-again")
        # Events of other reasons and other objects are not in this watch.
        other = {"kind": "Pod", "apiVersion": "v1", "metadata": {"name": "p", "namespace": NS}}
        fake_kube.record_event(other, "Normal", "Scheduled", "Successfully assigned", "default-scheduler")
        fake_kube.refuse_pods(NS, "job-a", None)
        fake_kube.create_job_pod(NS, "job-a")
        first, second = await read_events(response, 2)
    finally:
        response.release()
    assert first["type"] == "ADDED"
    event = first["object"]
    assert event["kind"] == "Event" and event["type"] == "Warning" and event["reason"] == "FailedCreate"
    assert event["message"] == f"Error creating: {refused.value.message}"
    assert event["involvedObject"]["kind"] == "Job" and event["involvedObject"]["name"] == "job-a"
    assert event["involvedObject"]["apiVersion"] == "batch/v1" and event["involvedObject"]["uid"]
    assert event["source"] == {"component": "job-controller"} and event["count"] == 1
    assert event["firstTimestamp"] == event["lastTimestamp"]
    # Another pod name, so another message and another Event.
    assert second["type"] == "ADDED"
    assert second["object"]["message"].startswith('Error creating: pods "job-a-again" is forbidden')
    assert len(fake_kube.objects("pods", NS)) == 1  # admitted again
    everything = await core.list_namespaced_event(NS, _preload_content=False)
    assert len(json.loads(await everything.read())["items"]) == 3
    status = await expect_error(core.list_namespaced_event(NS, field_selector="involvedObject.bogus=x"), 400)
    assert status["message"] == "field label not supported: involvedObject.bogus"


async def test_identical_events_count_up(fake_kube: FakeKube) -> None:  # noqa: F811
    job = fake_kube.create_object("jobs", NS, job_body())
    first = fake_kube.record_event(job, "Warning", "FailedCreate", "Error creating: same")
    again = fake_kube.record_event(job, "Warning", "FailedCreate", "Error creating: same")
    assert again["metadata"]["name"] == first["metadata"]["name"] and again["count"] == 2
    assert again["firstTimestamp"] == first["firstTimestamp"]
    assert len(fake_kube.objects("events", NS)) == 1


async def test_auto_pods_refused_records_the_event_and_creates_nothing(fake_kube: FakeKube) -> None:  # noqa: F811
    fake_kube.auto_pods = True
    fake_kube.refuse_pods(
        NS, "job-a", "exceeded quota: pods, requested: pods=1, used: pods=1, limited: pods=1"
    )
    fake_kube.create_object("jobs", NS, job_body())
    await fake_kube.settle()
    assert fake_kube.objects("pods", NS) == []
    [event] = fake_kube.objects("events", NS)
    assert "is forbidden: exceeded quota: pods" in event["message"]


# --------------------------------------------------------------------------- hooks


async def test_controller_hooks_drive_job_and_pod_status(fake_kube: FakeKube, api: client.ApiClient) -> None:  # noqa: F811
    batch = client.BatchV1Api(api)
    core = client.CoreV1Api(api)
    job = await batch.create_namespaced_job(NS, job_body())
    pod = fake_kube.create_job_pod(NS, "job-a")
    name = pod["metadata"]["name"]
    assert name.startswith("job-a-") and len(name) == len("job-a-") + 5
    assert pod["metadata"]["ownerReferences"] == [
        {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "name": "job-a",
            "uid": job.metadata.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    assert pod["metadata"]["labels"]["job-name"] == "job-a"
    assert pod["spec"]["nodeName"] == "node-1"
    listed = await core.list_namespaced_pod(
        NS, label_selector=f"batch.kubernetes.io/controller-uid={job.metadata.uid}"
    )
    assert [p.metadata.name for p in listed.items] == [name]
    job_now = await batch.read_namespaced_job_status("job-a", NS)
    assert job_now.status.active == 1 and job_now.status.start_time is not None

    fake_kube.set_pod_unschedulable(NS, name, "0/3 nodes are available: 3 Insufficient memory.")
    scheduled = fake_kube.get("pods", NS, name)
    assert scheduled is not None
    assert scheduled["status"]["conditions"][0]["reason"] == "Unschedulable"

    fake_kube.set_container_state(NS, name, "fetch", "terminated", exit_code=0)
    fake_kube.set_container_state(NS, name, "main", "running")
    fake_kube.set_pod_phase(NS, name, "Running")
    running = await core.read_namespaced_pod(name, NS)
    assert running.status.phase == "Running"
    assert {c.type: c.status for c in running.status.conditions}["Ready"] == "True"
    assert running.status.container_statuses[0].state.running.started_at is not None

    fake_kube.run_pod_to_completion(NS, name, exit_code=1)
    finished = await batch.read_namespaced_job("job-a", NS)
    assert finished.status.failed == 1 and not finished.status.active
    assert [c.type for c in finished.status.conditions] == ["FailureTarget", "Failed"]
    assert finished.status.conditions[-1].reason == "BackoffLimitExceeded"
    done_pod = fake_kube.get("pods", NS, name)
    assert done_pod is not None and "finalizers" not in done_pod["metadata"]


async def test_object_hooks_go_through_the_api_semantics(fake_kube: FakeKube, api: client.ApiClient) -> None:  # noqa: F811
    core = client.CoreV1Api(api)
    job = fake_kube.create_object("jobs", NS, job_body())
    assert (
        job["spec"]["backoffLimit"] == 6 and job["metadata"]["resourceVersion"] == fake_kube.resource_version
    )
    with pytest.raises(KubeError) as caught:
        fake_kube.create_object("jobs", NS, job_body())
    assert caught.value.code == 409 and caught.value.reason == "AlreadyExists"

    first = fake_kube.create_job_pod(NS, "job-a")["metadata"]["name"]
    second = fake_kube.create_job_pod(NS, "job-a")["metadata"]["name"]
    events = await core.list_namespaced_pod(
        NS, watch=True, resource_version=fake_kube.resource_version, _preload_content=False
    )
    try:
        fake_kube.delete_pod(NS, first)
        modified, deleted = await read_events(events, 2)
        assert (
            modified["type"] == "MODIFIED"
            and modified["object"]["metadata"]["deletionGracePeriodSeconds"] == 0
        )
        assert deleted["type"] == "DELETED" and deleted["object"]["metadata"]["name"] == first
        assert fake_kube.get("pods", NS, first) is None

        fake_kube.delete_job(NS, "job-a")
        await fake_kube.settle()
        assert fake_kube.get("jobs", NS, "job-a") is None and fake_kube.get("pods", NS, second) is None
    finally:
        events.release()


async def test_another_controller_s_finalizer_holds_a_deleted_pod_until_it_lets_go(
    fake_kube: FakeKube,  # noqa: F811
) -> None:
    fake_kube.create_object("jobs", NS, job_body())
    pod = fake_kube.create_job_pod(NS, "job-a")["metadata"]["name"]
    fake_kube.add_finalizer("pods", NS, pod, "example.com/hold")
    fake_kube.set_pod_phase(NS, pod, "Failed")  # ended: counted by the Job controller, deleted at once
    fake_kube.delete_pod(NS, pod)
    held = fake_kube.get("pods", NS, pod)
    assert held is not None and held["metadata"]["deletionTimestamp"]
    assert held["metadata"]["finalizers"] == ["example.com/hold"]
    fake_kube.remove_finalizer("pods", NS, pod, "example.com/hold")
    assert fake_kube.get("pods", NS, pod) is None


# --------------------------------------------------------------------------- admission

# What a requester may do in the admission tests: Secrets, and Jobs without their finalizers.
SECRETS_ROLE: dict[str, Any] = {
    "kind": "Role",
    "rules": [
        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["create", "patch", "delete"]},
        {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["create", "delete"]},
    ],
}
CANNOT_FINALIZE = (
    "cannot set blockOwnerDeletion if an ownerReference refers to a resource you can't set finalizers on"
)


async def test_owner_references_permission_enforcement(fake_kube: FakeKube, api: client.ApiClient) -> None:  # noqa: F811
    core = client.CoreV1Api(api)
    job = await client.BatchV1Api(api).create_namespaced_job(NS, job_body())
    owner = {"apiVersion": "batch/v1", "kind": "Job", "name": "job-a", "uid": job.metadata.uid}
    blocking = {**owner, "blockOwnerDeletion": True}

    def secret(name: str, *refs: dict[str, Any]) -> dict[str, Any]:
        return {"metadata": {"name": name, "ownerReferences": list(refs)}}

    # Off by default, as on upstream clusters: any reference goes.
    await core.create_namespaced_secret(NS, secret("unchecked", blocking))

    fake_kube.owner_references_role = SECRETS_ROLE
    status = await expect_error(core.create_namespaced_secret(NS, secret("blocking", blocking)), 403)
    assert status["reason"] == "Forbidden"
    assert status["message"] == f'secrets "blocking" is forbidden: {CANNOT_FINALIZE}: , <nil>'
    assert status["details"] == {"name": "blocking", "kind": "secrets"}
    assert fake_kube.get("secrets", NS, "blocking") is None
    # Without blockOwnerDeletion (or with it false) nothing about the owner is asked.
    await core.create_namespaced_secret(NS, secret("owned", owner))
    await core.create_namespaced_secret(NS, secret("owned-false", {**owner, "blockOwnerDeletion": False}))
    # An update that turns it on is refused too; one that leaves the references alone is not.
    status = await expect_error(
        core.patch_namespaced_secret("owned", NS, {"metadata": {"ownerReferences": [blocking]}}), 403
    )
    assert CANNOT_FINALIZE in status["message"]
    await core.patch_namespaced_secret("unchecked", NS, {"metadata": {"labels": {"seen": "yes"}}})
    # An owner kind the server does not serve cannot be checked.
    status = await expect_error(
        core.create_namespaced_secret(
            NS, secret("odd", {**blocking, "apiVersion": "example.org/v1", "kind": "Widget"})
        ),
        403,
    )
    unknown = (
        'cannot find RESTMapping for APIVersion example.org/v1 Kind Widget: no matches for kind "Widget"'
    )
    assert unknown in status["message"]

    # Changing the references of an existing object needs `delete` on it; creating one does not.
    fake_kube.owner_references_role = {
        "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["create", "patch"]}]
    }
    await core.create_namespaced_secret(NS, secret("new", owner))
    status = await expect_error(
        core.patch_namespaced_secret("new", NS, {"metadata": {"ownerReferences": [{"$patch": "replace"}]}}),
        403,
    )
    assert status["message"] == (
        'secrets "new" is forbidden: cannot set an ownerRef on a resource you can\'t delete: , <nil>'
    )

    # `update` on jobs/finalizers (of that Job, when resourceNames name it) lets it through.
    finalizers = {"apiGroups": ["batch"], "resources": ["jobs/finalizers"], "verbs": ["update"]}
    fake_kube.owner_references_role = {
        "rules": [*SECRETS_ROLE["rules"], {**finalizers, "resourceNames": ["job-b"]}]
    }
    await expect_error(core.create_namespaced_secret(NS, secret("named", blocking)), 403)
    fake_kube.owner_references_role = {"rules": [*SECRETS_ROLE["rules"], finalizers]}
    await core.create_namespaced_secret(NS, secret("finalizer-granted", blocking))

    fake_kube.owner_references_role = None
    await core.create_namespaced_secret(NS, secret("off-again", blocking))


def test_role_rules_match_as_the_rbac_authorizer_does() -> None:
    role = {
        "rules": [
            {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["get"]},
            {"apiGroups": [""], "resources": ["*/finalizers"], "verbs": ["update"]},
            {"apiGroups": ["*"], "resources": ["leases"], "verbs": ["*"], "resourceNames": ["one"]},
        ]
    }
    assert allows(role, "get", "batch", "jobs")
    assert not allows(role, "get", "", "jobs") and not allows(role, "list", "batch", "jobs")
    assert not allows(role, "update", "batch", "jobs", "finalizers"), "a resource grants no subresource"
    assert allows(role, "update", "", "pods", "finalizers") and not allows(role, "update", "", "pods")
    assert allows(role, "delete", "coordination.k8s.io", "leases", name="one")
    assert not allows(role, "delete", "coordination.k8s.io", "leases", name="two")


# --------------------------------------------------------------------------- faults


async def test_fault_injection_and_latency(fake_kube: FakeKube, api: client.ApiClient) -> None:  # noqa: F811
    core = client.CoreV1Api(api)
    fake_kube.inject_fault("POST", r"/configmaps$", status=500)
    status = await expect_error(core.create_namespaced_config_map(NS, {"metadata": {"name": "c"}}), 500)
    assert status["reason"] == "InternalError"
    await core.create_namespaced_config_map(NS, {"metadata": {"name": "c"}})

    quota = (
        "exceeded quota: compute-resources, requested: limits.cpu=4, used: limits.cpu=8, "
        "limited: limits.cpu=10"
    )
    fault = fake_kube.inject_fault(
        path=r"/jobs", status=403, message=f'jobs.batch "x" is forbidden: {quota}', count=2
    )
    batch = client.BatchV1Api(api)
    for _ in range(2):
        status = await expect_error(batch.create_namespaced_job(NS, job_body("x")), 403)
        assert status["reason"] == "Forbidden" and quota in status["message"]
    assert fault.hits == 2
    await batch.create_namespaced_job(NS, job_body("x"))

    fake_kube.inject_fault("GET", r"/configmaps/c$", status=429, retry_after=2)
    status = await expect_error(core.read_namespaced_config_map("c", NS), 429)
    assert status["details"] == {"retryAfterSeconds": 2}

    fake_kube.inject_fault("POST", r"/configmaps$", disconnect=True)
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await core.create_namespaced_config_map(NS, {"metadata": {"name": "lost"}})
    assert fake_kube.get("configmaps", NS, "lost") is None

    fake_kube.inject_fault("GET", r"/configmaps/c$", status=None, delay=0.3)
    started = time.monotonic()
    await core.read_namespaced_config_map("c", NS)
    assert time.monotonic() - started >= 0.3

    fake_kube.set_latency(0.2)
    started = time.monotonic()
    await core.read_namespaced_config_map("c", NS)
    assert time.monotonic() - started >= 0.2
    fake_kube.set_latency(0)

    # Patterns are tried on the path and then on the path with its query string.
    fake_kube.inject_fault(path=r"watch=", status=503)
    status = await expect_error(core.list_namespaced_config_map(NS, watch=True, timeout_seconds=1), 503)
    assert status["reason"] == "ServiceUnavailable"
    fake_kube.inject_fault("GET", r"/configmaps$", status=500)
    await expect_error(core.list_namespaced_config_map(NS, label_selector="a=b"), 500)

    reads = [r for r in fake_kube.requests if r.method == "GET" and r.path.endswith("/configmaps/c")]
    assert len(reads) == 3


async def test_a_late_answer_comes_after_the_change_is_done(
    fake_kube: FakeKube,  # noqa: F811
    api: client.ApiClient,
) -> None:
    core = client.CoreV1Api(api)
    await core.create_namespaced_config_map(NS, {"metadata": {"name": "c"}})
    fake_kube.inject_fault("DELETE", r"/configmaps/c$", status=None, late=3.0)
    deleting = asyncio.create_task(core.delete_namespaced_config_map("c", NS))
    await fake_kube.wait_until(lambda: fake_kube.get("configmaps", NS, "c") is None)
    assert not deleting.done()  # gone from the server, while the client still waits
    await deleting


# --------------------------------------------------------------------------- building blocks


def test_strategic_merge_patch_directives() -> None:
    from tests.fake_kube.patching import strategic_merge_patch

    original = {
        "metadata": {"finalizers": ["a"], "labels": {"x": "1"}},
        "spec": {
            "containers": [
                {
                    "name": "main",
                    "image": "i:1",
                    "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
                },
                {"name": "side", "image": "s:1"},
            ],
            "volumes": [{"name": "v1"}, {"name": "v2"}],
            "tolerations": [{"key": "t1"}],
        },
    }
    patch = {
        "metadata": {"finalizers": ["b"], "labels": {"x": None}},
        "spec": {
            "containers": [
                {"name": "main", "env": [{"name": "B", "$patch": "delete"}, {"name": "C", "value": "3"}]},
                {"name": "new", "image": "n:1"},
            ],
            "volumes": [{"name": "v3"}, {"$patch": "replace"}],
            "tolerations": [{"key": "t2"}],
            "$setElementOrder/containers": [{"name": "new"}, {"name": "main"}, {"name": "side"}],
        },
    }
    result = strategic_merge_patch(original, patch)
    assert result["metadata"] == {"finalizers": ["a", "b"], "labels": {}}
    assert [c["name"] for c in result["spec"]["containers"]] == ["new", "main", "side"]
    assert result["spec"]["containers"][1]["env"] == [
        {"name": "A", "value": "1"},
        {"name": "C", "value": "3"},
    ]
    assert result["spec"]["containers"][1]["image"] == "i:1"
    assert result["spec"]["volumes"] == [{"name": "v3"}]
    assert result["spec"]["tolerations"] == [{"key": "t2"}]
    assert original["spec"]["containers"][0]["env"][1] == {"name": "B", "value": "2"}  # untouched


def test_json_patch_pointers_and_failures() -> None:
    from tests.fake_kube.patching import PatchError, json_patch

    doc = {"metadata": {"labels": {"app.kubernetes.io/name": "x"}}, "items": [1, 2]}
    result = json_patch(
        doc,
        [
            {"op": "remove", "path": "/metadata/labels/app.kubernetes.io~1name"},
            {"op": "add", "path": "/items/-", "value": 3},
            {"op": "add", "path": "/items/0", "value": 0},
            {"op": "move", "from": "/items/3", "path": "/last"},
            {"op": "test", "path": "/items", "value": [0, 1, 2.0]},
        ],
    )
    assert result == {"metadata": {"labels": {}}, "items": [0, 1, 2], "last": 3}
    for operations in (
        [{"op": "replace", "path": "/missing", "value": 1}],
        [{"op": "test", "path": "/items/0", "value": True}],
        [{"op": "add", "path": "/a/b", "value": 1}],
    ):
        with pytest.raises(PatchError):
            json_patch({"items": [1]}, operations)


def test_selector_grammar() -> None:
    from tests.fake_kube.selectors import SelectorError, parse_field_selector, parse_label_selector

    selector = parse_label_selector("env in (prod, staging), !canary, tier != db, team=")
    assert selector.matches({"env": "prod", "team": ""})
    assert not selector.matches({"env": "prod", "team": "", "canary": "yes"})
    assert not selector.matches({"env": "dev", "team": ""})
    assert parse_label_selector("n > 3").matches({"n": "4"})
    for bad in ("a in (x", "a b", "=x", "a in ()", "Bad Key=1"):
        with pytest.raises(SelectorError):
            parse_label_selector(bad)
    fields = parse_field_selector(
        r"metadata.name=a\,b,status.phase!=Failed", frozenset({"metadata.name", "status.phase"})
    )
    assert fields.matches({"metadata.name": "a,b", "status.phase": "Running"})
