"""Decoding the codec's trees, and showing them to people (see ``_codec``).

Classes are looked up only among modules already in ``sys.modules``:
reading a log never imports code.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import inspect
import json
import sys
import weakref
from collections.abc import Callable
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal, InvalidOperation
from enum import Enum
from typing import Any, Literal
from uuid import UUID
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from . import _types
from ._errors import CorruptLogError, SerializationError

__all__ = ["UnknownClasses", "decode", "loads", "to_display"]

UnknownClasses = Literal["error", "dict"]

_NOTHING = object()

_canonical = json.JSONEncoder(
    separators=(",", ":"),
    ensure_ascii=False,
    allow_nan=False,
    check_circular=False,
    sort_keys=True,
).encode


def _reject_constant(name: str) -> Any:
    raise CorruptLogError(f"invalid JSON: {name} is not allowed in an event log")


_json_decode = json.JSONDecoder(parse_constant=_reject_constant).decode


def _type_name(cls: type) -> str:
    module = cls.__module__
    return cls.__qualname__ if module == "builtins" else f"{module}.{cls.__qualname__}"


# --------------------------------------------------------------------- decode


class _Corrupt(Exception):
    """Internal: a malformed tree; the path is collected while unwinding."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
        self.path: list[str] = []


def decode(tree: Any, *, unknown_classes: UnknownClasses = "error") -> Any:
    """Rebuild the value that :func:`encode` turned into ``tree``.

    Classes are looked up only among already imported modules. When one
    cannot be found (or rebuilt), ``unknown_classes="error"`` raises
    :class:`SerializationError`; ``"dict"`` returns
    ``{"__class__": "module.Qualname", **fields}`` instead (an enum member
    gives ``{"__class__": ..., "value": ...}``). A malformed tree raises
    :class:`CorruptLogError`. The result shares no list or dict with ``tree``.
    """
    if unknown_classes not in ("error", "dict"):
        raise ValueError(f"unknown_classes must be 'error' or 'dict', not {unknown_classes!r}")
    try:
        return _dec(tree, unknown_classes == "dict")
    except _Corrupt as exc:
        path = "".join(reversed(exc.path))
        raise CorruptLogError(
            f"malformed encoded value{' at ' + path if path else ''}: {exc.message}"
        ) from exc.__cause__
    except RecursionError:
        raise CorruptLogError("malformed encoded value: nested too deeply") from None


def loads(text: str | bytes, *, unknown_classes: UnknownClasses = "error") -> Any:
    """Parse JSON text written by :func:`dumps` and decode it."""
    try:
        if not isinstance(text, str):
            text = bytes(text).decode("utf-8")
        tree = _json_decode(text)
    except CorruptLogError:
        raise
    except (ValueError, TypeError, RecursionError) as exc:
        raise CorruptLogError(f"invalid JSON in event log: {exc}") from exc
    return decode(tree, unknown_classes=unknown_classes)


def _dec(t: Any, lenient: bool) -> Any:
    tt = type(t)
    if tt is str or tt is int or tt is float or tt is bool or t is None:
        return t
    if tt is list:
        return _dec_list(t, lenient)
    if tt is dict:
        if "$t" in t:
            return _dec_tagged(t, lenient)
        return _dec_dict(t, lenient)
    raise _Corrupt(f"unexpected {_type_name(tt)} in an encoded tree")


def _dec_list(t: list[Any], lenient: bool) -> Any:
    out: list[Any] = []
    try:
        for x in t:
            tx = type(x)
            if tx is str or tx is int or x is None or tx is float or tx is bool:
                out.append(x)
            else:
                out.append(_dec(x, lenient))
    except _Corrupt as exc:
        exc.path.append(f"[{len(out)}]")
        raise
    return out


def _dec_dict(t: dict[Any, Any], lenient: bool) -> Any:
    out: dict[str, Any] = {}
    k: Any = None
    try:
        for k, x in t.items():
            if type(k) is not str:
                raise _Corrupt(f"dict key {k!r} is not a str")
            tx = type(x)
            if tx is str or tx is int or x is None or tx is float or tx is bool:
                out[k] = x
            else:
                out[k] = _dec(x, lenient)
    except _Corrupt as exc:
        exc.path.append(f"[{k!r}]")
        raise
    return out


