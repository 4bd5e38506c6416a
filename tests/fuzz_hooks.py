"""schemathesis hooks for tests/fuzz_contract.py: the failures that are not failures of this API.

Each rule drops one kind of failure only, for the reason its comment gives: a schema-valid
request refused for a rule that the contract states in prose because JSON Schema cannot state
it, with the problem type or message the service gives for that rule. Everything else fails the
run. Each dropped failure is written to `dropped.txt` in the working directory, with its rule.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import schemathesis
from schemathesis import Case, Response
from schemathesis.core.failures import Failure
from schemathesis.openapi.checks import RejectedPositiveData

PROBLEM = "urn:provider:problem:"
DROPPED = "dropped.txt"

# An asset's rules that relate one part of it to another (or to the path), or that need Python's
# own parsers: a consumer_env pattern must compile, a default satisfy its rule, names be unique,
# the local runner name declared inputs, no input be mounted inside result_dir, a body's id and
# version repeat the path's, and the version be PEP 440 (a grammar too large to restate).
ASSET_RELATIONS = (
    "pattern does not compile",
    "default does not satisfy the rule",
    "duplicate input names",
    "duplicate output names",
    "local names inputs the asset does not declare",
    "lies inside result_dir",
    "must equal the path's",
    "is not a version such as",
)


def _problem(response: Response) -> dict[str, Any]:
    try:
        body = json.loads(response.content or b"")
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _fields(problem: dict[str, Any]) -> list[tuple[str, str]]:
    errors = problem.get("errors") or []
    return [(str(e.get("field", "")), str(e.get("message", ""))) for e in errors if isinstance(e, dict)]


def _prose_rule(problem: dict[str, Any]) -> str | None:
    """The rule, stated in the contract's prose, for which schema-valid data was refused; None
    when the refusal names no such rule."""
    kind = str(problem.get("type", "")).removeprefix(PROBLEM)
    fields = _fields(problem)

    def fields_are(test: Callable[[str, str], bool]) -> bool:
        return bool(fields) and all(test(field, message) for field, message in fields)

    if kind == "invalid-query" and fields_are(lambda f, m: f == "query.page_token"):
        # Only page tokens this service issued are accepted (contract: PageToken); a made-up one
        # is a 400 however it is spelled.
        return "page token not issued here"
    if kind == "invalid-key" and fields_are(lambda f, m: "bytes of UTF-8" in m):
        # Key limits are in bytes of UTF-8; JSON Schema's lengths count characters, so the
        # contract's pattern lets through keys of multi-byte characters that are too long.
        return "key limit in bytes"
    if fields_are(lambda f, m: "NUL (" in m):
        # No string may contain NUL (the rules that hold everywhere, in the contract's
        # description); a pattern on every string would be the only way to say so in JSON Schema.
        return "NUL"
    if kind == "malformed-json" and str(problem.get("detail", "")).startswith("the body is refused:"):
        # Integers within 64 bits, finite numbers, at most 64 levels of nesting: rules that hold
        # everywhere, stated once in the contract's description rather than on every number.
        return "JSON limits"
    if kind != "validation-error":
        # The address guard (the operator's networks, what a name resolves to when asked), a
        # checksum header against the body it describes, the catalog's offerings, a range against
        # the object's size: each relates the value to something outside the request.
        outside = ("forbidden-address", "checksum-mismatch", "offering-not-granted", "range-not-satisfiable")
        return kind if kind in outside else None
    if fields_are(lambda f, m: f == "body.ttl_seconds" and m.startswith("must be at most")):
        # A token lifetime beyond the operator's maximum (tokens.max_ttl_seconds), a setting.
        return "token lifetime beyond the operator's maximum"
    if fields_are(lambda f, m: m == "must be in the future"):
        # An API key's expiry is judged against the clock when the key is made.
        return "expiry in the past"
    if fields_are(lambda f, m: f == "body.role" and m == "admin is only allowed for the operator tenant"):
        # Admin keys belong to the operator's tenant only: the role against the tenant in the path.
        return "admin key for another tenant"
    if fields_are(
        lambda f, m: f.startswith(("body", "path.version")) and any(r in m for r in ASSET_RELATIONS)
    ):
        return "asset rule relating its parts"
    if problem.get("detail") == "the execution request does not fit the asset":
        # Inputs and environment are checked against the asset the request names (its inputs,
        # its consumer_env rules) and the workspace's objects.
        return "execution request against its asset"
    return None


def _negative_component(case: Case) -> bool:
    """Whether a case that schemathesis calls positive has a part it generated negative: its
    coverage phase labels such cases positive (e.g. `Last-Event-ID: 0`, drawn as the integer 0
    for a header whose schema wants a pattern), so refusing them is right."""
    meta = case.meta
    return meta is not None and any(c.mode.is_negative for c in meta.components.values())


@schemathesis.hook
def filter_failure(context: Any, failure: Failure, case: Case, response: Response) -> bool:
    """Keep every failure except a schema-valid request refused for a rule stated in prose."""
    if not isinstance(failure, RejectedPositiveData):
        return True
    rule = (
        "a negative part in a positive case" if _negative_component(case) else _prose_rule(_problem(response))
    )
    if rule is None:
        return True
    with open(DROPPED, "a", encoding="utf-8") as dropped:
        dropped.write(f"{rule}\t{case.operation.label}\n")
    return False
