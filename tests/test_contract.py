"""contracts/openapi.yaml is the source of truth: valid, complete, and matched by the code."""

from __future__ import annotations

import base64
import itertools
import re
from collections.abc import Callable
from typing import Any

from aiohttp import web
from openapi_spec_validator import validate
from pydantic import BaseModel

from provider.api.handlers.executions import CallbackCreate, ExecutionCreate
from provider.api.handlers.subscriptions import SubscriptionCreate, SubscriptionFilter
from provider.api.parsing import MAX_JSON_DEPTH
from provider.api.schemas import LABEL_KEY, ApiKeyCreate, TenantCreate
from provider.domain.assets import (
    ASSET_ID_PATTERN,
    ENV_KEY_PATTERN,
    AssetInput,
    AssetOutput,
    AssetSpec,
    EnvRule,
    LocalRunner,
    Resources,
    Toleration,
    _absolute,
    _safe_relative,
)
from provider.domain.errors import InvalidKey
from provider.domain.ids import id_millis, new_id
from provider.domain.imports import header_problems
from provider.domain.notifications import EVENT_PATTERNS, secret_problem, type_problem
from provider.domain.workspaces import MAX_KEY_BYTES, MAX_SEGMENT_BYTES, check_prefix, key_problems
from tests.conftest import Api
from tests.contract import OpenApiContract


def test_the_document_is_valid_openapi_3_1(contract: OpenApiContract) -> None:
    assert contract.spec["openapi"].startswith("3.1")
    validate(contract.spec)


def served_operations(app: web.Application) -> set[tuple[str, str]]:
    served = set()
    for route in app.router.routes():
        resource = route.resource
        if resource is None or isinstance(resource, web.StaticResource):
            continue
        served.add((route.method, resource.canonical))
    return served


async def test_every_route_is_documented_and_every_documented_path_is_served(
    api: Api, contract: OpenApiContract
) -> None:
    served = served_operations(api.app)
    tes = {op for op in served if op[1].startswith("/ga4gh/tes/")}
    served -= tes
    documented = contract.operations()
    assert served - documented == set(), "served but not in contracts/openapi.yaml"
    assert documented - served == set(), "in contracts/openapi.yaml but not served"
    # GA4GH TES: exactly the operations of the vendored TES 1.1 specification.
    assert tes == contract.tes.operations()


async def test_served_document_is_the_contract(api: Api, contract: OpenApiContract) -> None:
    assert await api.json("GET", "/openapi.json", 200) == contract.spec


def _properties(schema: dict[str, Any], contract: OpenApiContract) -> tuple[set[str], set[str]]:
    props: dict[str, Any] = dict(schema.get("properties", {}))
    required = set(schema.get("required", []))
    for part in schema.get("allOf", []):
        inner = contract._resolve(part)
        p, r = _properties(inner, contract)
        props.update(dict.fromkeys(p))
        required |= r
    return set(props), required


def test_request_schemas_match_the_pydantic_models(contract: OpenApiContract) -> None:
    """Each body model accepts exactly the fields the contract names, with the same required ones."""
    pairs: list[tuple[str, type[BaseModel]]] = [
        ("TenantCreate", TenantCreate),
        ("ApiKeyCreate", ApiKeyCreate),
        ("AssetSpec", AssetSpec),
        ("AssetInput", AssetInput),
        ("AssetOutput", AssetOutput),
        ("Resources", Resources),
        ("Toleration", Toleration),
        ("EnvRule", EnvRule),
        ("LocalRunner", LocalRunner),
        ("ExecutionCreate", ExecutionCreate),
        ("CallbackCreate", CallbackCreate),
        ("SubscriptionCreate", SubscriptionCreate),
        ("SubscriptionFilter", SubscriptionFilter),
    ]
    for name, model in pairs:
        props, required = _properties(contract.spec["components"]["schemas"][name], contract)
        fields = set(model.model_fields)
        model_required = {n for n, f in model.model_fields.items() if f.is_required()}
        assert props == fields, f"{name}: contract {sorted(props)} vs model {sorted(fields)}"
        assert required == model_required, f"{name}: required {sorted(required)} vs {sorted(model_required)}"


