"""EDC provisioning callbacks carry the connector's management API key (x-api-key) and a
workspace's access code. Whoever can send a provision request (anyone who learns a webhook URL)
names the callbackAddress, so the service must send callbacks only where the operator allows for
that connector: a listener on 127.0.0.1 that records every request shows none leaves otherwise,
whether the address is refused up front, rebinds at connect time, or stopped being allowed
while a callback was pending."""

from __future__ import annotations

import asyncio
import copy
import socket
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from provider.api.context import CONTEXT
from provider.config import Settings
from provider.domain.provisioning import Provisioning
from tests.conftest import ADMIN_KEY, WAIT_SECONDS, Api, live_api
from tests.test_edc import API_KEY, SECRET, example

CONTROL = f"/edc/main/{SECRET}/provision"
DATA_PLANE = f"/edc/main/{SECRET}/dataplane/provision"


@dataclass
class Listener:
    """Records every request; answers `status`."""

    server: TestServer | None = None
    status: int = 204
    requests: list[tuple[str, str, str | None]] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, request: web.Request) -> web.Response:
        await request.read()
        self.requests.append((request.method, request.path, request.headers.get("x-api-key")))
        self.arrived.set()
        return web.Response(status=self.status)

    @property
    def port(self) -> int:
        assert self.server is not None and self.server.port is not None
        return self.server.port


@pytest.fixture
async def listener() -> AsyncIterator[Listener]:
    state = Listener()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", state.handle)
    state.server = TestServer(app, host="127.0.0.1")
    await state.server.start_server()
    yield state
    await state.server.close()


@pytest.fixture
async def dns(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[str]]:
    """Names this test resolves, as getaddrinfo would: each lookup takes the next answer, the
    last one repeats. Other names go to the system resolver."""
    loop = asyncio.get_running_loop()
    answers: dict[str, list[str]] = {}
    system = loop.getaddrinfo

    async def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host not in answers:
            return await system(host, port, *args, **kwargs)
        queue = answers[host]
        address = queue.pop(0) if len(queue) > 1 else queue[0]
        number = int(port or 0)
        if ":" in address:
            return [(socket.AF_INET6, socket.SOCK_STREAM, 6, "", (address, number, 0, 0))]
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, number))]

    monkeypatch.setattr(loop, "getaddrinfo", getaddrinfo)
    return answers


def with_connector(edc_settings: Settings, **callbacks: Any) -> Settings:
    """The EDC tests' settings with these callback destinations for connector main instead."""
    main = edc_settings.edc.connectors["main"].model_copy(
        update={"callback_hosts": [], "callback_networks": [], **callbacks}
    )
    edc = edc_settings.edc.model_copy(update={"connectors": {"main": main}})
    return edc_settings.model_copy(update={"edc": edc})


def provision_request(kind: str, callback: str) -> tuple[str, dict[str, Any], str, str]:
    """The webhook path, a fresh request for `callback`, its process and resource ids."""
    if kind == "control":
        body = copy.deepcopy(example("provision-request"))
        body.update(callbackAddress=callback, transferProcessId=f"tp-{uuid.uuid4().hex[:8]}")
        return CONTROL, body, body["transferProcessId"], body["resourceDefinitionId"]
    body = {**example("dataplane-provision-request"), "callbackAddress": callback}
    body["flowId"] = f"flow-{uuid.uuid4().hex[:8]}"
    return DATA_PLANE, body, body["flowId"], body["provisionResourceId"]


async def record(api: Api, process: str, resource: str) -> Provisioning | None:
    async with api.app[CONTEXT].store.read() as uow:
        return await uow.provisionings.find("main", process, resource)


async def settled(api: Api, process: str, resource: str, limit: float = WAIT_SECONDS) -> Provisioning:
    """The provisioning once no callback is pending any more."""
    deadline = time.monotonic() + limit
    while True:
        item = await record(api, process, resource)
        assert item is not None
        if item.pending is None:
            return item
        assert time.monotonic() < deadline, item
        await asyncio.sleep(0.05)


