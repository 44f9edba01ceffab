"""Testing support: the World conformance suite, a harness and a log replayer.

>>> from worldflow.testing import WorldConformance
>>> class TestMyWorld(WorldConformance):
...     @pytest.fixture
...     def make_world(self, tmp_path): ...

Needs pytest (``pip install 'worldflow[dev]'``).
"""

from ._harness import (
    ChaoticQueue,
    DuplicatingWorld,
    Harness,
    chaotic,
    dump_log,
    http_call,
    load_log,
    normalized,
    replay_log,
)
from ._suite import WorldConformance, conformance

__all__ = [
    "ChaoticQueue",
    "DuplicatingWorld",
    "Harness",
    "WorldConformance",
    "chaotic",
    "conformance",
    "dump_log",
    "http_call",
    "load_log",
    "normalized",
    "replay_log",
]
