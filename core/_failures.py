"""Errors as recorded in the log, and rebuilt from it.

A recorded error is ``{"type", "message", "traceback"}`` (and ``"attrs"``: the
exception's public attributes that are plain scalars); ``type`` is the class's
qualified name (no ``builtins.`` prefix). It is rebuilt as the
original class when that is a builtin or its module is already imported in
this process, else as :class:`StepFailed`; nothing is ever imported.
"""

from __future__ import annotations

import builtins
import os
import sys
import traceback
from types import TracebackType
from typing import Any

from ._errors import StepFailed

__all__ = ["describe_error", "rebuild_error", "type_name"]


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


def describe_error(exc: BaseException, *, with_traceback: bool = True) -> dict[str, Any]:
    text = ""
    if with_traceback:
        text = "".join(traceback.format_exception(type(exc), exc, _user_frames(exc.__traceback__)))
    record: dict[str, Any] = {"type": type_name(type(exc)), "message": str(exc), "traceback": text}
    attrs = {
        k: v
        for k, v in getattr(exc, "__dict__", {}).items()
        if not k.startswith("_") and (v is None or type(v) in (str, int, float, bool))
    }
    if attrs:  # e.g. a status code: given back to the rebuilt exception
        record["attrs"] = attrs
    return record


def _resolve(name: str) -> type | None:
    if "." not in name:
        found = getattr(builtins, name, None)
        return found if isinstance(found, type) else None
    parts = name.split(".")
    for split in range(len(parts) - 1, 0, -1):
        module = sys.modules.get(".".join(parts[:split]))
        if module is None:
            continue
        obj: Any = module
        for attr in parts[split:]:
            obj = getattr(obj, attr, None)
            if obj is None:
                return None
        return obj if isinstance(obj, type) else None
    return None


def rebuild_error(error: dict[str, Any], *, context: str = "") -> BaseException:
    """The exception a workflow sees at its ``await`` for a recorded error."""
    name = str(error.get("type", "Exception"))
    message = str(error.get("message", ""))
    cls = _resolve(name)
    exc: BaseException | None = None
    if cls is not None and issubclass(cls, Exception):
        try:
            if cls.__module__ == "builtins":
                exc = cls(message)
            else:
                # Not through __init__, which may take other arguments or reword the
                # message: the recorded message and attributes, as they were.
                exc = cls.__new__(cls)
                BaseException.__init__(exc, message)
                attrs = error.get("attrs")
                if isinstance(attrs, dict):
                    exc.__dict__.update(attrs)
        except Exception:  # a class that cannot be made this way: fall back below
            exc = None
    if exc is None:
        exc = StepFailed(name, message)
    remote = error.get("traceback")
    if remote:
        exc.add_note(f"{context or 'recorded'} traceback:\n{str(remote).rstrip()}")
    return exc
