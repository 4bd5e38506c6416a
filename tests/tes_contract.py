"""Checks the TES API's responses against the GA4GH TES 1.1 OpenAPI vendored in contracts/tes/.

The specification's schemas allow any extra member; here every object that lists its properties
is closed, so that a misspelt or invented field fails. The service-info schema it refers to by URL
is the vendored copy. TES defines no error body: errors must be this service's problem document
with GA4GH's `msg` and `status_code`.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import yaml
from openapi_schema_validator import OAS30Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT4

TES_DIR = Path(__file__).resolve().parents[1] / "contracts" / "tes"
TES_SPEC = TES_DIR / "task_execution_service.openapi.yaml"
SERVICE_INFO = TES_DIR / "service-info.yaml"
SERVICE_INFO_URL = (
    "https://raw.githubusercontent.com/ga4gh-discovery/ga4gh-service-info/v1.0.0/service-info.yaml"
)
SPEC_URI = "urn:provider:tes"
BASE = "/ga4gh/tes/v1"


def _closed(node: Any) -> Any:
    """Every object schema that lists its properties, closed (additionalProperties: false)."""
    if isinstance(node, dict):
        out = {k: _closed(v) for k, v in node.items()}
        if out.get("type") == "object" and "properties" in out and "additionalProperties" not in out:
            out["additionalProperties"] = False
        return out
    if isinstance(node, list):
        return [_closed(v) for v in node]
    return node


class TesContract:
    def __init__(self) -> None:
        self.spec = yaml.safe_load(TES_SPEC.read_text())
        strict = _closed(copy.deepcopy(self.spec))
        # The MINIMAL view is `id` and `state` alone (the view parameter's description), though the
        # task schema requires `executors`: that requirement is checked in every other view.
        strict["components"]["schemas"]["tesTask"]["required"] = []
        # allOf parts cannot each be closed (each would refuse the other's members).
        for name in ("tesServiceInfo", "tesServiceType"):
            strict["components"]["schemas"][name] = self.spec["components"]["schemas"][name]
        info = yaml.safe_load(SERVICE_INFO.read_text())
        self.registry: Registry = Registry().with_resources(
            [
                (SPEC_URI, Resource.from_contents(strict, default_specification=DRAFT4)),
                (SERVICE_INFO_URL, Resource.from_contents(info, default_specification=DRAFT4)),
            ]
        )
        self._paths = []
        for template, item in self.spec["paths"].items():
            pattern = "^" + re.sub(r"\\\{[^}]+\\\}", "[^/:]+", re.escape(BASE + template)) + "$"
            self._paths.append((re.compile(pattern), template, item))
        self._paths.sort(key=lambda entry: -len(entry[1]))

    def operations(self) -> set[tuple[str, str]]:
        methods = {"get", "put", "post", "delete", "patch"}
        return {(m.upper(), BASE + p) for p, item in self.spec["paths"].items() for m in item if m in methods}

    def schema(self, name: str) -> dict[str, Any]:
        return {"$ref": f"{SPEC_URI}#/components/schemas/{name}"}

    def validate(self, instance: Any, schema: dict[str, Any]) -> list[str]:
        validator = OAS30Validator(schema, registry=self.registry)
        return [
            f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(instance)
        ]

    def check_response(
        self, method: str, path: str, status: int, content_type: str, body: bytes
    ) -> list[str]:
        for pattern, path_template, item in self._paths:
            if pattern.match(path) and method.lower() in item:
                op, template = item[method.lower()], path_template
                break
        else:
            return [] if status in (404, 405) else [f"{method} {path} is not in the TES contract"]
        if status >= 400:
            if content_type != "application/problem+json":
                return [f"{method} {template}: {status} answered {content_type}, not a problem document"]
            problem = json.loads(body)
            missing = [
                k for k in ("type", "title", "status", "detail", "msg", "status_code") if k not in problem
            ]
            if missing or problem["status"] != status or problem["status_code"] != status:
                return [f"{method} {template}: error body lacks {missing} or says another status: {problem}"]
            return []
        declared = op["responses"].get(status) or op["responses"].get(str(status))  # YAML: 200 is a number
        if declared is None:
            return [f"{method} {template}: status {status} is not declared"]
        if content_type != "application/json":
            return [f"{method} {template}: answered {content_type}"]
        schema = declared["content"]["application/json"]["schema"]
        ref = schema["$ref"].removeprefix("#/components/schemas/")
        document = json.loads(body)
        problems = self.validate(document, self.schema(ref))
        tasks = (
            document.get("tasks", [])
            if ref == "tesListTasksResponse"
            else [document]
            if ref == "tesTask"
            else []
        )
        for task in tasks:
            if set(task) != {"id", "state"} and "executors" not in task:
                problems.append(f"a task beyond the MINIMAL view lacks executors: {sorted(task)}")
        return [f"{method} {template}: {p}" for p in problems]
