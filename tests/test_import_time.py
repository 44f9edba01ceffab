"""``import worldflow`` stays light: what only running or inspecting needs is loaded on use.

Timing lives in bench/bench_import.py; these tests pin *what* is imported, which
is what the time comes from, in fresh interpreters (this one has imported
everything already).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import worldflow as wf

# Modules a process that only defines workflows and steps has no use for at import:
# the event loop machinery (asyncio pulls in ssl, socket, subprocess, concurrent.futures),
# the stores, the display, tracing and CLI code, and the engine itself.
HEAVY = [
    "asyncio",
    "ssl",
    "socket",
    "sqlite3",
    "logging",
    "json",
    "tomllib",
    "http.server",
    "urllib.parse",
    "concurrent.futures",
    "opentelemetry",
    "rich",
    "click",
    "worldflow._api",
    "worldflow._runtime",
    "worldflow._executor",
    "worldflow._inspect",
    "worldflow._codec",
    "worldflow._otel",
    "worldflow._world",
    "worldflow.cli",
    "worldflow.web",
]


def _modules_after(code: str) -> set[str]:
    """The modules loaded once ``code`` ran in a fresh interpreter (json, used to
    report them, is imported only after they are listed)."""
    report = "\nimport sys\nnames = sorted(sys.modules)\nimport json\nprint(json.dumps(names))"
    return set(json.loads(_run(code + report)))


def _run(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return done.stdout.splitlines()[-1]


def test_import_worldflow_loads_none_of_the_heavy_modules() -> None:
    loaded = _modules_after("import worldflow")
    assert "worldflow" in loaded
    found = sorted(name for name in HEAVY if name in loaded)
    assert found == [], f"`import worldflow` imports {found}"


def test_the_probe_sees_heavy_modules_when_they_are_imported() -> None:
    # The test above would pass vacuously if the probe saw nothing.
    loaded = _modules_after("import worldflow\nimport worldflow._api")
    assert {"asyncio", "worldflow._runtime", "worldflow._codec"} <= loaded


def test_defining_steps_and_workflows_loads_no_event_loop() -> None:
    code = (
        "import worldflow as wf\n"
        "@wf.step\nasync def a(x: int) -> int:\n    return x\n"
        "@wf.workflow\nasync def w(x: int) -> int:\n    return await a(x)\n"
        "c = a(1)  # called outside a workflow: the plain function\n"
        "assert type(c).__name__ == 'coroutine'\nc.close()"
    )
    loaded = _modules_after(code)
    assert "asyncio" not in loaded
    assert "worldflow._api" not in loaded


@pytest.mark.parametrize("name", sorted(wf.__all__))
def test_every_public_name_resolves_to_its_definition(name: str) -> None:
    obj = getattr(wf, name)
    module = getattr(obj, "__module__", None)
    if module and module.startswith("worldflow._"):
        assert getattr(sys.modules[module], name) is obj


def test_lazy_names_resolve_in_a_fresh_process_and_are_listed() -> None:
    code = (
        "import worldflow as wf\n"
        "names = [n for n in wf.__all__ if n not in vars(wf)]\n"
        "assert names, 'nothing is lazy'\n"
        "assert all(n in dir(wf) for n in wf.__all__)\n"
        "objects = [getattr(wf, n) for n in names]\n"
        "assert all(n in vars(wf) for n in names)  # cached after the first access\n"
        "from worldflow import *\n"
        "print(len(names))\n"
    )
    assert int(_run(code)) > 10


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'strat'"):
        wf.strat  # type: ignore[attr-defined]  # noqa: B018


def test_the_engine_logs_through_a_null_handler() -> None:
    # The library leaves output to the user's logging setup: with none, warnings
    # from the engine are not printed through logging's last-resort handler.
    code = (
        "import logging\nimport worldflow._runtime\n"
        "print(any(isinstance(h, logging.NullHandler) "
        "for h in logging.getLogger('worldflow').handlers))"
    )
    assert _run(code) == "True"
