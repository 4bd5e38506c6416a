"""contracts/openapi.yaml is the source of truth: valid, complete, and matched by the code."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from openapi_spec_validator import validate
from pydantic import BaseModel

from provider.api.handlers.executions import CallbackCreate, ExecutionCreate
from provider.api.handlers.subscriptions import SubscriptionCreate, SubscriptionFilter
from provider.api.parsing import MAX_JSON_DEPTH
from provider.api.schemas import LABEL_KEY, ApiKeyCreate, TenantCreate
from provider.domain.assets import (
    AssetInput,
    AssetOutput,
    AssetSpec,
    EnvRule,
    LocalRunner,
    Resources,
    Toleration,
)
from provider.domain.workspaces import MAX_KEY_BYTES, MAX_SEGMENT_BYTES
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
    documented = contract.operations()
    assert served - documented == set(), "served but not in contracts/openapi.yaml"
    assert documented - served == set(), "in contracts/openapi.yaml but not served"


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
    assert key["schema"]["maxLength"] == MAX_KEY_BYTES == schemas["ObjectKeyValue"]["maxLength"]
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
