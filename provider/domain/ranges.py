"""HTTP byte ranges (RFC 9110 section 14): one range per request."""

from __future__ import annotations

import re
from dataclasses import dataclass

from provider.domain.errors import RangeNotSatisfiable

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


@dataclass(frozen=True)
class ByteRange:
    start: int
    end: int  # inclusive

    @property
    def length(self) -> int:
        return self.end - self.start + 1

    def content_range(self, size: int) -> str:
        return f"bytes {self.start}-{self.end}/{size}"


def resolve_range(header: str | None, size: int) -> ByteRange | None:
    """The range a `Range` header asks for within `size` bytes.

    None means "send the whole object" (no header, or one this service ignores such as several
    ranges, as RFC 9110 allows); an unsatisfiable range raises RangeNotSatisfiable.
    """
    if not header:
        return None
    match = _RANGE.match(header.strip())
    if match is None:
        return None
    first, last = match.groups()
    if first == "" and last == "":
        return None
    if first == "":
        suffix = int(last)
        if suffix == 0 or size == 0:
            raise RangeNotSatisfiable(size)
        return ByteRange(max(0, size - suffix), size - 1)
    start = int(first)
    if start >= size:
        raise RangeNotSatisfiable(size)
    end = size - 1 if last == "" else min(int(last), size - 1)
    if end < start:
        return None  # syntactically invalid: ignore the header
    return ByteRange(start, end)