def test_the_checker_rejects_a_response_that_breaks_the_contract(contract: OpenApiContract) -> None:
    bad = b'{"id": "ten_x", "participant_id": 5}'
    problems = contract.check_response("GET", "/api/v1/tenants/ten_x", 200, "application/json", bad)
    assert problems and any("participant_id" in p or "required" in p for p in problems)
    assert contract.check_response("GET", "/api/v1/tenants/ten_x", 418, "application/json", b"{}")
    assert contract.check_response("GET", "/api/v1/undocumented", 200, "application/json", b"{}")


def test_the_contract_states_the_rules_the_service_enforces(contract: OpenApiContract) -> None:
    schemas = contract.spec["components"]["schemas"]
    assert schemas["Labels"]["propertyNames"]["pattern"].strip("^$") == LABEL_KEY.pattern
    key = contract.spec["components"]["parameters"]["ObjectKey"]
    assert key["schema"] == {"$ref": "#/components/schemas/ObjectKeyValue"}
    assert schemas["ObjectKeyValue"]["maxLength"] == MAX_KEY_BYTES
    assert f"{MAX_SEGMENT_BYTES} bytes in each" in key["description"].replace("\n        ", " ")
    for name, field in (("ImportCreate", "target_key"), ("LinkCreate", "key")):
        assert schemas[name]["properties"][field] == {"$ref": "#/components/schemas/ObjectKeyValue"}
    delete = contract.spec["paths"]["/api/v1/workspaces/{workspace_id}/objects/{key}"]["delete"]
    assert "400" in delete["responses"]  # an invalid key
    description = " ".join(contract.spec["info"]["description"].split())
    assert f"at most {MAX_JSON_DEPTH} levels" in description and "NUL (U+0000)" in description
    assert "only tokens this service issued" in " ".join(
        contract.spec["components"]["parameters"]["PageToken"]["description"].split()
    )


def _pattern(contract: OpenApiContract, *path: str) -> re.Pattern[str]:
    node: Any = contract.spec
    for part in path:
        node = node[part]
    return re.compile(node["pattern"])


def _parameter(contract: OpenApiContract, path: str, name: str) -> dict[str, Any]:
    operation = contract.spec["paths"][path]["get"]
    return next(p for p in operation["parameters"] if p.get("name") == name)["schema"]


def _valid_prefix(prefix: str) -> bool:
    try:
        check_prefix(prefix)
    except InvalidKey:
        return False
    return True


KEY_SAMPLES = [
    "a",
    "a/b/c.txt",
    ".",
    "..",
    "...",
    ".a",
    "a.",
    "a/./b",
    "a/../b",
    "../a",
    "a//b",
    "/a",
    "a/",
    "a\x00b",
    "a\x1fb",
    "a\x7fb",
    "a\x85b",
    "é/ü",
    "a\u200bb",
    "x" * 255,
    "x" * 256,
    "." + "x" * 254,
    ".." + "x" * 253,
    ".." + "x" * 254,
    "/".join(["x" * 200] * 5),
]


def _accepts(check: Callable[[str], object], value: str) -> bool:
    try:
        check(value)
    except ValueError:
        return False
    return True


