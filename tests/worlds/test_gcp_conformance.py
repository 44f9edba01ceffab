"""The GCP world passes the whole conformance suite, warm and always replaying.

Against real protocol endpoints these tests start (tests/worlds/gcp_support):
Google's Firestore emulator, the Cloud Tasks emulator and a Cloud Storage
emulator, with the service app served by uvicorn in the test's process.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import worldflow as wf
from worldflow.testing import WorldConformance
from worldflow.worlds.gcp import GcpWorld

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gcp_support.emulators import emulators
from gcp_support.world import world_factory


class TestGcpWorld(WorldConformance):
    @pytest.fixture
    def make_world(self) -> Iterator[Callable[[], GcpWorld]]:
        with world_factory(emulators(), wf.VirtualClock()) as make:
            yield make


class TestGcpWorldAlwaysReplay(TestGcpWorld):
    always_replay = True
