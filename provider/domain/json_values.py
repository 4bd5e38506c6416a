"""Value types for models that read JSON documents, accepting what JSON Schema's types accept.

pydantic's lax `int` also takes `true` and `false` (as 1 and 0) and numeric strings ("60"), which
JSON Schema's `integer` refuses; its strict `int` refuses 60.0, which `integer` accepts. JsonInt
takes exactly the JSON numbers without a fraction. For booleans, pydantic's StrictBool is JSON's.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BeforeValidator


def _no_boolean_or_text(value: object) -> object:
    if isinstance(value, bool | str | bytes):
        raise ValueError("must be an integer")
    return value


JsonInt = Annotated[int, BeforeValidator(_no_boolean_or_text)]