def test_the_contract_patterns_accept_what_the_service_accepts(contract: OpenApiContract) -> None:
    """Each pattern that states a rule accepts a value exactly when the service's own check does
    (for keys: in characters of one byte, where the byte limits are the character limits)."""
    schemas = contract.spec["components"]["schemas"]
    key = _pattern(contract, "components", "schemas", "ObjectKeyValue")
    prefix = _pattern(contract, "components", "schemas", "ObjectKeyPrefix")
    for sample in KEY_SAMPLES:
        assert bool(key.search(sample)) == (not key_problems(sample)), repr(sample)
        for candidate in (sample, sample + "/", ""):
            assert bool(prefix.search(candidate)) == _valid_prefix(candidate), repr(candidate)

    secret = _pattern(contract, "components", "schemas", "WebhookSecret")
    for size in range(80):
        encoded = "whsec_" + base64.b64encode(bytes(range(size))).decode()
        for candidate in (encoded, encoded + "=", encoded + "A", encoded[:-1]):
            assert bool(secret.search(candidate)) == (secret_problem(candidate) is None), candidate

    last_event_id = re.compile(_parameter(contract, "/api/v1/events", "Last-Event-ID")["pattern"])
    for candidate in (
        new_id("evt"),
        "",
        "0",
        "evt_",
        new_id("evt")[:-1],
        new_id("evt") + "0",
        "x_" + "0" * 26,
    ):
        accepted = candidate == "" or id_millis(candidate) is not None
        assert bool(last_event_id.search(candidate)) == accepted, candidate

    types = re.compile(_parameter(contract, "/api/v1/events", "types")["items"]["pattern"])
    for candidate in [*EVENT_PATTERNS, "", ",", "execution.*,,import.failed", "execution.x", "exec", "*"]:
        parts = [part for part in candidate.split(",") if part]
        assert bool(types.search(candidate)) == all(type_problem(p) is None for p in parts), candidate

    absolute = _pattern(contract, "components", "schemas", "AbsolutePath")
    relative = _pattern(contract, "components", "schemas", "RelativePath")
    for parts in itertools.product(["/", ".", "a", "\x00"], repeat=5):
        path = "".join(parts)
        assert bool(absolute.search(path)) == _accepts(_absolute, path), repr(path)
        assert bool(relative.search(path)) == _accepts(_safe_relative, path), repr(path)
    assert schemas["EnvName"]["pattern"] == ENV_KEY_PATTERN
    asset_id = contract.spec["components"]["parameters"]["AssetId"]["schema"]
    assert asset_id["pattern"] == ASSET_ID_PATTERN

    headers = schemas["ImportCreate"]["properties"]["headers"]
    name, value = (
        re.compile(headers["propertyNames"]["pattern"]),
        re.compile(headers["additionalProperties"]["pattern"]),
    )
    for candidate in (
        "Authorization",
        "X-A_b.c~1",
        "Bad Name",
        "X:",
        "É",
        "",
        "a\tb",
        "a\r\nb",
        "a\x00",
        "a\x7f",
        "é",
    ):
        problems = {p.message for p in header_problems({candidate or "-": candidate})}
        assert bool(value.search(candidate)) == (not any("value" in p for p in problems)), repr(candidate)
        problems = {p.message for p in header_problems({candidate: "v"})}
        assert bool(name.search(candidate)) == (not problems), repr(candidate)

    label = re.compile(_parameter(contract, "/api/v1/executions", "label")["items"]["pattern"])
    for candidate in (
        "team=a",
        "team=",
        "a.b/c-d_e=x=y",
        "=a",
        "-a=b",
        "team",
        "x" * 63 + "=1",
        "x" * 64 + "=1",
    ):
        name, sep, _ = candidate.partition("=")
        assert bool(label.search(candidate)) == bool(sep and LABEL_KEY.fullmatch(name)), candidate


def test_every_operation_with_a_path_parameter_may_answer_404(contract: OpenApiContract) -> None:
    """A path parameter with NUL names nothing: 404 (provider.api.routing), on every such route."""
    methods = {"get", "put", "post", "delete", "patch", "head"}
    missing = [
        f"{method.upper()} {path}"
        for path, item in contract.spec["paths"].items()
        if "{" in path
        for method, operation in item.items()
        if method in methods and "404" not in operation["responses"]
    ]
    assert missing == []
