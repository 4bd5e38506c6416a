"""Identifiers: a type prefix and a time-ordered ULID-style body (sortable, URL-safe)."""

from __future__ import annotations

import secrets
import threading
import time

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"  # Crockford base32, lower case
_RANDOM_BITS = 80
_lock = threading.Lock()
_last = (0, 0)


def _base32(value: int, length: int) -> str:
    chars = []
    for _ in range(length):
        chars.append(_ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(chars))


def new_id(prefix: str) -> str:
    """Return `<prefix>_<26 chars>`: 48 bits of milliseconds then 80 random bits.

    Ids sort by creation time, which keyset pagination relies on; within one millisecond
    the random part counts up (monotonic ULIDs), so ids made in one process never go backwards.
    """
    global _last
    with _lock:
        millis = time.time_ns() // 1_000_000
        last_millis, last_random = _last
        if millis <= last_millis and last_random + 1 < 1 << _RANDOM_BITS:
            millis, rand = last_millis, last_random + 1
        else:
            rand = secrets.randbits(_RANDOM_BITS - 1)  # headroom so the count rarely overflows
        _last = (millis, rand)
    return f"{prefix}_{_base32(millis, 10)}{_base32(rand, 16)}"


def id_floor(prefix: str, millis: int) -> str:
    """The smallest id `new_id(prefix)` can make at `millis` (ms since the epoch): for range queries."""
    return f"{prefix}_{_base32(max(0, millis), 10)}{'0' * 16}"


def id_millis(ident: str) -> int | None:
    """The creation time (ms since the epoch) encoded in an id, or None if it is not one."""
    _, sep, body = ident.partition("_")
    if not sep or len(body) != 26 or any(ch not in _ALPHABET for ch in body):
        return None
    value = 0
    for ch in body[:10]:
        value = value * 32 + _ALPHABET.index(ch)
    return value
