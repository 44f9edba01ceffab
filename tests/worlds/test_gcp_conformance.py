"""The GCP world passes the whole conformance suite, warm and always replaying.

Against real protocol endpoints these tests start (worldflow.worlds.gcp.testing):
Google's Firestore emulator, the Cloud Tasks emulator and a Cloud Storage
emulator, with the Cloud Run app served by uvicorn in the test's process: every
message goes through the emulator to the app's task route, then to the engine.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import worldflow as wf
from worldflow.testing import WorldConformance
from worldflow.worlds.gcp import GcpWorld
from worldflow.worlds.gcp.testing import world_factory

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gcp_support import emulators


class TestGcpWorld(WorldConformance):
    @pytest.fixture
    def make_world(self) -> Iterator[Callable[[], GcpWorld]]:
        with world_factory(emulators(), wf.VirtualClock()) as make:
            yield make


class TestGcpWorldAlwaysReplay(TestGcpWorld):
    always_replay = True


class TestGcpWorldRemoteSteps(TestGcpWorld):
    remote_steps = True  # every step its own Cloud Tasks request (worldflow._remote)


class TestGcpWorldRemoteStepsAlwaysReplay(TestGcpWorld):
    remote_steps = True
    always_replay = True
