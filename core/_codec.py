"""The JSON codec for every value recorded in an event log (never pickle).

A value is encoded into a *tree* of plain JSON (dicts with str keys, lists,
str, int, float, bool, None). JSON scalars, lists and str-keyed dicts encode
as themselves; every other value becomes a tagged dict::

    {"$t": "tuple", "v": [1, 2]}
    {"$t": "datetime", "v": "2024-05-01T12:00:00+02:00", "zone": "Europe/Paris"}
    {"$t": "dataclass", "c": "shop.models:Order", "v": {"id": 7, "total": ...}}

Tags: ``int`` (beyond 64 bits, hex), ``float`` (nan/inf/-inf), ``dict``
(pairs: non-str keys, or a ``"$t"`` key), ``tuple``, ``set``, ``frozenset``,
``datetime``, ``date``, ``time``, ``timedelta``, ``decimal``, ``uuid``,
``bytes``, ``bytearray``, ``enum``, ``dataclass``, ``model`` (pydantic v2),
``custom`` (a type given to ``wf.register_type``, by its registered name).
Classes are named ``"module:qualname"`` and, when decoding, are looked up only
among modules already in ``sys.modules``: reading a log never imports code.
Containers nest at most ``MAX_DEPTH`` (100) deep, so that whatever is written
can be read back without exhausting the stack.

Stored JSON is read with :func:`parse_json`, which refuses the NaN, Infinity and
overflowing numbers (``1e400``) that ``json.loads`` would turn into floats.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import sys
from collections.abc import Callable
from datetime import date, datetime, time, timedelta, timezone, tzinfo
from decimal import Decimal
from enum import Enum
from typing import Any
from uuid import UUID
from zoneinfo import ZoneInfo

from . import _types
from ._decode import (
    MAX_DEPTH,
    _canonical,
    _type_name,
    decode,
    find_class,
    loads,
    parse_json,
    remember_zone,
    to_display,
)
from ._errors import SerializationError

__all__ = [
    "MAX_DEPTH",
    "decode",
    "dumps",
    "encode",
    "loads",
    "parse_json",
    "to_display",
]

_SUPPORTED = (
    "supported types are None, bool, int, float, str, list, dict, tuple, set, "
    "frozenset, bytes, bytearray, datetime, date, time, timedelta, Decimal, UUID, "
    "Enum members, dataclass instances and pydantic models"
)

# Ints outside int64 are tagged: most JSON readers (and Python's 4300-digit
# int/str limit) cannot cope with them as plain numbers. The hot loops below
# spell these bounds as literals (a constant loads faster than a global).
_IMIN = -0x8000000000000000
_IMAX = 0x7FFFFFFFFFFFFFFF

_NOTHING = object()


def _no_default(o: object) -> Any:
    raise TypeError(f"{_type_name(type(o))} reached the JSON layer unencoded")


def _make_json_encode() -> Callable[[Any], str]:
    # json.dumps(**options) builds an encoder per call, and JSONEncoder.encode
    # still builds a C encoder per call: about 0.7 µs of a 3 µs dumps.
    # The C encoder is undocumented, so it is used only if it is there and
    # agrees with JSONEncoder on a probe.
    slow: Callable[[Any], str] = json.JSONEncoder(
        separators=(",", ":"), ensure_ascii=False, allow_nan=False, check_circular=False
    ).encode
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:
        return slow
    try:
        c_encode = make(
            None, _no_default, json.encoder.encode_basestring, None, ":", ",", False, False, False
        )
        probe: dict[str, Any] = {"a": [1, -2.5e-300, None, True, 'é\n"', {}], "b": []}
        if "".join(c_encode(probe, 0)) != slow(probe):
            return slow
    except Exception:
        return slow

    def fast(tree: Any) -> str:
        return "".join(c_encode(tree, 0))

    return fast


_json_encode = _make_json_encode()


# --------------------------------------------------------------------- encode


class _Unsupported(Exception):
    """Internal: carries the offending value up while the path is collected."""

    def __init__(self, value: object, reason: str | None = None) -> None:
        super().__init__()
        self.value = value
        self.reason = reason
        self.path: list[str] = []  # innermost first


def encode(value: object, where: str = "value") -> Any:
    """Encode ``value`` into a JSON-compatible tree.

    The tree shares no list or dict with ``value`` (the engine keeps trees in
    events, so a later mutation of ``value`` must not reach the log; this
    costs about 0.3 µs per 10-item dict over reusing them). ``where`` names the
    value in error messages, e.g. ``"argument 1 of step 'shop.charge'"``.
    Raises :class:`SerializationError` for anything unsupported.
    """
    try:
        return _enc(value, 0)
    except _Unsupported as exc:
        raise SerializationError(_unsupported_message(exc, where)) from None
    except RecursionError:  # within MAX_DEPTH, only if the caller's stack is nearly full
        raise SerializationError(f"cannot serialize {where}: it is nested too deeply") from None


def dumps(value: object, where: str = "value") -> str:
    """Encode ``value`` and return compact JSON text."""
    return _json_encode(encode(value, where))


def _unsupported_message(exc: _Unsupported, where: str) -> str:
    name = _type_name(type(exc.value))
    path = "".join(reversed(exc.path))
    if len(path) > 200:  # e.g. a value nested too deeply
        path = path[:200] + "..."
    at = f"found a {name} at {path}" if path else f"it is a {name}"
    return f"cannot serialize {where}: {at}; {exc.reason or _SUPPORTED}"


_TOO_DEEP = f"values may nest containers at most {MAX_DEPTH} deep (is there a reference cycle?)"


def _enc(v: Any, depth: int) -> Any:
    """Encode ``v``, which ``depth`` containers enclose.

    Every encoder below takes the depth of its value's children, so that
    the one check here bounds nesting (and stops reference cycles) for a
    compare per container.
    """
    t = type(v)
    if t is str:
        if not v.isascii():
            _utf8(v)
        return v
    if v is None or t is bool:
        return v
    if t is int:
        return v if _IMIN <= v <= _IMAX else {"$t": "int", "v": format(v, "x")}
    if t is float:
        # x - x is 0.0 exactly for finite floats, nan otherwise.
        return v if v - v == 0.0 else {"$t": "float", "v": repr(v)}
    if depth >= MAX_DEPTH:
        raise _Unsupported(v, _TOO_DEEP)
    f = _ENCODERS.get(t)
    if f is not None:
        return f(v, depth + 1)
    return _enc_other(v, depth + 1)


def _utf8(text: str) -> bool:
    """True if ``text`` can be stored (written as UTF-8): a lone surrogate cannot.

    Only non-ASCII text gets here (``str.isascii`` is a flag read, so ASCII costs
    nothing more)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise _Unsupported(
            text, f"the text has a lone surrogate ({text[exc.start]!r}) that UTF-8 cannot hold"
        ) from None
    return True


