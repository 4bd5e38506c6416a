"""SSRF through other spellings of a forbidden address: IPv6 forms that carry an IPv4 address
(6to4, Teredo, NAT64, IPv4-mapped, -compatible, -translated), IPv4 in decimal, octal or hex, and
cloud metadata addresses inside networks the operator allowed. Each is tried through the real
service as a webhook subscription, an import source and an execution callback, and must be
refused with 400 forbidden-address before anything is created."""

from __future__ import annotations

from pathlib import Path

import pytest

from provider.config import Settings
from tests.conftest import ADMIN_KEY, Api

# Each refused with no networks allowed; the words the refusal must contain.
FORBIDDEN = [
    ("http://[2002:7f00:1::1]/", "loopback address in 6to4 form"),
    ("http://[2001:0:4136:e378:8000:63bf:80ff:fffe]/", "loopback address in Teredo form"),  # client
    ("http://[2001:0:7f00:1:8000:63bf:f7f7:f7f7]/", "loopback address in Teredo form"),  # server
    ("http://[64:ff9b::7f00:1]/", "loopback address in NAT64 form"),
    ("http://[64:ff9b:1:7f00:0:100::]/", "loopback address in NAT64 form"),
    ("http://[::127.0.0.1]/", "loopback address in IPv4-compatible form"),
    ("http://[::ffff:127.0.0.1]/", "loopback address in IPv4-mapped form"),
    ("http://[::ffff:0:127.0.0.1]/", "loopback address in IPv4-translated form"),
    ("http://[2002:a01:203::1]/", "private address in 6to4 form"),
    ("http://2130706433/", "four decimal numbers"),
    ("http://0177.0.0.1/", "four decimal numbers"),
    ("http://0x7f.0.0.1/", "four decimal numbers"),
    ("http://0x7f000001/", "four decimal numbers"),
    ("http://127.1/", "four decimal numbers"),
    ("http://0/", "four decimal numbers"),
    ("http://168.63.129.16/", "cloud metadata"),  # a public address: only the metadata rule stops it
]

# Networks an operator allowed, which hold every metadata address below.
GENEROUS = [
    "127.0.0.0/8",
    "169.254.0.0/16",
    "100.64.0.0/10",
    "168.63.128.0/23",
    "fd00::/8",
    "::ffff:0:0/96",
    "2002::/16",
]
METADATA = [
    "http://169.254.169.254/latest/meta-data/",
    "http://[fd00:ec2::254]/latest/meta-data/",
    "http://100.100.100.200/latest/meta-data/",
    "http://169.254.170.2/v2/credentials/x",
    "http://168.63.129.16/machine",
    "http://[::ffff:169.254.169.254]/",
    "http://[2002:a9fe:a9fe::]/",
    "http://[64:ff9b::169.254.169.254]/",
]

CASES = [pytest.param(url, words, [], id=url) for url, words in FORBIDDEN] + [
    pytest.param(url, "cloud metadata", GENEROUS, id=f"allowed:{url}") for url in METADATA
]


@pytest.fixture
def allowed(request: pytest.FixtureRequest) -> list[str]:
    return list(request.param)


@pytest.fixture
def settings(settings: Settings, allowed: list[str], tmp_path: Path) -> Settings:
    return settings.model_copy(
        update={
            "imports": settings.imports.model_copy(update={"allowed_networks": allowed}),
            "notifications": settings.notifications.model_copy(
                update={"allowed_networks": allowed, "allow_http": True}
            ),
        }
    )


def refused(problem: dict[str, object], field: str, words: str) -> None:
    assert str(problem["type"]).endswith("forbidden-address"), problem
    assert words in str(problem["detail"]), problem
    assert [e["field"] for e in problem["errors"]] == [field], problem  # type: ignore[attr-defined]


@pytest.mark.parametrize(("url", "words", "allowed"), CASES, indirect=["allowed"])
async def test_webhook_subscription_is_refused(api: Api, url: str, words: str) -> None:
    body = {"url": url, "events": ["execution.*"]}
    refused(await api.json("POST", "/api/v1/subscriptions", 400, key=ADMIN_KEY, json=body), "body.url", words)
    assert (await api.json("GET", "/api/v1/subscriptions", 200, key=ADMIN_KEY))["items"] == []


@pytest.mark.parametrize(("url", "words", "allowed"), CASES, indirect=["allowed"])
async def test_import_is_refused(api: Api, url: str, words: str) -> None:
    ws = (await api.json("POST", "/api/v1/workspaces", 201, key=ADMIN_KEY, json={}))["id"]
    path = f"/api/v1/workspaces/{ws}/imports"
    body = {"source_url": url, "target_key": "x"}
    refused(await api.json("POST", path, 400, key=ADMIN_KEY, json=body), "body.source_url", words)
    assert (await api.json("GET", path, 200, key=ADMIN_KEY))["items"] == []


@pytest.mark.parametrize(("url", "words", "allowed"), CASES, indirect=["allowed"])
async def test_execution_callback_is_refused(api: Api, url: str, words: str) -> None:
    ws = (await api.json("POST", "/api/v1/workspaces", 201, key=ADMIN_KEY, json={}))["id"]
    await api.json("PUT", f"/api/v1/workspaces/{ws}/objects/in", 201, key=ADMIN_KEY, data=b"x")
    body = {"asset_id": "dummy", "workspace_id": ws, "inputs": {"source": "in"}, "callback": {"url": url}}
    problem = await api.json("POST", "/api/v1/executions", 400, key=ADMIN_KEY, json=body)
    refused(problem, "body.callback.url", words)
    assert (await api.json("GET", "/api/v1/executions", 200, key=ADMIN_KEY))["items"] == []
    assert (await api.json("GET", "/api/v1/subscriptions", 200, key=ADMIN_KEY))["items"] == []
