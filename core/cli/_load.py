"""Finding the user's code and arguments: ``MODULE``, ``MODULE:FUNCTION``, JSON values."""

from __future__ import annotations

import importlib
import json
import math
import os
import sys
from types import ModuleType
from typing import Any

from worldflow._definitions import Workflow

from ._common import EXIT_FAILED, EXIT_USAGE, CliError, clip

__all__ = ["import_module", "load_workflow", "parse_json"]


def import_module(name: str) -> ModuleType:
    """Import ``name`` as ``python -m`` would: the current directory comes first on sys.path."""
    cwd = os.getcwd()
    if not sys.path or sys.path[0] != cwd:
        sys.path.insert(0, cwd)
    if name.endswith(".py") or os.sep in name or "/" in name:
        dotted = name.removesuffix(".py").replace(os.sep, ".").replace("/", ".")
        raise CliError(
            f"{name!r} looks like a file path; name the module as Python imports it, "
            f"e.g. {dotted!r}",
            EXIT_USAGE,
        )
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (name == exc.name or name.startswith(exc.name + ".")):
            raise CliError(
                f"no module named {name!r} (looked in {cwd} and on sys.path)", EXIT_FAILED
            ) from None
        raise CliError(
            f"error while importing {name!r}: {type(exc).__name__}: {exc}", EXIT_FAILED
        ) from None
    except Exception as exc:  # the user's module may raise anything at import time
        raise CliError(
            f"error while importing {name!r}: {type(exc).__name__}: {exc}", EXIT_FAILED
        ) from None


def load_workflow(target: str) -> Workflow[Any, Any]:
    """The ``@wf.workflow`` named by ``MODULE:FUNCTION`` (FUNCTION may be dotted)."""
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise CliError(
            f"expected MODULE:FUNCTION (e.g. shop.flows:checkout), got {target!r}", EXIT_USAGE
        )
    module = import_module(module_name)
    obj: Any = module
    for part in attr.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            found = sorted(k for k, v in vars(module).items() if isinstance(v, Workflow))
            hint = f"; workflows there: {', '.join(found)}" if found else ""
            raise CliError(f"module {module_name!r} has no {attr!r}{hint}", EXIT_FAILED)
    if not isinstance(obj, Workflow):
        raise CliError(
            f"{target} is not a workflow (decorate an async def with @wf.workflow)", EXIT_USAGE
        )
    return obj


class _Unusable(ValueError):
    """JSON that parses but that no World can store (raised from the parser's hooks)."""


def _constant(name: str) -> Any:
    raise _Unusable(f"{name} is not JSON (a stored value must be a finite number)")


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _Unusable(f"the number {clip(text)} is too large for a float")
    return value


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:  # past sys.get_int_max_str_digits()
        raise _Unusable(f"a whole number of {len(text)} digits is too long") from None


def _lone_surrogate(value: Any) -> str | None:
    """A string in ``value`` (a parsed JSON tree) that is not valid Unicode, if any.

    JSON's ``"\\ud800"`` escape parses into a lone surrogate, which no World
    can store. The walk is iterative: the tree may be as deep as the parser allows.
    """
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack += item.keys()
            stack += item.values()
        elif isinstance(item, list):
            stack += item
        elif isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return item
    return None


def parse_json(text: str, what: str) -> Any:
    """``text`` as a JSON value a World can store, or a usage error naming ``what``."""
    try:
        value = json.loads(text, parse_constant=_constant, parse_float=_float, parse_int=_int)
    except json.JSONDecodeError as exc:
        hint = ""
        if text and text[0] not in "{[\"'-0123456789":
            hint = f"; a string must be quoted for JSON, e.g. {clip(json.dumps(text))}"
        raise CliError(
            f"{what} {clip(text)} is not valid JSON ({exc.msg} at column {exc.colno}){hint}",
            EXIT_USAGE,
        ) from None
    except _Unusable as exc:
        raise CliError(f"{what} {clip(text)} cannot be used: {exc}", EXIT_USAGE) from None
    except RecursionError:
        raise CliError(f"{what} {clip(text)} is nested too deeply", EXIT_USAGE) from None
    bad = _lone_surrogate(value)
    if bad is not None:
        raise CliError(
            f"{what} holds the string {clip(bad)}, which is not valid Unicode (a lone surrogate)",
            EXIT_USAGE,
        )
    return value
