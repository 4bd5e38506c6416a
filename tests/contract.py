"""Checks HTTP responses seen in tests against contracts/openapi.yaml."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from openapi_schema_validator import OAS31Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from tests.tes_contract import TesContract

TES_BASE = "/ga4gh/tes/v1/"
SPEC_PATH = Path(__file__).resolve().parents[1] / "contracts" / "openapi.yaml"
SPEC_URI = "urn:provider:openapi"


@dataclass(frozen=True)
class Operation:
    template: str
    method: str
    spec: dict[str, Any]


class OpenApiContract:
    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.registry: Registry = Registry().with_resource(
            SPEC_URI, Resource.from_contents(spec, default_specification=DRAFT202012)
        )
        self._paths = []
        for template, item in spec["paths"].items():
            # `{key}` (object keys) may span several segments; other parameters are one segment.
            escaped = re.escape(template).replace(r"\{key\}", ".+")
            pattern = "^" + re.sub(r"\\\{[^}]+\\\}", "[^/]+", escaped) + "$"
            self._paths.append((re.compile(pattern), template, item))
        self.tes = TesContract()
        # Literal paths win over templated ones (e.g. /a/me before /a/{id}).
        self._paths.sort(key=lambda entry: entry[1].count("{"))

    @classmethod
    def load(cls) -> OpenApiContract:
        return cls(yaml.safe_load(SPEC_PATH.read_text()))

    def operation(self, method: str, path: str) -> Operation | None:
        for pattern, template, item in self._paths:
            if pattern.match(path):
                op = item.get(method.lower())
                return Operation(template, method.upper(), op) if op else None
        return None

    def operations(self) -> set[tuple[str, str]]:
        methods = {"get", "put", "post", "delete", "patch", "head", "options"}
        return {(m.upper(), p) for p, item in self.spec["paths"].items() for m in item if m in methods}

    def _resolve(self, node: dict[str, Any]) -> dict[str, Any]:
        while "$ref" in node:
            pointer = node["$ref"].removeprefix("#/").split("/")
            node = self.spec
            for part in pointer:
                node = node[part]
        return node

    def check_response(
        self, method: str, path: str, status: int, content_type: str, body: bytes
    ) -> list[str]:
        """Problems with one response; an empty list means it conforms."""
        if path.startswith(TES_BASE):  # GA4GH TES: its own specification (contracts/tes/)
            return self.tes.check_response(method, path, status, content_type, body)
        op = self.operation(method, path)
        if op is None:
            if status in (404, 405):
                return []  # probing a path or method the service does not have
            return [f"{method} {path} is not in the contract"]
        responses = op.spec.get("responses", {})
        declared = responses.get(str(status)) or responses.get("default")
        if declared is None:
            return [
                f"{method} {op.template}: status {status} is not declared (declared: {sorted(responses)})"
            ]
        declared = self._resolve(declared)
        content = declared.get("content")
        if not content:
            return [] if not body else [f"{method} {op.template} {status}: body given where none is declared"]
        media = content.get(content_type)
        if media is None:
            if "*/*" in content:
                return []  # any bytes (object downloads)
            return [f"{method} {op.template} {status}: content type {content_type} not in {sorted(content)}"]
        if not content_type.endswith("json"):
            return []
        schema = media.get("schema", {})
        document = json.loads(body)
        # Local refs (#/components/...) must resolve against the whole document.
        problems = []
        for error in OAS31Validator(_rebase(schema), registry=self.registry).iter_errors(document):
            where = "/".join(str(p) for p in error.absolute_path) or "(root)"
            problems.append(f"{method} {op.template} {status}: {where}: {error.message}")
        return problems


def _rebase(node: Any) -> Any:
    if isinstance(node, dict):
        return {
            k: (SPEC_URI + v if k == "$ref" and v.startswith("#") else _rebase(v)) for k, v in node.items()
        }
    if isinstance(node, list):
        return [_rebase(v) for v in node]
    return node
