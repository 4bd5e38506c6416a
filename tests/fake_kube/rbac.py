"""The rules of an RBAC Role, as the API server's RBAC authorizer reads them.

The fake authorizes nothing by default; admission checks that ask the authorizer (see
`FakeKube.owner_references_role`) ask this instead, so a test can run them against the Role a
deployment ships.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml


def load_role(path: Path) -> dict[str, Any]:
    """The one Role in a YAML file."""
    roles: list[dict[str, Any]] = [
        d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d and d["kind"] == "Role"
    ]
    assert len(roles) == 1, f"expected one Role in {path}, found {len(roles)}"
    return roles[0]


def allows(
    role: Mapping[str, Any], verb: str, group: str, resource: str, subresource: str = "", name: str = ""
) -> bool:
    """Whether a rule of `role` grants `verb` on `resource[/subresource]` (named `name`) of `group`:
    rbac/v1 PolicyRule matching, wildcards and resourceNames included."""
    combined = f"{resource}/{subresource}" if subresource else resource
    for rule in role.get("rules") or []:
        verbs = rule.get("verbs") or []
        if "*" not in verbs and verb not in verbs:
            continue
        groups = rule.get("apiGroups") or []
        if "*" not in groups and group not in groups:
            continue
        resources = rule.get("resources") or []
        if not any(r in ("*", combined) or (subresource and r == f"*/{subresource}") for r in resources):
            continue
        names = rule.get("resourceNames") or []
        if names and name not in names:
            continue
        return True
    return False
