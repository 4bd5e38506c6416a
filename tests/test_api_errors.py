"""Bad input gets a 4xx problem naming the field; nothing is written; never a 500."""

from __future__ import annotations

import re

import pytest

from provider.api.routing import ROUTES
from tests.conftest import ADMIN_KEY, Api
from tests.contract import OpenApiContract


async def tenant_count(api: Api) -> int:
    page = await api.json("GET", "/api/v1/tenants?page_size=500", 200, key=ADMIN_KEY)
    return len(page["items"])


@pytest.mark.parametrize(
    ("body", "status", "field", "words"),
    [
        ('{"participant_id": ', 400, "body", "not valid JSON"),
        ("\xff\xfe", 400, "body", "not valid JSON"),
        ('{"participant_id": 7}', 422, "body.participant_id", "valid string"),
        ('{"participant_id": "x", "colour": "red"}', 422, "body.colour", "Extra inputs"),
        ("{}", 422, "body.participant_id", "Field required"),
        ("[]", 422, "body", "valid dictionary"),
        ('{"participant_id": ""}', 422, "body.participant_id", "at least 1 character"),
    ],
)
async def test_bad_bodies_name_the_field(api: Api, body: str, status: int, field: str, words: str) -> None:
    before = await tenant_count(api)
    problem = await api.json(
        "POST",
        "/api/v1/tenants",
        status,
        key=ADMIN_KEY,
        data=body.encode("latin-1"),
        headers={"Content-Type": "application/json"},
    )
    assert problem["status"] == status
    assert any(e["field"] == field and words in e["message"] for e in problem["errors"]), problem
    assert await tenant_count(api) == before


async def test_wrong_content_type_is_415(api: Api) -> None:
    response = await api.request(
        "POST",
        "/api/v1/tenants",
        key=ADMIN_KEY,
        data="participant_id=x",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status == 415
    assert response.content_type == "application/problem+json"
    assert "application/json" in (await response.json())["detail"]


async def test_oversize_body_is_413_and_writes_nothing(api: Api) -> None:
    before = await tenant_count(api)
    big = '{"participant_id": "' + "x" * (2 * 1024 * 1024) + '"}'
    response = await api.request(
        "POST", "/api/v1/tenants", key=ADMIN_KEY, data=big, headers={"Content-Type": "application/json"}
    )
    assert response.status == 413
    assert (await response.json())["type"] == "about:blank"
    assert await tenant_count(api) == before


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("page_size=0", "query.page_size"),
        ("page_size=many", "query.page_size"),
        ("page_size=501", "query.page_size"),
        ("page_token=%%%", "query.page_token"),
        ("page_token=WyJ4Il0", "query.page_token"),  # a token of the wrong shape for this list
        ("colour=red", "query.colour"),
    ],
)
async def test_bad_query_parameters_are_400(api: Api, query: str, field: str) -> None:
    problem = await api.json("GET", f"/api/v1/assets?{query}", 400, key=ADMIN_KEY)
    assert [e["field"] for e in problem["errors"]] == [field]


async def test_unknown_path_and_method_answer_problem_json(api: Api) -> None:
    missing = await api.request("GET", "/api/v1/nothing-here")
    assert missing.status == 404 and missing.content_type == "application/problem+json"
    wrong = await api.request("PATCH", "/api/v1/tenants", key=ADMIN_KEY)
    assert wrong.status == 405 and wrong.content_type == "application/problem+json"
    assert set(wrong.headers["Allow"].split(",")) == {"GET", "POST"}


async def test_request_id_is_echoed_and_generated(api: Api) -> None:
    given = await api.request("GET", "/healthz", headers={"X-Request-ID": "abc-123"})
    assert given.headers["X-Request-ID"] == "abc-123"
    made = await api.request("GET", "/healthz", headers={"X-Request-ID": "bad id with spaces\u00e9"})
    assert (
        made.headers["X-Request-ID"] != "bad id with spaces\u00e9" and len(made.headers["X-Request-ID"]) == 32
    )
    problem = await api.json(
        "GET", "/api/v1/assets/none", 404, key=ADMIN_KEY, headers={"X-Request-ID": "r-1"}
    )
    assert problem["request_id"] == "r-1"


async def test_every_json_route_refuses_bad_bodies_without_a_500(api: Api, contract: OpenApiContract) -> None:
    operator = (await api.json("GET", "/api/v1/me", 200, key=ADMIN_KEY))["tenant"]["id"]
    ws = await api.json("POST", "/api/v1/workspaces", 201, key=ADMIN_KEY, json={"tenant_id": operator})
    values = {"tenant_id": operator, "asset_id": "dummy", "version": "1.0.0", "workspace_id": ws["id"]}
    json_routes = []
    for route in api.app[ROUTES]:
        if route.path.startswith("/edc/"):
            continue  # EDC's webhook answers 400 for every malformed body (tests/test_edc.py)
        path = re.sub(r"\{(\w+)(?::[^}]*)?\}", lambda m: values.get(m.group(1), "x"), route.path)
        operation = contract.operation(route.method, path)
        assert operation is not None
        content = operation.spec.get("requestBody", {}).get("content", {})
        if "application/json" in content:
            json_routes.append((route, path))
    assert len(json_routes) >= 6
    cases = [
        ("malformed", b"{", "application/json", 400),
        (
            "wrong type",
            b'{"title": 5, "participant_id": 5, "role": 5, "name": 5, "source_url": 5}',
            "application/json",
            422,
        ),
        ("not an object", b"[1]", "application/json", 422),
        ("content type", b"{}", "text/plain", 415),
        ("oversize", b'{"x": "' + b"y" * (1024 * 1024 + 10) + b'"}', "application/json", 413),
    ]
    for route, path in json_routes:
        for label, body, content_type, status in cases:
            response = await api.request(
                route.method, path, key=ADMIN_KEY, data=body, headers={"Content-Type": content_type}
            )
            assert response.status == status, f"{route.method} {route.path} {label}: {response.status}"
            assert response.content_type == "application/problem+json"
    # Nothing was written by any of them.
    assert (await api.json("GET", "/api/v1/assets/dummy", 200, key=ADMIN_KEY))["title"] == "Dummy job"
    assert await tenant_count(api) == 1
    workspaces = await api.json("GET", "/api/v1/workspaces", 200, key=ADMIN_KEY)
    assert [w["id"] for w in workspaces["items"]] == [ws["id"]]
