"""Label and field selectors as the API server parses them from query strings.

The grammar follows k8s.io/apimachinery/pkg/labels and .../fields closely enough that a
selector the real server rejects is rejected here too (400 BadRequest), and one it accepts
selects the same objects.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_NAME_PART = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


class SelectorError(ValueError):
    """A selector the server cannot parse; answered as 400 BadRequest."""


def label_key_errors(key: str) -> list[str]:
    """Problems with a qualified label key (`prefix/name`), in the server's wording."""
    errors: list[str] = []
    prefix, _, name = key.rpartition("/")
    if "/" in key and not prefix:
        errors.append("prefix part must be non-empty")
    elif prefix:
        if len(prefix) > 253:
            errors.append("prefix part must be no more than 253 characters")
        elif not _DNS_SUBDOMAIN.match(prefix):
            errors.append(
                "prefix part a lowercase RFC 1123 subdomain must consist of lower case alphanumeric "
                "characters, '-' or '.', and must start and end with an alphanumeric character "
                "(e.g. 'example.com', regex used for validation is "
                "'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
            )
    if not name:
        errors.append("name part must be non-empty")
    elif len(name) > 63:
        errors.append("name part must be no more than 63 characters")
    elif not _NAME_PART.match(name):
        errors.append(
            "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and "
            "end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex "
            "used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"
        )
    return errors


def label_value_errors(value: str) -> list[str]:
    """Problems with a label value, in the server's wording."""
    errors: list[str] = []
    if len(value) > 63:
        errors.append("must be no more than 63 characters")
    if not _LABEL_VALUE.match(value):
        errors.append(
            "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' "
            "or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or "
            "'my_value',  or '12345', regex used for validation is "
            "'(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"
        )
    return errors


@dataclass(frozen=True)
class Requirement:
    """One clause of a label selector."""

    key: str
    op: str  # "=", "!=", "in", "notin", "exists", "!", "gt", "lt"
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        value = labels.get(self.key)
        if self.op in ("=", "in"):
            return present and value in self.values
        if self.op in ("!=", "notin"):
            return not present or value not in self.values
        if self.op == "exists":
            return present
        if self.op == "!":
            return not present
        if not present:
            return False
        try:
            number = int(str(value))
        except ValueError:
            return False
        bound = int(self.values[0])
        return number > bound if self.op == "gt" else number < bound


@dataclass(frozen=True)
class LabelSelector:
    """A parsed label selector; the empty selector matches everything."""

    requirements: tuple[Requirement, ...] = ()

    def matches(self, labels: Mapping[str, str] | None) -> bool:
        labels = labels or {}
        return all(requirement.matches(labels) for requirement in self.requirements)

    @property
    def empty(self) -> bool:
        return not self.requirements


_TOKEN = re.compile(r"\s*(==|!=|=|\(|\)|,|!|>|<|[^\s=!(),<>]+)")


def _tokens(text: str) -> list[str]:
    tokens: list[str] = []
    position = 0
    while position < len(text):
        if text[position:].strip() == "":
            break
        match = _TOKEN.match(text, position)
        if not match:  # pragma: no cover - the pattern matches any non-space character
            raise SelectorError(f"unable to parse requirement: unexpected character at {position}")
        tokens.append(match.group(1))
        position = match.end()
    return tokens


def _check_key(key: str) -> None:
    problems = label_key_errors(key)
    if problems:
        raise SelectorError(
            f'unable to parse requirement: key: Invalid value: "{key}": {"; ".join(problems)}'
        )


def _check_value(value: str) -> None:
    problems = label_value_errors(value)
    if problems:
        raise SelectorError(
            f"unable to parse requirement: values[0][{value}]: "
            f'Invalid value: "{value}": {"; ".join(problems)}'
        )


_OPERATORS = {"=", "==", "!=", "(", ")", ",", "!", ">", "<"}


