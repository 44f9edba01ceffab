"""Decoding the codec's trees, and showing them to people (see ``_codec``).

A log is data written by other processes, other versions, or someone with
write access to the store, so everything here treats it as hostile:

- **Nothing is imported.** Classes are looked up in the namespaces of modules
  already in ``sys.modules`` (never through ``getattr``, which can reach a
  module's lazy ``__getattr__`` and import), and time zones only among those
  that load without importing (:func:`_zone`).
- **Only worldflow's errors come out**: :class:`CorruptLogError` for data that
  is not a valid tree, :class:`SerializationError` for a valid one that cannot
  be rebuilt here (its class is not imported, or its code refused the value).
- **Bounded work**: containers nest at most :data:`MAX_DEPTH` deep (checked as
  the tree is walked, not left to ``RecursionError``, which depends on how deep
  the caller's stack already is), and error messages show values abridged.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import inspect
import json
import os
import re
import reprlib
import sys
import weakref
import zoneinfo
from collections.abc import Callable
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal, InvalidOperation
from enum import Enum
from types import ModuleType
from typing import Any, Literal
from uuid import UUID
from zoneinfo import ZoneInfo

from . import _types
from ._errors import CorruptLogError, SerializationError

__all__ = [
    "MAX_DEPTH",
    "UnknownClasses",
    "decode",
    "find_class",
    "loads",
    "parse_json",
    "remember_zone",
    "to_display",
]

UnknownClasses = Literal["error", "dict"]

MAX_DEPTH = 100
"""How deep containers may nest in a stored value.