def _dec_tagged(t: dict[str, Any], lenient: bool) -> Any:
    tag = t["$t"]
    decoder = _DECODERS.get(tag) if type(tag) is str else None
    if decoder is None:
        raise _Corrupt(f"unknown type tag {tag!r}")
    if "v" not in t:
        raise _Corrupt(f"{tag!r} value has no 'v'")
    try:
        return decoder(t, lenient)
    except (_Corrupt, SerializationError):
        raise
    except (ValueError, TypeError, ArithmeticError, binascii.Error) as exc:
        raise _Corrupt(f"bad {tag!r} value {t['v']!r}: {exc}") from exc


def _expect(t: dict[str, Any], kind: type, key: str = "v") -> Any:
    v = t.get(key)
    if type(v) is not kind:
        raise _Corrupt(f"{t['$t']!r} value needs {key!r} to be a {kind.__name__}, not {v!r}")
    return v


def _dec_items(t: dict[str, Any], lenient: bool) -> list[Any]:
    items = _expect(t, list)
    out: list[Any] = []
    try:
        for x in items:
            out.append(_dec(x, lenient))
    except _Corrupt as exc:
        exc.path.append(f"[{len(out)}]")
        raise
    return out


def _dec_pairs(t: dict[str, Any], lenient: bool) -> dict[Any, Any]:
    out = {}
    for i, pair in enumerate(_expect(t, list)):
        if type(pair) is not list or len(pair) != 2:
            raise _Corrupt(f"'dict' entry {i} must be a [key, value] pair, not {pair!r}")
        try:
            out[_dec(pair[0], lenient)] = _dec(pair[1], lenient)
        except _Corrupt as exc:
            exc.path.append(f".pairs[{i}]")
            raise
    return out


def _dec_int(t: dict[str, Any], lenient: bool) -> int:
    return int(_expect(t, str), 16)


def _dec_float(t: dict[str, Any], lenient: bool) -> float:
    v = _expect(t, str)
    if v not in ("nan", "inf", "-inf"):
        raise _Corrupt(f"'float' value must be 'nan', 'inf' or '-inf', not {v!r}")
    return float(v)


def _zone(key: object) -> ZoneInfo:
    if type(key) is not str:
        raise _Corrupt(f"time zone key must be a str, not {key!r}")
    try:
        return ZoneInfo(key)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise _Corrupt(
            f"time zone {key!r} is not available here (is the tzdata package installed?)"
        ) from exc


def _with_tz(value: Any, t: dict[str, Any]) -> Any:
    zone = t.get("zone")
    if zone is not None:
        value = value.replace(tzinfo=_zone(zone))
    name = t.get("tzname")
    if name is not None:
        offset = value.utcoffset()
        if type(name) is not str or offset is None:
            raise _Corrupt(f"bad 'tzname' {name!r} for {t['v']!r}")
        value = value.replace(tzinfo=timezone(offset, name))
    fold = t.get("fold")
    if fold is not None:
        if fold not in (0, 1) or type(fold) is not int:
            raise _Corrupt(f"'fold' must be 0 or 1, not {fold!r}")
        value = value.replace(fold=fold)
    return value


def _dec_timedelta(t: dict[str, Any], lenient: bool) -> timedelta:
    v = _expect(t, list)
    if len(v) != 3 or any(type(x) is not int for x in v):
        raise _Corrupt(f"'timedelta' value must be [days, seconds, microseconds], not {v!r}")
    return timedelta(days=v[0], seconds=v[1], microseconds=v[2])


def _dec_decimal(t: dict[str, Any], lenient: bool) -> Decimal:
    try:
        return Decimal(_expect(t, str))
    except InvalidOperation as exc:
        raise _Corrupt(f"bad 'decimal' value {t['v']!r}") from exc


def _dec_bytes(t: dict[str, Any], lenient: bool) -> bytes:
    return base64.b64decode(_expect(t, str), validate=True)


def _resolve(t: dict[str, Any]) -> tuple[str, type | None, str]:
    """Find the class named by ``t["c"]`` without importing anything.

    Returns its dotted display name, the class (None if not found) and why not.
    """
    path = _expect(t, str, "c")
    module_name, sep, qualname = path.partition(":")
    if not sep or not module_name or not qualname:
        raise _Corrupt(f"class path {path!r} is not of the form 'module:qualname'")
    display = f"{module_name}.{qualname}"
    obj: Any = sys.modules.get(module_name)
    if obj is None:
        return (
            display,
            None,
            f"its module {module_name!r} is not imported in this process; import it "
            "before reading this value (worldflow never imports modules while decoding)",
        )
    for part in qualname.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return display, None, f"module {module_name!r} has no attribute {qualname!r}"
    if not isinstance(obj, type):
        return display, None, f"{display} is not a class"
    return display, obj, ""


def _cannot_rebuild(display: str, why: str) -> SerializationError:
    return SerializationError(f"cannot rebuild a {display} from the event log: {why}")


