"""Errors as recorded in the log, and rebuilt from it.

A recorded error is ``{"type", "message", "traceback"}``, plus, when there
is something to keep:

- ``"args"``: the exception's ``args`` as a codec tree (a list), when they
  encode and are not just ``(message,)``;
- ``"attrs"``: its public attributes that are plain scalars: those in its
  ``__dict__`` (e.g. a status code) and the C-level ones of builtin bases that
  ``args`` may not carry (``OSError.filename``, ``ImportError.name`` ...);
- ``"exceptions"``: an exception group's members, each recorded the same way.

``type`` is the class's qualified name (no ``builtins.`` prefix). The error
is rebuilt as that class when it is a builtin or its module is already
imported in this process; nothing is ever imported. A builtin is rebuilt by
calling it with the recorded args (so ``KeyError("user-7")`` and a 5-argument
``UnicodeDecodeError`` come back as they were); another class without calling
its ``__init__``, which may take other arguments or reword the message: the
recorded args, message and attributes are set as they were. Logs written
before ``args`` was recorded rebuild a builtin from its message, as then.

These come back as :class:`StepFailed`, whatever their class:

- a class not found here, or one that cannot be made this way;
- ``BaseException`` subclasses that are not ``Exception`` (``SystemExit``,
  ``KeyboardInterrupt``, ``GeneratorExit``, a ``BaseExceptionGroup`` holding
  one): raised into workflow code they would act as if the worker were exiting;
- ``StopIteration``: an asyncio future refuses it, since raised in a coroutine
  it would silently end a generator.

What cannot be kept: attributes that are not scalars (``AttributeError.obj``
when it is an object, a ``bytes`` filename) and args that do not encode (an
exception carrying a socket), which fall back to the message (then
``str(rebuilt)`` may differ, e.g. ``KeyError(obj)`` shows its key quoted).
"""

from __future__ import annotations

import builtins
import contextlib
import os
import sys
import traceback
from types import GetSetDescriptorType, MemberDescriptorType, TracebackType
from typing import Any

from ._codec import decode, encode
from ._decode import find_class
from ._errors import StepFailed, WorldflowError

__all__ = ["describe_error", "rebuild_error", "type_name"]

# Exception groups nest: a log could nest them without end.
_MAX_GROUP_DEPTH = 8

_UNSET = object()


def type_name(cls: type) -> str:
    if cls.__module__ == "builtins":
        return cls.__qualname__
    return f"{cls.__module__}.{cls.__qualname__}"


_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


def _user_frames(tb: TracebackType | None) -> TracebackType | None:
    """Skip the engine's own frames at the top: a traceback starts in user code."""
    while tb is not None and tb.tb_next is not None:
        if not tb.tb_frame.f_code.co_filename.startswith(_PACKAGE_DIR):
            break
        tb = tb.tb_next
    return tb


# ------------------------------------------------------------------- describe


def describe_error(exc: BaseException, *, with_traceback: bool = True) -> dict[str, Any]:
    """The record of ``exc`` that the log keeps (JSON; see the module docstring)."""
    text = ""
    if with_traceback:
        text = "".join(traceback.format_exception(type(exc), exc, _user_frames(exc.__traceback__)))
    message = _text(exc)
    record: dict[str, Any] = {"type": type_name(type(exc)), "message": message, "traceback": text}
    args = _recorded_args(exc, message)
    if args is not None:
        record["args"] = args
    attrs = _public_attrs(exc)
    if attrs:
        record["attrs"] = attrs
    if isinstance(exc, BaseExceptionGroup):
        record["exceptions"] = [describe_error(e, with_traceback=False) for e in exc.exceptions]
    return record


