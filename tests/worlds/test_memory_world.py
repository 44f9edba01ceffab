"""The minimal World of docs/design.md ("Writing a World") passes the whole conformance
suite: the seam is enough to write a World with public names only."""

from __future__ import annotations

import ast
from collections.abc import Callable
from pathlib import Path

import pytest

import worldflow as wf
from examples.memory_world import MemoryQueue, memory_world
from worldflow.testing import WorldConformance
from worldflow.world import World

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "memory_world.py"


class TestMemoryWorld(WorldConformance):
    @pytest.fixture
    def make_world(self) -> Callable[[], World]:
        # One store shared by every "restart": the memory world lives in the process.
        clock = wf.VirtualClock()
        world = memory_world(clock)
        queue = world.queue
        assert isinstance(queue, MemoryQueue)

        def again() -> World:
            return World(
                storage=world.storage,
                queue=queue.another(),  # the messages stay; a consumer of its own
                workers=world.workers,
                clock=clock,
                capabilities=world.capabilities,
                public_url=world.public_url,
                webhook_listen=world.webhook_listen,
                heartbeat=world.heartbeat,
                lease=world.lease,
                name="memory",
            )

        return again


class TestMemoryWorldAlwaysReplay(TestMemoryWorld):
    always_replay = True


def test_the_example_world_imports_only_the_public_seam() -> None:
    tree = ast.parse(EXAMPLE.read_text())
    modules = {
        node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module
    } | {a.name for node in ast.walk(tree) if isinstance(node, ast.Import) for a in node.names}
    ours = {m for m in modules if m.startswith("worldflow")}
    assert ours <= {"worldflow", "worldflow.world"}, ours
    assert len(EXAMPLE.read_text().splitlines()) < 350  # a World is a few hundred lines