The encoder refuses a value with a container (list, dict, tuple, set,
dataclass, ...) nested deeper than this; the decoder refuses a tree with lists
or dicts nested more than one level deeper (a tagged scalar, such as a big
int, may sit inside the deepest container). At most ~4 Python frames per level,
this stays well inside the default recursion limit wherever it is called from.
"""

_NOTHING = object()

_canonical = json.JSONEncoder(
    separators=(",", ":"),
    ensure_ascii=False,
    allow_nan=False,
    check_circular=False,
    sort_keys=True,
).encode


def _type_name(cls: type) -> str:
    module = cls.__module__
    return cls.__qualname__ if module == "builtins" else f"{module}.{cls.__qualname__}"


_reprs = reprlib.Repr()
_reprs.maxstring = _reprs.maxother = 80
_reprs.maxlong = 40
_reprs.maxlevel = 3


def _short(value: object) -> str:
    """``repr(value)`` abridged: a hostile value may be huge or deeply nested."""
    try:
        return _reprs.repr(value)
    except Exception:  # e.g. an int past the 4300-digit str() limit
        return f"<{_type_name(type(value))}>"


# ----------------------------------------------------------------------- JSON


def _reject_constant(name: str) -> Any:
    raise CorruptLogError(f"invalid JSON: {name} is not allowed in an event log")


def _finite_float(text: str) -> float:
    # Python reads 1e400 as inf, though JSON has no infinity and the encoder
    # never writes one (it tags non-finite floats).
    f = float(text)
    if f - f == 0.0:
        return f
    raise CorruptLogError(f"invalid JSON: the number {_short(text)} does not fit a float")


_json_decode = json.JSONDecoder(parse_constant=_reject_constant, parse_float=_finite_float).decode


def parse_json(text: str | bytes) -> Any:
    """Parse stored JSON text (UTF-8 if bytes), refusing what JSON cannot say.

    Unlike ``json.loads`` it refuses ``NaN``, ``Infinity`` and numbers that
    overflow a float (``1e400``), none of which worldflow ever writes; any
    failure is a :class:`CorruptLogError`. Worlds should read stored events,
    values and errors with it.
    """
    try:
        if not isinstance(text, str):
            text = bytes(text).decode("utf-8")
        return _json_decode(text)
    except CorruptLogError:
        raise
    except (ValueError, TypeError, RecursionError) as exc:
        raise CorruptLogError(f"invalid JSON in event log: {exc}") from exc


# ------------------------------------------------------ classes, never imported

# The instance dicts of modules and classes, read through their base types'
# descriptors: `vars(x)` or `x.attr` would go through a module subclass's
# __getattribute__ (importlib's lazy modules import on any access) or a
# module's __getattr__ (concurrent.futures imports multiprocessing there).
_module_namespace: Callable[[ModuleType], dict[str, Any]] = vars(ModuleType)["__dict__"].__get__
_class_namespace: Callable[[type], Any] = vars(type)["__dict__"].__get__


def _is_class(obj: object) -> bool:
    # Not isinstance(obj, type): for a non-class it falls back to reading
    # obj.__class__, which runs the object's own attribute hooks.
    return issubclass(type(obj), type)


def find_class(module_name: str, qualname: str) -> tuple[type | None, str]:
    """The class ``module_name:qualname``, found without importing or running code.

    Only modules already in ``sys.modules`` are searched, and only what they
    define: a name that a module's ``__getattr__`` would produce (often by
    importing) is not found. Returns ``(cls, "")``, or ``(None, why)``.
    """
    module = sys.modules.get(module_name)
    if module is None:
        return None, (
            f"its module {module_name!r} is not imported in this process; import it "
            "before reading this value (worldflow never imports modules while decoding)"
        )
    if not issubclass(type(module), ModuleType):  # sys.modules may hold any object
        return None, f"sys.modules[{module_name!r}] is not a module"
    namespace: Any = _module_namespace(module)
    obj: Any = None
    for part in qualname.split("."):
        obj = namespace.get(part, _NOTHING) if namespace is not None else _NOTHING
        if obj is _NOTHING:
            lazy = "__getattr__" in _module_namespace(module)
            return None, f"module {module_name!r} has no attribute {qualname!r}" + (
                " (worldflow does not call its __getattr__, which may import; import "
                "the module that defines the class before reading this value)"
                if lazy
                else ""
            )
        namespace = _class_namespace(obj) if _is_class(obj) else None
    if not _is_class(obj):
        return None, f"{module_name}.{qualname} is not a class"
    return obj, ""


# ------------------------------------------------------ time zones, no imports

_ZONE_KEY = re.compile(r"[A-Za-z0-9_+\-]+(?:/[A-Za-z0-9_+\-]+)*")
_zones: dict[str, ZoneInfo] = {}


def remember_zone(zone: ZoneInfo) -> None:
    """Note a zone this process used (the encoder does), so reading it back needs no lookup."""
    if zone.key is not None:
        _zones.setdefault(zone.key, zone)


def _zone(key: object) -> ZoneInfo:
    """The zone named ``key``, if it is available without importing anything.

    That is a zone this process has already encoded, or one in the system's
    time zone database (``zoneinfo.TZPATH``), which ``ZoneInfo`` reads as a
    file. A zone only the ``tzdata`` package has is refused: ``ZoneInfo``
    would import ``importlib.resources`` and tzdata's packages to read it.
    Where there is no system database (Windows, slim images), point
    ``PYTHONTZPATH`` at tzdata's ``zoneinfo`` folder.
    """
    if type(key) is not str:
        raise _Corrupt(f"time zone key must be a str, not {_short(key)}")
    zone = _zones.get(key)
    if zone is not None:
        return zone
    if len(key) > 255 or not _ZONE_KEY.fullmatch(key):
        raise _Corrupt(f"{_short(key)} is not a time zone key")
    if not any(os.path.isfile(os.path.join(base, key)) for base in zoneinfo.TZPATH):
        raise _Corrupt(
            f"time zone {key!r} is not in this system's time zone database "
            f"(searched {', '.join(zoneinfo.TZPATH) or 'nothing: TZPATH is empty'}); "
            "worldflow does not load zones from the tzdata package while reading a log, "
            "since that imports modules: install the system tz database (tzdata) or set "
            "PYTHONTZPATH to the tzdata package's zoneinfo folder"
        )
    try:
        zone = ZoneInfo(key)
    except (ValueError, OSError) as exc:  # e.g. a file there that is not a zone
        raise _Corrupt(f"time zone {key!r} cannot be loaded: {exc}") from exc
    _zones[key] = zone
    return zone


# --------------------------------------------------------------------- decode


class _Corrupt(Exception):
    """Internal: a malformed tree; the path is collected while unwinding."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
        self.path: list[str] = []


def _too_deep() -> _Corrupt:
    return _Corrupt(f"containers are nested more than {MAX_DEPTH} levels deep")