def _dec_fields(t: dict[str, Any], lenient: bool) -> dict[str, Any]:
    raw = _expect(t, dict)
    out = {}
    for name, x in raw.items():
        try:
            out[name] = _dec(x, lenient)
        except _Corrupt as exc:
            exc.path.append(f".{name}")
            raise
    return out


def _dec_enum(t: dict[str, Any], lenient: bool) -> Any:
    display, cls, why = _resolve(t)
    if cls is None and not lenient:
        raise _cannot_rebuild(display, why)
    try:
        value = _dec(t["v"], lenient)
    except _Corrupt as exc:
        exc.path.append(".value")
        raise
    if cls is not None:
        if not issubclass(cls, Enum):
            why = f"{display} is not an Enum"
        else:
            try:
                return cls(value)
            except ValueError:
                why = f"{display} has no member with value {value!r}"
    if lenient:
        return {"__class__": display, "value": value}
    raise _cannot_rebuild(display, why)


def _dec_dataclass(t: dict[str, Any], lenient: bool) -> Any:
    _expect(t, dict)  # a malformed value is corrupt, whether or not its class is here
    display, cls, why = _resolve(t)
    if cls is None and not lenient:
        raise _cannot_rebuild(display, why)
    values = _dec_fields(t, lenient)
    if cls is not None:
        if not dataclasses.is_dataclass(cls):
            why = f"{display} is not a dataclass"
        else:
            try:
                return _build_dataclass(cls, values)
            except Exception as exc:  # user code (__init__, __post_init__) may raise anything
                why = f"{type(exc).__name__}: {exc}"
    if lenient:
        return {"__class__": display, **values}
    raise _cannot_rebuild(display, why)


_dataclass_init_ok: weakref.WeakKeyDictionary[type, bool] = weakref.WeakKeyDictionary()


def _can_use_init(cls: type, fields: dict[str, dataclasses.Field[Any]]) -> bool:
    """Whether ``cls(**init_fields)`` can build an instance (cached per class)."""
    ok = _dataclass_init_ok.get(cls)
    if ok is None:
        ok = True
        try:
            params = inspect.signature(cls).parameters.values()
        except (TypeError, ValueError):
            ok = False
        else:
            for p in params:
                if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                    continue
                f = fields.get(p.name)
                # A required parameter that is not an init field (an InitVar,
                # or a hand-written __init__) cannot be supplied from the log.
                if p.kind is p.POSITIONAL_ONLY or (
                    p.default is p.empty and (f is None or not f.init)
                ):
                    ok = False
                    break
        _dataclass_init_ok[cls] = ok
    return ok


def _build_dataclass(cls: type, values: dict[str, Any]) -> Any:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = values.keys() - fields.keys()
    if unknown:
        raise TypeError(
            f"it has no field {', '.join(sorted(unknown))} (did the class change "
            "since the value was recorded?)"
        )
    if _can_use_init(cls, fields):
        obj = cls(**{k: v for k, v in values.items() if fields[k].init})
    else:
        obj = object.__new__(cls)
    # Set every recorded field as it was: init=False fields, and any that
    # __post_init__ changed, must match the recorded state exactly.
    for name, v in values.items():
        if getattr(obj, name, _NOTHING) is not v:
            object.__setattr__(obj, name, v)
    return obj


def _dec_model(t: dict[str, Any], lenient: bool) -> Any:
    _expect(t, dict)  # a malformed value is corrupt, whether or not its class is here
    display, cls, why = _resolve(t)
    if cls is None and not lenient:
        raise _cannot_rebuild(display, why)
    values = _dec_fields(t, lenient)
    if cls is not None:
        pydantic = sys.modules.get("pydantic")
        if pydantic is None or not issubclass(cls, pydantic.BaseModel):
            why = f"{display} is not a pydantic model"
        else:
            fields_set = t.get("set")
            if fields_set is not None and (
                type(fields_set) is not list or any(type(x) is not str for x in fields_set)
            ):
                raise _Corrupt(f"'model' value needs 'set' to be a list of str, not {fields_set!r}")
            try:
                # model_construct: the values were valid when recorded and
                # re-running validators could change them.
                model: Any = cls
                return model.model_construct(
                    _fields_set=None if fields_set is None else set(fields_set),
                    **_by_alias(cls, values),
                )
            except Exception as exc:  # user code (model_post_init) may raise anything
                why = f"{type(exc).__name__}: {exc}"
    if lenient:
        return {"__class__": display, **values}
    raise _cannot_rebuild(display, why)