async def assert_refused_and_nothing_sent(
    api: Api, listener: Listener, kind: str, callback: str, words: list[str]
) -> None:
    path, body, process, resource = provision_request(kind, callback)
    problem = await api.json("POST", path, 400, json=body)
    assert problem["type"].endswith("forbidden-address"), problem
    assert [e["field"] for e in problem["errors"]] == ["body.callbackAddress"], problem
    for word in words:
        assert word in problem["detail"], problem
    await api.app[CONTEXT].provisioning.run_due()  # whatever were due would be sent now
    assert await record(api, process, resource) is None  # nothing half-written
    assert (await api.json("GET", "/api/v1/workspaces", 200, key=ADMIN_KEY))["items"] == []
    owner = body["policy"]["assignee"] if kind == "control" else "connector:main"
    tenants = (await api.json("GET", "/api/v1/tenants", 200, key=ADMIN_KEY))["items"]
    assert owner not in [t["participant_id"] for t in tenants]
    assert listener.requests == []


SETTING = "edc.connectors.main.callback_"
LOOPBACK_SPELLINGS = [
    ("http://127.0.0.1:{port}/callback", "loopback address"),
    ("http://localhost:{port}/callback", "loopback address"),
    ("http://[::ffff:127.0.0.1]:{port}/callback", "loopback address in IPv4-mapped form"),
    ("http://[::127.0.0.1]:{port}/callback", "loopback address in IPv4-compatible form"),
    ("http://[2002:7f00:1::1]:{port}/callback", "loopback address in 6to4 form"),
    ("http://[2001:0:4136:e378:8000:63bf:80ff:fffe]:{port}/callback", "loopback address in Teredo form"),
    ("http://[64:ff9b::7f00:1]:{port}/callback", "loopback address in NAT64 form"),
]


@pytest.mark.parametrize("kind", ["control", "data-plane"])
async def test_a_connector_with_no_callback_destinations_sends_nothing(
    edc_settings: Settings, contract: Any, listener: Listener, kind: str
) -> None:
    api, close = await live_api(with_connector(edc_settings), contract)
    try:
        await assert_refused_and_nothing_sent(
            api,
            listener,
            kind,
            f"http://127.0.0.1:{listener.port}/callback",
            ["no callback destinations", f"{SETTING}hosts", f"{SETTING}networks"],
        )
    finally:
        await close()


@pytest.mark.parametrize("kind", ["control", "data-plane"])
@pytest.mark.parametrize(
    "callbacks",
    [
        pytest.param({"callback_networks": ["10.0.0.0/8"]}, id="other-network"),
        pytest.param({"callback_hosts": ["localhost", "edc-controlplane"]}, id="listed-name-only"),
    ],
)
async def test_callbacks_to_loopback_in_any_spelling_are_refused_up_front(
    edc_settings: Settings, contract: Any, listener: Listener, kind: str, callbacks: dict[str, list[str]]
) -> None:
    api, close = await live_api(with_connector(edc_settings, **callbacks), contract)
    try:
        for template, words in LOOPBACK_SPELLINGS:
            callback = template.format(port=listener.port)
            await assert_refused_and_nothing_sent(
                api, listener, kind, callback, [words, f"{SETTING}networks"]
            )
        numeric = f"http://2130706433:{listener.port}/callback"
        await assert_refused_and_nothing_sent(api, listener, kind, numeric, ["four decimal numbers"])
    finally:
        await close()


async def test_a_public_address_under_a_name_not_listed_is_refused(
    edc_settings: Settings, contract: Any, listener: Listener, dns: dict[str, list[str]]
) -> None:
    dns["collector.attacker.example"] = ["93.184.215.14"]
    api, close = await live_api(
        with_connector(
            edc_settings, callback_hosts=["edc.partner.example"], callback_networks=["10.0.0.0/8"]
        ),
        contract,
    )
    try:
        for callback in ("http://collector.attacker.example/cb", "http://93.184.215.14/cb"):
            await assert_refused_and_nothing_sent(
                api, listener, "control", callback, ["host name not allowed", f"{SETTING}hosts"]
            )
    finally:
        await close()


