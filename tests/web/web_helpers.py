"""Helpers of the web UI's tests: a local store holding runs made by real workflows.

Imported by name (conftest.py puts this folder on sys.path), like web_flows.
"""

from __future__ import annotations

import asyncio
import dataclasses
import importlib
import sys
import uuid
from pathlib import Path
from types import ModuleType

import pytest

import worldflow as wf
from worldflow.worlds.local import LocalWorld

HERE = Path(__file__).parent
XSS = "<script>alert('xss')</script><img src=x onerror=alert(1)>"


def flows() -> ModuleType:
    """tests/web/web_flows.py, imported by name as the worker subprocess imports it."""
    if str(HERE) not in sys.path:
        sys.path.insert(0, str(HERE))
    return importlib.import_module("web_flows")


@dataclasses.dataclass(frozen=True)
class Store:
    """A data dir with one run of each kind the UI must show."""

    path: Path
    retried: str  # completed after two failed attempts
    failed: str  # failed, its input and error carry an XSS attempt
    sleeping: str  # in a 1h sleep
    waiting: str  # waiting on the hook "approve:<id>"
    token: str
    others: tuple[str, ...]  # more completed web.order runs, for paging


def make_store(path: Path, *, extra: int = 6) -> Store:
    """Run real workflows on ``path`` until each run is where the tests want it."""
    f = flows()

    async def main() -> Store:
        async with wf.worker(LocalWorld(path, serve_webhooks=False)):
            retried = await wf.start(f.order, f"o-{uuid.uuid4().hex[:12]}", 2)  # unique per process
            failed = await wf.start(f.doomed, XSS)
            sleeping = await wf.start(f.nap, "n-1")
            waiting = await wf.start(f.approval, path.name)
            others = [await wf.start(f.order, f"x-{i}") for i in range(extra)]
            for run in (retried, *others):
                await run.result(timeout=20)
            with pytest.raises(wf.RunFailed):
                await failed.result(timeout=20)
            for _ in range(400):
                if (await sleeping.detail()).sleeping and (await waiting.detail()).hooks_waiting:
                    break
                await asyncio.sleep(0.025)
            else:
                raise AssertionError("the nap and approval runs did not reach their waits")
            return Store(
                path,
                retried.id,
                failed.id,
                sleeping.id,
                waiting.id,
                f"approve:{path.name}",
                tuple(r.id for r in others),
            )

    return asyncio.run(main())