def _corrupt_error(exc: _Corrupt) -> CorruptLogError:
    path = "".join(reversed(exc.path))
    where = f" at {path[:200]}{'...' if len(path) > 200 else ''}" if path else ""
    return CorruptLogError(f"malformed encoded value{where}: {exc.message}")


def decode(tree: Any, *, unknown_classes: UnknownClasses = "error") -> Any:
    """Rebuild the value that :func:`encode` turned into ``tree``.

    Classes are looked up only among already imported modules. When one
    cannot be found (or rebuilt), ``unknown_classes="error"`` raises
    :class:`SerializationError`; ``"dict"`` returns
    ``{"__class__": "module.Qualname", **fields}`` instead (an enum member
    gives ``{"__class__": ..., "value": ...}``). A malformed tree (including
    one nested deeper than :data:`MAX_DEPTH` or holding a non-finite float
    untagged) raises :class:`CorruptLogError`. Nothing else is raised, and
    nothing is imported. The result shares no list or dict with ``tree``.
    """
    if unknown_classes not in ("error", "dict"):
        raise ValueError(f"unknown_classes must be 'error' or 'dict', not {unknown_classes!r}")
    try:
        return _dec(tree, unknown_classes == "dict", 0)
    except _Corrupt as exc:
        raise _corrupt_error(exc) from exc.__cause__
    except RecursionError:  # within MAX_DEPTH, only if the caller's stack is nearly full
        raise CorruptLogError(
            "malformed encoded value: nested too deeply for the stack left"
        ) from None


def loads(text: str | bytes, *, unknown_classes: UnknownClasses = "error") -> Any:
    """Parse JSON text written by :func:`dumps` and decode it (see :func:`parse_json`)."""
    return decode(parse_json(text), unknown_classes=unknown_classes)


def _dec(t: Any, lenient: bool, depth: int) -> Any:
    tt = type(t)
    if tt is str or tt is int or tt is bool or t is None:
        return t
    if tt is float:
        if t - t == 0.0:
            return t
        raise _Corrupt(f"the float {t!r} is stored untagged (the encoder tags non-finite floats)")
    if depth > MAX_DEPTH:
        raise _too_deep()
    if tt is list:
        return _dec_list(t, lenient, depth + 1)
    if tt is dict:
        if "$t" in t:
            return _dec_tagged(t, lenient, depth + 1)
        return _dec_dict(t, lenient, depth + 1)
    raise _Corrupt(f"unexpected {_type_name(tt)} in an encoded tree")


# The loops below inline the common scalars (finite floats included: x - x is
# 0.0 exactly for those) and leave everything else to _dec.


def _dec_list(t: list[Any], lenient: bool, depth: int) -> Any:
    out: list[Any] = []
    try:
        for x in t:
            tx = type(x)
            if tx is str or tx is int or x is None or tx is bool or (tx is float and x - x == 0.0):
                out.append(x)
            else:
                out.append(_dec(x, lenient, depth))
    except _Corrupt as exc:
        exc.path.append(f"[{len(out)}]")
        raise
    return out


def _dec_dict(t: dict[Any, Any], lenient: bool, depth: int) -> Any:
    out: dict[str, Any] = {}
    k: Any = None
    try:
        for k, x in t.items():
            if type(k) is not str:
                raise _Corrupt(f"dict key {_short(k)} is not a str")
            tx = type(x)
            if tx is str or tx is int or x is None or tx is bool or (tx is float and x - x == 0.0):
                out[k] = x
            else:
                out[k] = _dec(x, lenient, depth)
    except _Corrupt as exc:
        exc.path.append(f"[{_short(k)}]")
        raise
    return out


def _dec_tagged(t: dict[str, Any], lenient: bool, depth: int) -> Any:
    tag = t["$t"]
    decoder = _DECODERS.get(tag) if type(tag) is str else None
    if decoder is None:
        raise _Corrupt(f"unknown type tag {_short(tag)}")
    if "v" not in t:
        raise _Corrupt(f"{tag!r} value has no 'v'")
    try:
        return decoder(t, lenient, depth)
    except (_Corrupt, SerializationError):
        raise
    except (ValueError, TypeError, ArithmeticError, binascii.Error) as exc:
        raise _Corrupt(f"bad {tag!r} value {_short(t['v'])}: {exc}") from exc