def _enc_list(v: list[Any], depth: int) -> Any:
    out: list[Any] = []
    try:
        for x in v:
            t = type(x)
            if (
                (t is str and (x.isascii() or _utf8(x)))
                or (t is int and -0x8000000000000000 <= x <= 0x7FFFFFFFFFFFFFFF)
                or x is None
                or t is bool
                or (t is float and x - x == 0.0)
            ):
                out.append(x)
            else:
                out.append(_enc(x, depth))
    except _Unsupported as exc:
        exc.path.append(f"[{len(out)}]")
        raise
    return out


def _enc_dict(v: dict[Any, Any], depth: int) -> Any:
    if "$t" in v:
        return _enc_pairs(v, depth)
    out: dict[str, Any] = {}
    k: Any = None
    try:
        for k, x in v.items():
            if type(k) is not str:
                break
            if not k.isascii():
                _utf8(k)
            t = type(x)
            if (
                (t is str and (x.isascii() or _utf8(x)))
                or (t is int and -0x8000000000000000 <= x <= 0x7FFFFFFFFFFFFFFF)
                or x is None
                or t is bool
                or (t is float and x - x == 0.0)
            ):
                out[k] = x
            else:
                out[k] = _enc(x, depth)
        else:
            return out
    except _Unsupported as exc:
        exc.path.append(f"[{k!r}]")
        raise
    return _enc_pairs(v, depth)  # found a key that is not a str


def _enc_pairs(v: dict[Any, Any], depth: int) -> Any:
    pairs = []
    for k, x in v.items():
        try:
            ek = _enc(k, depth)
        except _Unsupported as exc:
            exc.path.append("<dict key>")
            raise
        try:
            pairs.append([ek, _enc(x, depth)])
        except _Unsupported as exc:
            exc.path.append(f"[{k!r}]")
            raise
    return {"$t": "dict", "v": pairs}


def _enc_items(v: tuple[Any, ...], depth: int) -> list[Any]:
    out: list[Any] = []
    try:
        for x in v:
            out.append(_enc(x, depth))
    except _Unsupported as exc:
        exc.path.append(f"[{len(out)}]")
        raise
    return out


def _enc_set(v: set[Any] | frozenset[Any], depth: int) -> Any:
    try:
        items = [_enc(x, depth) for x in v]
    except _Unsupported as exc:
        exc.path.append("<set element>")
        raise
    # Sorted by canonical text so the output never depends on PYTHONHASHSEED.
    if len(items) > 1:
        items.sort(key=_canonical)
    return {"$t": "set" if type(v) is set else "frozenset", "v": items}


