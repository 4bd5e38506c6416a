"""HTTP byte ranges (RFC 9110 section 14): one range per request."""

from __future__ import annotations

import re
from dataclasses import dataclass

from provider.domain.errors import RangeNotSatisfiable

# ranges-specifier = range-unit "=" range-set; the unit is case-insensitive, and a range-set is
# a comma-separated list of int-range (first-last, last optional) or suffix-range (-length).
_SPECIFIER = re.compile(r"bytes=(.*)", re.IGNORECASE | re.DOTALL)
_SPEC = re.compile(r"([0-9]*)-([0-9]*)")
# Past any object's size; longer digit strings are not converted (int() refuses 4300 digits).
_BEYOND_ANY_SIZE = 10**20


@dataclass(frozen=True)
class ByteRange:
    start: int
    end: int  # inclusive

    @property
    def length(self) -> int:
        return self.end - self.start + 1

    def content_range(self, size: int) -> str:
        return f"bytes {self.start}-{self.end}/{size}"


def _number(digits: str) -> int:
    digits = digits.lstrip("0") or "0"
    return int(digits) if len(digits) < 20 else _BEYOND_ANY_SIZE


def _satisfiable(first: str, last: str, size: int) -> ByteRange | None:
    """One syntactically valid range-spec within `size` bytes, or None if unsatisfiable."""
    if first == "":
        suffix = _number(last)
        return ByteRange(max(0, size - suffix), size - 1) if suffix > 0 and size > 0 else None
    start = _number(first)
    if start >= size:
        return None
    return ByteRange(start, size - 1 if last == "" else min(_number(last), size - 1))


def resolve_range(header: str | None, size: int) -> ByteRange | None:
    """The range a GET's `Range` header asks for within `size` bytes.

    None means "send the whole object": no header, a header that is not a valid bytes range-set
    (ignored, as RFC 9110 requires), or several ranges (answered whole, as it allows). A valid
    header none of whose ranges is satisfiable raises RangeNotSatisfiable (416).
    """
    if not header:
        return None
    specifier = _SPECIFIER.fullmatch(header.strip())
    if specifier is None:
        return None
    specs = []
    for item in specifier.group(1).split(","):
        spec = _SPEC.fullmatch(item.strip(" \t"))
        if spec is None or spec.groups() == ("", ""):
            return None
        first, last = spec.groups()
        if first and last and _number(last) < _number(first):
            return None  # an int-range that ends before it starts makes the header invalid
        specs.append((first, last))
    satisfiable = [r for first, last in specs if (r := _satisfiable(first, last, size)) is not None]
    if not satisfiable:
        raise RangeNotSatisfiable(size)
    return satisfiable[0] if len(specs) == 1 else None