def _expect(t: dict[str, Any], kind: type, key: str = "v") -> Any:
    v = t.get(key)
    if type(v) is not kind:
        raise _Corrupt(f"{t['$t']!r} value needs {key!r} to be a {kind.__name__}, not {_short(v)}")
    return v


def _dec_items(t: dict[str, Any], lenient: bool, depth: int) -> list[Any]:
    items = _expect(t, list)
    out: list[Any] = []
    try:
        for x in items:
            out.append(_dec(x, lenient, depth))
    except _Corrupt as exc:
        exc.path.append(f"[{len(out)}]")
        raise
    return out


def _dec_pairs(t: dict[str, Any], lenient: bool, depth: int) -> dict[Any, Any]:
    out = {}
    for i, pair in enumerate(_expect(t, list)):
        if type(pair) is not list or len(pair) != 2:
            raise _Corrupt(f"'dict' entry {i} must be a [key, value] pair, not {_short(pair)}")
        try:
            out[_dec(pair[0], lenient, depth)] = _dec(pair[1], lenient, depth)
        except _Corrupt as exc:
            exc.path.append(f".pairs[{i}]")
            raise
    return out


_HEX = re.compile(r"-?[0-9a-f]+")


def _dec_int(t: dict[str, Any], lenient: bool, depth: int) -> int:
    v = _expect(t, str)
    if not _HEX.fullmatch(v):  # int() would also take "0x1f", " 1f" and "1_f"
        raise _Corrupt(f"bad 'int' value {_short(v)}: it must be lowercase hex digits")
    return int(v, 16)


def _dec_float(t: dict[str, Any], lenient: bool, depth: int) -> float:
    v = _expect(t, str)
    if v not in ("nan", "inf", "-inf"):
        raise _Corrupt(f"'float' value must be 'nan', 'inf' or '-inf', not {_short(v)}")
    return float(v)


def _with_tz(value: Any, t: dict[str, Any]) -> Any:
    zone = t.get("zone")
    if zone is not None:
        value = value.replace(tzinfo=_zone(zone))
    name = t.get("tzname")
    if name is not None:
        offset = value.utcoffset()
        if type(name) is not str or offset is None:
            raise _Corrupt(f"bad 'tzname' {_short(name)} for {_short(t['v'])}")
        value = value.replace(tzinfo=timezone(offset, name))
    fold = t.get("fold")
    if fold is not None:
        if fold not in (0, 1) or type(fold) is not int:
            raise _Corrupt(f"'fold' must be 0 or 1, not {_short(fold)}")
        value = value.replace(fold=fold)
    return value


def _dec_timedelta(t: dict[str, Any], lenient: bool, depth: int) -> timedelta:
    v = _expect(t, list)
    if len(v) != 3 or any(type(x) is not int for x in v):
        raise _Corrupt(f"'timedelta' value must be [days, seconds, microseconds], not {_short(v)}")
    return timedelta(days=v[0], seconds=v[1], microseconds=v[2])


def _dec_decimal(t: dict[str, Any], lenient: bool, depth: int) -> Decimal:
    try:
        return Decimal(_expect(t, str))
    except InvalidOperation as exc:
        raise _Corrupt(f"bad 'decimal' value {_short(t['v'])}") from exc


def _dec_bytes(t: dict[str, Any], lenient: bool, depth: int) -> bytes:
    return base64.b64decode(_expect(t, str), validate=True)


def _resolve(t: dict[str, Any]) -> tuple[str, type | None, str]:
    """Find the class named by ``t["c"]`` without importing anything.

    Returns its dotted display name, the class (None if not found) and why not.
    """
    path = _expect(t, str, "c")
    module_name, sep, qualname = path.partition(":")
    if not sep or not module_name or not qualname:
        raise _Corrupt(f"class path {_short(path)} is not of the form 'module:qualname'")
    cls, why = find_class(module_name, qualname)
    return f"{module_name}.{qualname}", cls, why


def _cannot_rebuild(display: str, why: str) -> SerializationError:
    return SerializationError(f"cannot rebuild a {display} from the event log: {why}")


