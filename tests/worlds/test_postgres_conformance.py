"""The postgres world passes the whole conformance suite, warm and always replaying,
against the real PostgreSQL server (a database of this test session's own)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

import worldflow as wf
from worldflow.testing import WorldConformance
from worldflow.worlds.postgres import PostgresWorld
from worldflow.worlds.postgres.testing import (
    empty_schema,
    world_factory,
)


class TestPostgresWorld(WorldConformance):
    schema = "conformance"

    @pytest.fixture
    def make_world(self, database: str) -> Callable[[], PostgresWorld]:
        empty_schema(database, self.schema)  # one schema per class, emptied per test
        clock = wf.VirtualClock()
        return world_factory(
            database, clock, schema=self.schema, heartbeat=0.2, lease=1.0, poll_interval=0.2
        )


class TestPostgresWorldAlwaysReplay(TestPostgresWorld):
    schema = "conformance_replay"
    always_replay = True


class TestPostgresWorldRemoteSteps(TestPostgresWorld):
    schema = "conformance_remote"
    remote_steps = True  # every step a message any worker takes (worldflow._remote)


class TestPostgresWorldRemoteStepsAlwaysReplay(TestPostgresWorld):
    schema = "conformance_remote_replay"
    remote_steps = True
    always_replay = True