def parse_label_selector(text: str | None) -> LabelSelector:
    """Parse `a=b,c!=d,e in (x,y),!f` into a selector; raise SelectorError when malformed."""
    if not text or not text.strip():
        return LabelSelector()
    tokens = _tokens(text)
    requirements: list[Requirement] = []
    index = 0

    def take() -> str:
        nonlocal index
        if index >= len(tokens):
            raise SelectorError(f"unable to parse requirement: found '', expected: identifier in {text!r}")
        token = tokens[index]
        index += 1
        return token

    def peek() -> str | None:
        return tokens[index] if index < len(tokens) else None

    while True:
        token = take()
        if token == "!":
            key = take()
            if key in _OPERATORS:
                raise SelectorError(f"unable to parse requirement: found '{key}', expected: identifier")
            _check_key(key)
            requirements.append(Requirement(key, "!"))
        else:
            if token in _OPERATORS:
                raise SelectorError(f"unable to parse requirement: found '{token}', expected: !, identifier")
            key = token
            _check_key(key)
            operator = peek()
            if operator is None or operator == ",":
                requirements.append(Requirement(key, "exists"))
            elif operator in ("=", "==", "!="):
                take()
                value = peek()
                if value is None or value == ",":
                    value = ""
                else:
                    value = take()
                    if value in _OPERATORS:
                        raise SelectorError(
                            f"unable to parse requirement: found '{value}', expected: identifier"
                        )
                _check_value(value)
                requirements.append(Requirement(key, "!=" if operator == "!=" else "=", (value,)))
            elif operator in (">", "<"):
                take()
                value = take()
                try:
                    int(value)
                except ValueError:
                    raise SelectorError(
                        f"unable to parse requirement: for 'Gt', 'Lt' operators, the value must be an "
                        f"integer: {value!r}"
                    ) from None
                requirements.append(Requirement(key, "gt" if operator == ">" else "lt", (value,)))
            elif operator in ("in", "notin"):
                take()
                if take() != "(":
                    raise SelectorError("unable to parse requirement: found '', expected: '('")
                values: list[str] = []
                while True:
                    item = take()
                    if item == ")":
                        break
                    if item == ",":
                        continue
                    if item in _OPERATORS:
                        raise SelectorError(
                            f"unable to parse requirement: found '{item}', expected: ',', ')'"
                        )
                    _check_value(item)
                    values.append(item)
                if not values:
                    raise SelectorError(
                        "unable to parse requirement: values: Invalid value: []: for 'in', 'notin' "
                        "operators, values set can't be empty"
                    )
                requirements.append(Requirement(key, operator, tuple(values)))
            else:
                raise SelectorError(
                    f"unable to parse requirement: found '{operator}', expected: in, notin, =, ==, !=, gt, lt"
                )
        following = peek()
        if following is None:
            break
        if following != ",":
            raise SelectorError(f"unable to parse requirement: found '{following}', expected: ','")
        take()
    return LabelSelector(tuple(requirements))


@dataclass(frozen=True)
class FieldRequirement:
    """One `field=value` or `field!=value` clause of a field selector."""

    field: str
    value: str
    negated: bool

    def matches(self, fields: Mapping[str, str]) -> bool:
        actual = fields.get(self.field)
        return (actual != self.value) if self.negated else (actual == self.value)


@dataclass(frozen=True)
class FieldSelector:
    """A parsed field selector; the empty selector matches everything."""

    requirements: tuple[FieldRequirement, ...] = ()

    def matches(self, fields: Mapping[str, str]) -> bool:
        return all(requirement.matches(fields) for requirement in self.requirements)

    @property
    def empty(self) -> bool:
        return not self.requirements


def _split_unescaped(text: str, separator: str) -> list[str]:
    parts: list[str] = []
    current: list[str] = []
    escaped = False
    for char in text:
        if escaped:
            current.append("\\" + char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == separator:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    if escaped:
        raise SelectorError(f"invalid field selector: {text!r}: trailing backslash")
    parts.append("".join(current))
    return parts


def _unescape(text: str) -> str:
    out: list[str] = []
    escaped = False
    for char in text:
        if escaped:
            if char not in "\\,=!":
                raise SelectorError(f"invalid field selector: invalid escape sequence: \\{char}")
            out.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        else:
            out.append(char)
    return "".join(out)


def parse_field_selector(text: str | None, supported: frozenset[str]) -> FieldSelector:
    """Parse `metadata.name=x,status.phase!=Running`; only `supported` fields are allowed."""
    if not text or not text.strip():
        return FieldSelector()
    requirements: list[FieldRequirement] = []
    for part in _split_unescaped(text, ","):
        if not part:
            continue
        for operator in ("!=", "==", "="):
            position = _find_unescaped(part, operator)
            if position >= 0:
                field = _unescape(part[:position]).strip()
                value = _unescape(part[position + len(operator) :])
                break
        else:
            raise SelectorError(f"invalid selector: '{text}'; can't understand '{part}'")
        if field not in supported:
            raise SelectorError(f"field label not supported: {field}")
        requirements.append(FieldRequirement(field, value, operator == "!="))
    return FieldSelector(tuple(requirements))


def _find_unescaped(text: str, token: str) -> int:
    index = 0
    while index < len(text):
        if text[index] == "\\":
            index += 2
            continue
        if text.startswith(token, index):
            return index
        index += 1
    return -1


def object_fields(
    obj: Mapping[str, Any], extra: Mapping[str, Callable[[Mapping[str, Any]], str]]
) -> dict[str, str]:
    """The selectable fields of an object: metadata.name/namespace plus kind-specific ones."""
    metadata = obj.get("metadata") or {}
    fields = {
        "metadata.name": str(metadata.get("name", "")),
        "metadata.namespace": str(metadata.get("namespace", "")),
    }
    for name, getter in extra.items():
        fields[name] = getter(obj)
    return fields