def _dec_fields(t: dict[str, Any], lenient: bool, depth: int) -> dict[str, Any]:
    raw = _expect(t, dict)
    out = {}
    for name, x in raw.items():
        try:
            out[name] = _dec(x, lenient, depth)
        except _Corrupt as exc:
            exc.path.append(f".{name}")
            raise
    return out


# The class-bearing tags decode their payload even when the class is missing
# (leniently then, so that the error names the outer class): a malformed value
# is corrupt whether or not its class is here.


def _dec_enum(t: dict[str, Any], lenient: bool, depth: int) -> Any:
    display, cls, why = _resolve(t)
    try:
        value = _dec(t["v"], lenient or cls is None, depth)
    except _Corrupt as exc:
        exc.path.append(".value")
        raise
    if cls is not None:
        if not issubclass(cls, Enum):
            why = f"{display} is not an Enum"
        else:
            try:
                return cls(value)
            except Exception:  # ValueError; a user's _missing_ may raise anything
                why = f"{display} has no member with value {_short(value)}"
    if lenient:
        return {"__class__": display, "value": value}
    raise _cannot_rebuild(display, why)


def _dec_dataclass(t: dict[str, Any], lenient: bool, depth: int) -> Any:
    display, cls, why = _resolve(t)
    values = _dec_fields(t, lenient or cls is None, depth)
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
        names = ", ".join(sorted(unknown))
        raise TypeError(
            f"it has no field {names[:200]}{'...' if len(names) > 200 else ''} (did the "
            "class change since the value was recorded?)"
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


def _pydantic_base() -> type | None:
    """pydantic's BaseModel if pydantic.main is loaded (``pydantic.BaseModel`` may import it)."""
    base, _ = find_class("pydantic.main", "BaseModel")
    return base


def _dec_model(t: dict[str, Any], lenient: bool, depth: int) -> Any:
    display, cls, why = _resolve(t)
    values = _dec_fields(t, lenient or cls is None, depth)
    if cls is not None:
        base = _pydantic_base()
        if base is None or not issubclass(cls, base):
            why = f"{display} is not a pydantic model"
        else:
            fields_set = t.get("set")
            if fields_set is not None and (
                type(fields_set) is not list or any(type(x) is not str for x in fields_set)
            ):
                raise _Corrupt(
                    f"'model' value needs 'set' to be a list of str, not {_short(fields_set)}"
                )
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


def _dec_custom(t: dict[str, Any], lenient: bool, depth: int) -> Any:
    name = _expect(t, str, "n")
    value = _dec(t["v"], lenient, depth)
    adapter = _types.by_name.get(name)
    if adapter is None:
        if lenient:
            return {"__type__": name, "value": value}
        raise SerializationError(
            f"cannot rebuild a {_short(name)}: no type is registered under that name in this "
            "process; import the module that calls wf.register_type() for it"
        )
    try:
        return adapter.decode(value)
    except Exception as exc:
        raise SerializationError(f"the decode= of type {name!r} failed: {exc!r}") from exc


_DECODERS: dict[str, Callable[[dict[str, Any], bool, int], Any]] = {
    "int": _dec_int,
    "float": _dec_float,
    "dict": _dec_pairs,
    "tuple": lambda t, lenient, depth: tuple(_dec_items(t, lenient, depth)),
    "set": lambda t, lenient, depth: set(_dec_items(t, lenient, depth)),
    "frozenset": lambda t, lenient, depth: frozenset(_dec_items(t, lenient, depth)),
    "datetime": lambda t, lenient, depth: _with_tz(datetime.fromisoformat(_expect(t, str)), t),
    "date": lambda t, lenient, depth: date.fromisoformat(_expect(t, str)),
    "time": lambda t, lenient, depth: _with_tz(time.fromisoformat(_expect(t, str)), t),
    "timedelta": _dec_timedelta,
    "decimal": _dec_decimal,
    "uuid": lambda t, lenient, depth: UUID(_expect(t, str)),
    "bytes": _dec_bytes,
    "bytearray": lambda t, lenient, depth: bytearray(_dec_bytes(t, lenient, depth)),
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
    with non-str keys dicts keyed by the key's JSON text, non-finite floats
    their ``repr()``, and enum members, dataclasses and models
    ``{"__class__": "module.Qualname", ...}``. The result is JSON without
    NaN. A malformed tree raises :class:`CorruptLogError`, and nothing else.
    """
    try:
        return _disp(tree, 0)
    except _Corrupt as exc:
        raise _corrupt_error(exc) from None
    except RecursionError:  # within MAX_DEPTH, only if the caller's stack is nearly full
        raise CorruptLogError(
            "malformed encoded value: nested too deeply for the stack left"
        ) from None


def _disp(t: Any, depth: int) -> Any:
    tt = type(t)
    if tt is str or tt is int or tt is bool or t is None:
        return t
    if tt is float:
        return t if t - t == 0.0 else repr(t)
    if depth > MAX_DEPTH:
        raise _too_deep()
    if tt is list:
        return _disp_list(t, depth + 1)
    if tt is not dict:
        raise _Corrupt(f"unexpected {_type_name(tt)} in an encoded tree")
    if "$t" not in t:
        return _disp_dict(t, depth + 1)
    tag = t["$t"]
    show = _DISPLAYS.get(tag) if type(tag) is str else None
    if show is None:
        raise _Corrupt(f"unknown type tag {_short(tag)}")
    if "v" not in t:
        raise _Corrupt(f"{tag!r} value has no 'v'")
    try:
        return show(t, depth + 1)
    except _Corrupt:
        raise
    except (ValueError, TypeError, ArithmeticError) as exc:
        raise _Corrupt(f"bad {tag!r} value {_short(t['v'])}: {exc}") from exc


def _disp_list(t: list[Any], depth: int) -> list[Any]:
    out: list[Any] = []
    try:
        for x in t:
            out.append(_disp(x, depth))
    except _Corrupt as exc:
        exc.path.append(f"[{len(out)}]")
        raise
    return out


def _disp_dict(t: dict[Any, Any], depth: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    k: Any = None
    try:
        for k, x in t.items():
            if type(k) is not str:
                raise _Corrupt(f"dict key {_short(k)} is not a str")
            out[k] = _disp(x, depth)
    except _Corrupt as exc:
        exc.path.append(f"[{_short(k)}]")
        raise
    return out


def _disp_pairs(t: dict[str, Any], depth: int) -> dict[str, Any]:
    out = {}
    for i, pair in enumerate(_expect(t, list)):
        if type(pair) is not list or len(pair) != 2:
            raise _Corrupt(f"'dict' entry {i} must be a [key, value] pair, not {_short(pair)}")
        try:
            k = _disp(pair[0], depth)
            out[k if type(k) is str else _canonical(k)] = _disp(pair[1], depth)
        except _Corrupt as exc:
            exc.path.append(f".pairs[{i}]")
            raise
    return out


def _disp_object(t: dict[str, Any], depth: int) -> dict[str, Any]:
    shown = {"__class__": _expect(t, str, "c").replace(":", ".")}
    if t["$t"] == "enum":
        shown["value"] = _disp(t["v"], depth)
    else:
        shown.update(_disp_dict(_expect(t, dict), depth))
    return shown


def _disp_int(t: dict[str, Any], depth: int) -> int | str:
    n = _dec_int(t, False, depth)
    # Past ~4000 digits str(int) fails (sys.int_info.default_max_str_digits).
    return n if n.bit_length() < 13000 else hex(n)


_DISPLAYS: dict[str, Callable[[dict[str, Any], int], Any]] = {
    "int": _disp_int,
    "dict": _disp_pairs,
    "tuple": lambda t, depth: _disp_list(_expect(t, list), depth),
    "set": lambda t, depth: _disp_list(_expect(t, list), depth),
    "frozenset": lambda t, depth: _disp_list(_expect(t, list), depth),
    "timedelta": lambda t, depth: str(_dec_timedelta(t, False, depth)),
    "enum": _disp_object,
    "dataclass": _disp_object,
    "model": _disp_object,
    "custom": lambda t, depth: {"__type__": _expect(t, str, "n"), "value": _disp(t["v"], depth)},
    "float": lambda t, depth: repr(_dec_float(t, False, depth)),
    # Already text: shown as stored.
    **dict.fromkeys(
        ("datetime", "date", "time", "decimal", "uuid", "bytes", "bytearray"),
        lambda t, depth: _expect(t, str),
    ),
}
