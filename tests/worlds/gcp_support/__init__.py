"""This repository's glue for the GCP tests: the emulators of worldflow.worlds.gcp.testing,
with the Cloud Tasks emulator's venv made on first use, or the test skipped saying why."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from worldflow.worlds.gcp import testing

ROOT = Path(__file__).resolve().parents[3]

__all__ = ["ROOT", "emulators"]


def emulators() -> testing.Emulators:
    """The emulators of this test process, or a skip naming what is missing."""
    if testing.firestore_jar().exists() and testing.tasks_python() is None:
        subprocess.run(["bash", str(ROOT / "scripts" / "_gcp.sh"), "--emulators-only"], check=True)
        os.environ.setdefault(
            "WORLDFLOW_GCLOUD_TASKS_PYTHON", str(ROOT / ".venv-gcloud-tasks" / "bin" / "python")
        )
    try:
        return testing.emulators()
    except testing.EmulatorMissing as exc:
        pytest.skip(str(exc))
