"""The local world passes the whole conformance suite, warm and always replaying."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

import worldflow as wf
from worldflow.testing import WorldConformance
from worldflow.worlds.local import LocalWorld


class TestLocalWorld(WorldConformance):
    @pytest.fixture
    def make_world(self, tmp_path: Path) -> Callable[[], LocalWorld]:
        clock = wf.VirtualClock()
        return lambda: LocalWorld(tmp_path, clock=clock, heartbeat=0.2, lease=1.0)


class TestLocalWorldAlwaysReplay(TestLocalWorld):
    always_replay = True


class TestLocalWorldRemoteSteps(TestLocalWorld):
    remote_steps = True  # every step a message any worker takes (worldflow._remote)


class TestLocalWorldRemoteStepsAlwaysReplay(TestLocalWorld):
    remote_steps = True
    always_replay = True
