"""Testing support: the World conformance suite, a harness and a log replayer.

>>> from worldflow.testing import WorldConformance
>>> class TestMyWorld(WorldConformance):
...     @pytest.fixture
...     def make_world(self, tmp_path): ...

Needs pytest (``pip install 'worldflow[dev]'``).
"""

from ._harness import DuplicatingWorld, Harness, dump_log, load_log, normalized, replay_log
from ._suite import WorldConformance, conformance

__all__ = [
    "DuplicatingWorld",
    "Harness",
    "WorldConformance",
    "conformance",
    "dump_log",
    "load_log",
    "normalized",
    "replay_log",
]
