"""A short kill soak (bench/soak.py, the campaign's full version): runs mixing steps,
a retry, a sleep and a hook on three workers, one SIGKILLed every 0.2-1 s; every run
completes right, with one recorded result per step."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

pytestmark = [pytest.mark.crash, pytest.mark.slow]

BENCH = Path(__file__).resolve().parents[1] / "bench" / "soak.py"


def _soak_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("worldflow_bench_soak", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.mark.timeout(240)  # gcp: the emulators' start (~20 s loaded) and three services'
@pytest.mark.parametrize("world", ["local", "postgres", "aws", "gcp"])
def test_a_short_kill_soak(world: str) -> None:
    if world == "gcp":
        # In a process of its own, without the settings the other cases left in this
        # one's environment: run after the aws case, its client waited for ever for the
        # first hook (not understood yet; alone it passes).
        prefixes = ("WORLDFLOW_", "AWS_", "FIRESTORE_", "STORAGE_", "SOAK_")
        done = subprocess.run(
            [sys.executable, str(BENCH), "--world", "gcp", "--runs", "5", "--kills", "8"],
            capture_output=True,
            text=True,
            timeout=220,
            check=False,
            env={k: v for k, v in os.environ.items() if not k.startswith(prefixes)},
        )
        print(done.stdout)
        assert done.returncode == 0, done.stdout + done.stderr[-3000:]
        assert "gcp           5      5      8     0      0" in done.stdout
        return
    soak = _soak_module()
    outcome = soak.soak(world, runs=5, kills=8)
    print(soak.table([outcome]))
    assert outcome.right == outcome.runs == 5
    assert (outcome.lost, outcome.twice) == (0, 0)
    assert outcome.executions >= outcome.least  # every step ran, the flaky one twice
