"""Strict JSON text for what Worlds store: one way to write it, one way to read it back.

Stored event data, run projections and messages are JSON text in every
World. Writing refuses NaN and infinities; reading refuses them too (also a
number too large for a float, which ``json`` would read as ``inf``) and
turns every failure, nesting too deep included, into a
:class:`~worldflow.CorruptLogError` that says where the text came from.
"""

from __future__ import annotations

import json
import math
from typing import Any

from ._errors import CorruptLogError

__all__ = ["dumps", "loads"]

#: Compact, UTF-8 (not ASCII-escaped), no NaN: the text every World stores.
dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode


def _constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed in stored JSON")


def _number(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"the number {text[:40]} is too large")
    return value


_decoder = json.JSONDecoder(parse_constant=_constant, parse_float=_number)


def loads(text: str | bytes, where: str) -> Any:
    """Parse stored JSON; a :class:`CorruptLogError` naming ``where`` if it cannot be."""
    try:
        if isinstance(text, bytes | bytearray):
            text = text.decode("utf-8")
        return _decoder.decode(text)
    except RecursionError:
        raise CorruptLogError(f"{where} is nested too deeply to read") from None
    except (ValueError, TypeError) as exc:
        raise CorruptLogError(f"{where} is not valid JSON: {exc}") from None