def _by_alias(cls: Any, values: dict[str, Any]) -> dict[str, Any]:
    # model_construct looks fields up by alias first, so key them that way.
    out = {}
    fields = cls.model_fields
    for name, v in values.items():
        f = fields.get(name)
        out[name if f is None or f.alias is None else f.alias] = v
    return out


def _dec_custom(t: dict[str, Any], lenient: bool) -> Any:
    name = _expect(t, str, "n")
    value = _dec(t["v"], lenient)
    adapter = _types.by_name.get(name)
    if adapter is None:
        if lenient:
            return {"__type__": name, "value": value}
        raise SerializationError(
            f"cannot rebuild a {name!r}: no type is registered under that name in this "
            "process; import the module that calls wf.register_type() for it"
        )
    try:
        return adapter.decode(value)
    except Exception as exc:
        raise SerializationError(f"the decode= of type {name!r} failed: {exc!r}") from exc


_DECODERS: dict[str, Callable[[dict[str, Any], bool], Any]] = {
    "int": _dec_int,
    "float": _dec_float,
    "dict": _dec_pairs,
    "tuple": lambda t, lenient: tuple(_dec_items(t, lenient)),
    "set": lambda t, lenient: set(_dec_items(t, lenient)),
    "frozenset": lambda t, lenient: frozenset(_dec_items(t, lenient)),
    "datetime": lambda t, lenient: _with_tz(datetime.fromisoformat(_expect(t, str)), t),
    "date": lambda t, lenient: date.fromisoformat(_expect(t, str)),
    "time": lambda t, lenient: _with_tz(time.fromisoformat(_expect(t, str)), t),
    "timedelta": _dec_timedelta,
    "decimal": _dec_decimal,
    "uuid": lambda t, lenient: UUID(_expect(t, str)),
    "bytes": _dec_bytes,
    "bytearray": lambda t, lenient: bytearray(_dec_bytes(t, lenient)),
    "enum": _dec_enum,
    "dataclass": _dec_dataclass,
    "model": _dec_model,
    "custom": _dec_custom,
}


# -------------------------------------------------------------------- display


def to_display(tree: Any) -> Any:
    """Turn an encoded tree into plain JSON for people, resolving no class.

    Datetimes, dates, times, Decimals and UUIDs become strings, bytes become
    base64 strings, timedeltas their ``str()``, tuples and sets lists, dicts
    with non-str keys dicts keyed by the key's JSON text, and enum members,
    dataclasses and models ``{"__class__": "module.Qualname", ...}``.
    """
    try:
        return _disp(tree)
    except _Corrupt as exc:
        path = "".join(reversed(exc.path))
        raise CorruptLogError(
            f"malformed encoded value{' at ' + path if path else ''}: {exc.message}"
        ) from None


def _disp(t: Any) -> Any:
    tt = type(t)
    if tt is str or tt is int or tt is bool or t is None:
        return t
    if tt is float:
        return t if t - t == 0.0 else repr(t)
    if tt is list:
        return [_disp(x) for x in t]
    if tt is not dict:
        raise _Corrupt(f"unexpected {_type_name(tt)} in an encoded tree")
    if "$t" not in t:
        return {k: _disp(x) for k, x in t.items()}
    tag = t["$t"]
    if type(tag) is not str or tag not in _DECODERS:
        raise _Corrupt(f"unknown type tag {tag!r}")
    v = t.get("v")
    if tag in ("tuple", "set", "frozenset"):
        return [_disp(x) for x in _expect(t, list)]
    if tag == "dict":
        out = {}
        for pair in _expect(t, list):
            if type(pair) is not list or len(pair) != 2:
                raise _Corrupt(f"'dict' entry must be a [key, value] pair, not {pair!r}")
            k = _disp(pair[0])
            out[k if type(k) is str else _canonical(k)] = _disp(pair[1])
        return out
    if tag in ("enum", "dataclass", "model"):
        display = _expect(t, str, "c").replace(":", ".")
        if tag == "enum":
            return {"__class__": display, "value": _disp(v)}
        return {"__class__": display, **{k: _disp(x) for k, x in _expect(t, dict).items()}}
    if tag == "custom":
        return {"__type__": _expect(t, str, "n"), "value": _disp(v)}
    if tag == "timedelta":
        return str(_dec_timedelta(t, False))
    if tag == "int":
        n = _dec_int(t, False)
        # Past ~4000 digits str(int) fails (sys.int_info.default_max_str_digits).
        return n if n.bit_length() < 13000 else hex(n)
    return _expect(t, str)  # float, date/time, decimal, uuid, bytes: already text
