"""The seed's examples, as a user runs them, on a configured World other than local:
``WORLDFLOW_WORLD=postgres python -m examples.X`` uses that World (their ``main()``
pins none), with the real clock (the loyalty reward's sleep is woken early)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("example", "expected"),
    [
        ("payment_webhook", "'status': 'approved'"),
        ("loyalty_reward", "Ride Credit for rider-7"),
        ("hail_ride", "run completed"),
    ],
)
def test_example_runs_on_the_configured_world(
    database: str, tmp_path: Path, example: str, expected: str
) -> None:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("WORLDFLOW_")},
        "WORLDFLOW_WORLD": "postgres",
        "WORLDFLOW_POSTGRES_URL": database,
        "WORLDFLOW_POSTGRES_SCHEMA": f"ex_{example}",
        "PYTHONPATH": str(ROOT),
    }
    done = subprocess.run(
        [sys.executable, "-m", f"examples.{example}"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "on the postgres world" in done.stdout
    assert expected in done.stdout
    assert not (tmp_path / ".worldflow").exists()  # nothing went to a local world
