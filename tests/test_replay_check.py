"""``worldflow runs replay --check MODULE``: before deploying a change, replay the runs in
flight against the new code and name those it would break."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

V1 = """
import worldflow as wf

@wf.step
async def charge(order: str) -> str:
    return f"charged {order}"

@wf.step
async def ship(order: str) -> str:
    return f"shipped {order}"

@wf.workflow
async def checkout(order: str) -> str:
    charged = await charge(order)
    await wf.create_hook(token=f"confirm:{order}")
    return charged + ", " + await ship(order)
"""

# Compatible: only what comes after the point where runs wait changed.
V2_OK = V1.replace(
    'return charged + ", " + await ship(order)',
    'return (charged + " & " + await ship(order)).upper()',
)
# Incompatible: the first step is another one now.
V2_BAD = V1.replace("charged = await charge(order)", "charged = await ship(order)")

START = """
import asyncio, sys
import worldflow as wf
import flows

async def main():
    async with wf.worker():
        for order in ("o1", "o2"):
            run = await wf.start(flows.checkout, order, id=f"run-{order}")
            while not any(e.kind == "hook_created" for e in await run.events()):
                await asyncio.sleep(0.01)

asyncio.run(main())
"""


def test_replay_check_names_the_runs_a_change_would_break(tmp_path: Path) -> None:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("WORLDFLOW_")},
        "WORLDFLOW_DATA_DIR": str(tmp_path / "data"),
        "PYTHONPATH": str(tmp_path),
    }

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, *args],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    (tmp_path / "flows.py").write_text(V1)
    (tmp_path / "start.py").write_text(START)
    started = run(str(tmp_path / "start.py"))
    assert started.returncode == 0, started.stderr

    (tmp_path / "flows.py").write_text(V2_OK)
    ok = run("-m", "worldflow", "runs", "replay", "--check", "flows", "--json")
    assert ok.returncode == 0, ok.stderr
    report = json.loads(ok.stdout)
    assert report["checked"] == 2 and report["would_fail"] == 0

    (tmp_path / "flows.py").write_text(V2_BAD)
    bad = run("-m", "worldflow", "runs", "replay", "--check", "flows", "--json")
    assert bad.returncode == 1, bad.stderr
    report = json.loads(bad.stdout)
    assert report["would_fail"] == 2
    reasons = {r["run_id"]: r["reason"] for r in report["runs"]}
    assert set(reasons) == {"run-o1", "run-o2"}
    assert all("command #1" in why and "flows.charge" in why for why in reasons.values())
    one = run("-m", "worldflow", "runs", "replay", "--check", "flows", "--run", "run-o1")
    assert one.returncode == 1 and "would fail" in one.stdout and "run-o2" not in one.stdout
    assert run("-m", "worldflow", "runs", "replay", "flows").returncode == 2  # --check needed