async def test_metadata_addresses_are_refused_even_when_their_network_is_allowed(
    edc_settings: Settings, contract: Any, listener: Listener, dns: dict[str, list[str]]
) -> None:
    dns["metadata.internal"] = ["169.254.169.254"]
    everything = ["0.0.0.0/0", "::/0"]
    api, close = await live_api(
        with_connector(edc_settings, callback_networks=everything, callback_hosts=["metadata.internal"]),
        contract,
    )
    try:
        for callback in (
            "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
            "http://[fd00:ec2::254]/latest/meta-data/",
            "http://169.254.170.2/v2/credentials/",
            "http://168.63.129.16/machine",
            "http://100.100.100.200/latest/meta-data/",
            "http://[::ffff:169.254.169.254]/",
            "http://[2002:a9fe:a9fe::]/",
            "http://[64:ff9b::a9fe:a9fe]/",
            "http://metadata.internal/computeMetadata/v1/",
        ):
            await assert_refused_and_nothing_sent(api, listener, "control", callback, ["cloud metadata"])
    finally:
        await close()


@pytest.mark.parametrize(
    ("rebound", "words"),
    [
        ("127.0.0.1", "loopback address"),
        ("::ffff:127.0.0.1", "loopback address in IPv4-mapped form"),
        ("2002:7f00:1::1", "loopback address in 6to4 form"),
        ("169.254.169.254", "cloud metadata"),
    ],
)
async def test_a_listed_name_that_rebinds_to_a_forbidden_address_is_not_contacted(
    edc_settings: Settings,
    contract: Any,
    listener: Listener,
    dns: dict[str, list[str]],
    rebound: str,
    words: str,
) -> None:
    dns["edc.partner.example"] = ["93.184.215.14", rebound]  # checked public, connected forbidden
    api, close = await live_api(
        with_connector(edc_settings, callback_hosts=["edc.partner.example"]), contract
    )
    try:
        path, body, process, resource = provision_request(
            "control", f"http://edc.partner.example:{listener.port}/callback"
        )
        await api.json("POST", path, 200, json=body)
        item = await settled(api, process, resource)
        assert item.state.value == "failed" and item.attempts == 1, item  # final, not retried
        assert "refused at connect time" in (item.error or "") and words in (item.error or ""), item
        assert listener.requests == []
    finally:
        await close()


async def test_a_pending_callback_is_not_sent_once_its_address_is_no_longer_allowed(
    edc_settings: Settings, contract: Any, listener: Listener
) -> None:
    listener.status = 409  # the connector stays busy: the callback remains pending
    before = with_connector(edc_settings, callback_networks=["127.0.0.1/32"])
    api, close = await live_api(before, contract)
    path, body, process, resource = provision_request("control", f"http://127.0.0.1:{listener.port}/callback")
    try:
        await api.json("POST", path, 200, json=body)
        await asyncio.wait_for(listener.arrived.wait(), 30)  # it was allowed then
    finally:
        await close()
    listener.requests.clear()
    after = with_connector(edc_settings, callback_networks=["10.0.0.0/8"])  # the operator narrowed it
    api, close = await live_api(after, contract)
    try:
        item = await settled(api, process, resource)
        assert item.state.value == "failed" and "loopback" in (item.error or ""), item
        assert listener.requests == []
    finally:
        await close()


@pytest.mark.parametrize(
    "callbacks",
    [
        pytest.param({"callback_hosts": ["localhost"], "callback_networks": ["127.0.0.1/32"]}, id="name"),
        pytest.param({"callback_networks": ["127.0.0.0/8"]}, id="network"),
    ],
)
async def test_an_allowed_destination_receives_the_callback(
    edc_settings: Settings, contract: Any, listener: Listener, callbacks: dict[str, list[str]]
) -> None:
    api, close = await live_api(with_connector(edc_settings, **callbacks), contract)
    try:
        host = "localhost" if "callback_hosts" in callbacks else "127.0.0.1"
        path, body, process, resource = provision_request("control", f"http://{host}:{listener.port}/cb")
        await api.json("POST", path, 200, json=body)
        item = await settled(api, process, resource)
        assert item.state.value == "provisioned", item
        assert listener.requests == [("POST", f"/cb/{process}/provision", API_KEY)]
    finally:
        await close()
