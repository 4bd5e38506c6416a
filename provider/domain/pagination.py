"""Keyset pagination with opaque page tokens."""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from provider.domain.errors import FieldProblem, InvalidInput

T = TypeVar("T")

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500


@dataclass(frozen=True)
class PageRequest:
    """Ask for at most `size` items strictly after the position `after` (None: from the start)."""

    size: int = DEFAULT_PAGE_SIZE
    after: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    next_after: tuple[str, ...] | None

    @property
    def next_token(self) -> str | None:
        return encode_token(self.next_after) if self.next_after is not None else None


def encode_token(position: tuple[str, ...]) -> str:
    raw = json.dumps(list(position), separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_token(token: str, arity: int) -> tuple[str, ...]:
    """Decode a token made by `encode_token`; anything else is a 400-class input problem."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        value: Any = json.loads(raw)
    except (binascii.Error, ValueError, RecursionError) as exc:
        raise _bad_token() from exc
    if not (
        isinstance(value, list)
        and len(value) == arity
        and all(isinstance(v, str) and "\0" not in v for v in value)
    ):
        raise _bad_token()
    return tuple(value)


def _bad_token() -> InvalidInput:
    return InvalidInput(
        "page_token is not a token this service issued",
        [FieldProblem("query.page_token", "malformed page token")],
    )


def page_from_rows(rows: list[T], size: int, key: Any) -> Page[T]:
    """Build a page from up to `size + 1` fetched rows; the extra row only says that more exist."""
    if len(rows) > size:
        rows = rows[:size]
        return Page(rows, key(rows[-1]))
    return Page(rows, None)
