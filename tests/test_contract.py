"""contracts/openapi.yaml is the source of truth: valid, complete, and matched by the code."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from openapi_spec_validator import validate
from pydantic import BaseModel

from provider.api.handlers.executions import CallbackCreate, ExecutionCreate
from provider.api.handlers.subscriptions import SubscriptionCreate, SubscriptionFilter
from provider.api.schemas import ApiKeyCreate, TenantCreate
from provider.domain.assets import (
    AssetInput,
    AssetOutput,
    AssetSpec,
    EnvRule,
    LocalRunner,
    Resources,
    Toleration,
)
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
