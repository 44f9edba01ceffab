"""Finding the user's code and arguments: ``MODULE``, ``MODULE:FUNCTION``, JSON values."""

from __future__ import annotations

import importlib
import json
import os
import sys
from types import ModuleType
from typing import Any

from worldflow._definitions import Workflow

from ._common import EXIT_FAILED, EXIT_USAGE, CliError

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


def parse_json(text: str, what: str) -> Any:
    """``text`` as JSON, or a usage error naming ``what`` and how to quote a string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        hint = ""
        if text and text[0] not in "{[\"'-0123456789":
            hint = f"; a string must be quoted for JSON, e.g. '{json.dumps(text)}'"
        raise CliError(
            f"{what} {text!r} is not valid JSON ({exc.msg} at column {exc.colno}){hint}",
            EXIT_USAGE,
        ) from None