def _add_tz(out: dict[str, Any], tz: tzinfo) -> None:
    if type(tz) is timezone:
        offset = tz.utcoffset(None)
        if tz.tzname(None) != timezone(offset).tzname(None):
            out["tzname"] = tz.tzname(None)
    elif type(tz) is ZoneInfo and tz.key is not None:
        out["zone"] = tz.key
        remember_zone(tz)  # so that this process reads it back without a lookup
    else:
        exc = _Unsupported(
            tz,
            "supported time zones are datetime.timezone and zoneinfo.ZoneInfo "
            "(created from a key, e.g. ZoneInfo('Europe/Paris'))",
        )
        exc.path.append(".tzinfo")
        raise exc


def _enc_datetime(v: datetime, depth: int) -> Any:
    out: dict[str, Any] = {"$t": "datetime", "v": v.isoformat()}
    if v.tzinfo is not None:
        _add_tz(out, v.tzinfo)
    if v.fold:
        out["fold"] = 1
    return out


def _enc_time(v: time, depth: int) -> Any:
    out: dict[str, Any] = {"$t": "time", "v": v.isoformat()}
    if v.tzinfo is not None:
        _add_tz(out, v.tzinfo)
    if v.fold:
        out["fold"] = 1
    return out


def _class_path(cls: type, value: object) -> str:
    if "<locals>" in cls.__qualname__:
        raise _Unsupported(
            value,
            f"{_type_name(cls)} is defined inside a function, so it could not be found "
            "again when the log is read back; define it at module level",
        )
    return f"{cls.__module__}:{cls.__qualname__}"


def _enc_other(v: Any, depth: int) -> Any:
    cls = type(v)
    if _types.by_type:
        adapter = next((_types.by_type[c] for c in cls.__mro__ if c in _types.by_type), None)
        if adapter is not None:
            try:
                plain = adapter.encode(v)
            except Exception as exc:
                reason = f"the encode= registered for {adapter.name!r} failed: {exc!r}"
                raise _Unsupported(v, reason) from exc
            try:
                return {"$t": "custom", "n": adapter.name, "v": _enc(plain, depth)}
            except _Unsupported as exc:
                exc.path.append(f" (as encoded for {adapter.name})")
                raise
    if isinstance(v, Enum):
        path = _class_path(cls, v)
        try:
            return {"$t": "enum", "c": path, "v": _enc(v.value, depth)}
        except _Unsupported as exc:
            exc.path.append(".value")
            raise
    if hasattr(cls, "__dataclass_fields__") and not isinstance(v, type):
        path = _class_path(cls, v)
        fields: dict[str, Any] = {}
        for f in dataclasses.fields(v):
            x = getattr(v, f.name, _NOTHING)
            if x is _NOTHING:  # an init=False field that was never set
                continue
            try:
                fields[f.name] = _enc(x, depth)
            except _Unsupported as exc:
                exc.path.append(f".{f.name}")
                raise
        return {"$t": "dataclass", "c": path, "v": fields}
    # Not `pydantic.BaseModel`: pydantic's module __getattr__ imports pydantic.main.
    if "pydantic.main" in sys.modules:
        base, _ = find_class("pydantic.main", "BaseModel")
        if base is not None and isinstance(v, base):
            return _enc_model(v, depth)
    raise _Unsupported(v)


def _enc_model(v: Any, depth: int) -> Any:
    cls = type(v)
    path = _class_path(cls, v)
    fields: dict[str, Any] = {}
    values = dict(v.__dict__)
    extra = getattr(v, "__pydantic_extra__", None)
    if extra:
        values.update(extra)
    for name, x in values.items():
        try:
            fields[name] = _enc(x, depth)
        except _Unsupported as exc:
            exc.path.append(f".{name}")
            raise
    out: dict[str, Any] = {"$t": "model", "c": path, "v": fields}
    fields_set = v.model_fields_set
    if fields_set != cls.model_fields.keys():
        # Kept so that model_dump(exclude_unset=True) behaves the same after a round trip.
        out["set"] = sorted(fields_set)
    return out


_ENCODERS: dict[type, Callable[[Any, int], Any]] = {
    list: _enc_list,
    dict: _enc_dict,
    tuple: lambda v, depth: {"$t": "tuple", "v": _enc_items(v, depth)},
    set: _enc_set,
    frozenset: _enc_set,
    datetime: _enc_datetime,
    date: lambda v, depth: {"$t": "date", "v": v.isoformat()},
    time: _enc_time,
    timedelta: lambda v, depth: {"$t": "timedelta", "v": [v.days, v.seconds, v.microseconds]},
    Decimal: lambda v, depth: {"$t": "decimal", "v": str(v)},
    UUID: lambda v, depth: {"$t": "uuid", "v": str(v)},
    bytes: lambda v, depth: {"$t": "bytes", "v": base64.b64encode(v).decode("ascii")},
    bytearray: lambda v, depth: {"$t": "bytearray", "v": base64.b64encode(v).decode("ascii")},
}