def _text(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:  # a user __str__ that fails must not stop the error being recorded
        return f"<{type_name(type(exc))} whose str() failed>"


def _recorded_args(exc: BaseException, message: str) -> Any:
    """``exc.args`` as a codec tree, or None when the message says it all (or they do not encode)."""
    args = exc.args
    if isinstance(exc, BaseExceptionGroup):
        args = (exc.message,)  # the members are recorded under "exceptions"
    elif len(args) == 1 and type(args[0]) is str and args[0] == message:
        return None
    try:
        return encode(list(args), "the exception's args")
    except Exception:  # SerializationError, or a registered type's encode= failing
        return None


def _is_scalar(value: object) -> bool:
    return value is None or type(value) in (str, int, float, bool)


def _builtin_fields(cls: type) -> dict[str, Any]:
    """The C-level attributes of ``cls``'s builtin bases (``errno``, ``filename`` ...)."""
    fields: dict[str, Any] = {}
    for base in cls.__mro__:
        if base.__module__ != "builtins":
            continue
        for name, descriptor in vars(base).items():
            if (
                not name.startswith("_")
                and name not in ("args", "exceptions", "message")  # given back otherwise
                and isinstance(descriptor, MemberDescriptorType | GetSetDescriptorType)
            ):
                fields.setdefault(name, descriptor)
    return fields


def _public_attrs(exc: BaseException) -> dict[str, Any]:
    attrs = {
        k: v
        for k, v in getattr(exc, "__dict__", {}).items()
        if not k.startswith("_") and _is_scalar(v)
    }
    for name, descriptor in _builtin_fields(type(exc)).items():
        try:
            value = descriptor.__get__(exc, type(exc))
        except AttributeError:  # e.g. BlockingIOError.characters_written, when not set
            continue
        if _is_scalar(value) and name not in attrs:
            attrs[name] = value
    return attrs


# -------------------------------------------------------------------- rebuild


def _resolve(name: str) -> type | None:
    if "." not in name:
        found = vars(builtins).get(name)
        return found if isinstance(found, type) else None
    parts = name.split(".")
    for split in range(len(parts) - 1, 0, -1):
        module_name = ".".join(parts[:split])
        if module_name in sys.modules:
            cls, _ = find_class(module_name, ".".join(parts[split:]))
            return cls
    return None


def rebuild_error(error: Any, *, context: str = "") -> BaseException:
    """The exception a workflow sees at its ``await`` for a recorded error."""
    exc = _rebuild(error if isinstance(error, dict) else {"message": str(error)}, 0)
    remote = error.get("traceback") if isinstance(error, dict) else None
    if remote:
        exc.add_note(f"{context or 'recorded'} traceback:\n{str(remote).rstrip()}")
    return exc


def _rebuild(error: dict[str, Any], depth: int) -> Exception:
    name = str(error.get("type", "Exception"))
    message = str(error.get("message", ""))
    cls = _resolve(name)
    if cls is not None and issubclass(cls, Exception) and not issubclass(cls, StopIteration):
        args = _args(error, depth)
        try:
            if cls.__module__ == "builtins":
                return _rebuild_builtin(cls, args, message, error.get("attrs"))
            return _rebuild_other(cls, args, message, error.get("attrs"))
        except Exception:  # a class that cannot be made this way: fall back below
            pass
    return StepFailed(name, message)


def _args(error: dict[str, Any], depth: int) -> tuple[Any, ...] | None:
    """The recorded args, with a group's members rebuilt; None if not recorded or unreadable."""
    tree = error.get("args")
    if tree is None:
        return None
    try:
        args = decode(tree)
    except WorldflowError:  # a class not imported here, or a corrupt tree
        return None
    if type(args) is not list:
        return None
    members = error.get("exceptions")
    if members is not None:
        if type(members) is not list or depth >= _MAX_GROUP_DEPTH:
            return None
        args.append([_rebuild(m if isinstance(m, dict) else {}, depth + 1) for m in members])
    return tuple(args)


def _rebuild_builtin(
    cls: type[Exception], args: tuple[Any, ...] | None, message: str, attrs: Any
) -> Exception:
    exc: Exception | None = None
    if args is not None:
        try:
            exc = cls(*args)
        except Exception:
            exc = None
    if exc is None:
        exc = cls(message)
    _set_attrs(exc, attrs)
    return exc


def _rebuild_other(
    cls: type[Exception], args: tuple[Any, ...] | None, message: str, attrs: Any
) -> Exception:
    # Not through __init__: the recorded args, message and attributes, as they were.
    try:
        exc = cls.__new__(cls, *(args or ()))  # an exception group's __new__ needs its args
    except Exception:  # a __new__ of the user's own that wants other arguments
        exc = cls.__new__(cls)
    BaseException.__init__(exc, *(args if args is not None else (message,)))
    _set_attrs(exc, attrs)
    if args is not None and _text(exc) != message:  # its __str__ wants more than the args
        exc.args = (message,)
    return exc


def _set_attrs(exc: BaseException, attrs: Any) -> None:
    if not isinstance(attrs, dict):
        return
    fields = _builtin_fields(type(exc))
    for name, value in attrs.items():
        if type(name) is not str or name.startswith("_"):  # never recorded: a damaged log
            continue
        descriptor = fields.get(name)
        if descriptor is None:
            exc.__dict__[name] = value
            continue
        try:
            current = descriptor.__get__(exc, type(exc))
        except AttributeError:  # not set (BlockingIOError.characters_written)
            current = _UNSET
        # Only a change: setting None where the C field is unset (OSError.filename2)
        # would change what str() shows.
        if current is _UNSET or current != value:
            # Read-only, or a value it refuses: keep what construction gave.
            with contextlib.suppress(AttributeError, TypeError, ValueError):
                descriptor.__set__(exc, value)
