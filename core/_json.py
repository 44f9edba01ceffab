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
from collections.abc import Callable
from typing import Any

from ._errors import CorruptLogError

__all__ = ["dumps", "loads"]

_encoder = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)

# What JSON must escape in a str (ensure_ascii=False): the quote, the backslash and
# the control characters; anything else is written as it is.
_SPECIAL = ('"', "\\", *map(chr, range(32)))
#: Shorter strings go straight to the C escaper: a scan would cost more than it saves.
LONG = 512


class _Escaper(dict[str, str]):
    """The str escaper of stored JSON: ``json.encoder.encode_basestring``, except that a
    long ASCII string with nothing to escape is only quoted.

    CPython's escaper costs about 30 instructions a character (callgrind, 3.11): a
    10 KB step result, written in two events (its output, and the input of the step
    it is passed to), cost more than the rest of the step. Looking for the 34
    characters to escape is a ``memchr`` each in an ASCII string, about 5 a
    character in all. Other strings (non-ASCII: their search is no faster) are
    escaped as before; the text is the same either way (tests/test_codec.py).

    The C encoder calls a Python escaper for every string, keys included, which
    would cost a no-op step more than this saves it: so the escaper is this
    dict's ``__getitem__``, a lookup in C for the strings that come back (event
    fields, step names, this worker's id), and ``__missing__`` only for the others.
    Only short strings are remembered, and at most ``MEMO`` of them.
    """

    def __missing__(self, text: str) -> str:
        if len(text) < LONG or not text.isascii() or any(map(text.__contains__, _SPECIAL)):
            escaped: str = _escape(text)
        else:
            escaped = f'"{text}"'
        if len(text) <= 40 and len(self) < MEMO:
            self[text] = escaped
        return escaped


_escape: Callable[[str], str] = json.encoder.encode_basestring
#: At most this many strings (of up to 40 characters) are remembered, escaped.
MEMO = 2_000
_escaper = _Escaper()


def _make_dumps() -> Callable[[Any], str]:
    """``_encoder.encode``, reusing one C encoder instead of building one per call.

    ``JSONEncoder.encode`` builds a C encoder (and a markers dict) on every call:
    about a third of the time for the small dicts of a step's events, three of
    which every step writes. The C encoder is undocumented, so it is used only if
    it is there and agrees with ``JSONEncoder`` on a probe. It keeps no markers
    (shared between threads they would be wrong): a reference cycle, which no
    codec tree has, raises RecursionError rather than ValueError. Its strings
    are escaped by :class:`_Escaper`.
    """
    slow = _encoder.encode
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:
        return slow
    try:
        c_encode = make(
            None,
            _encoder.default,
            _escaper.__getitem__,
            None,
            ":",
            ",",
            False,
            False,
            False,
        )
        long = "x\x7f" * LONG
        probe: dict[str, Any] = {
            "a": [1, -2.5e-300, None, True, 'é\n"\x7f', {}, long, long + "\n", long + "é"],
            "b": [],
        }
        if "".join(c_encode(probe, 0)) != slow(probe):
            return slow
    except Exception:
        return slow

    def dumps(value: Any) -> str:
        if type(value) is str:  # what JSONEncoder.encode does for a bare str
            return slow(value)
        return "".join(c_encode(value, 0))

    return dumps


#: Compact, UTF-8 (not ASCII-escaped), no NaN: the text every World stores.
dumps = _make_dumps()


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
