"""Testing support: the World conformance suite, a harness and a log replayer.

>>> from worldflow.testing import WorldConformance
>>> class TestMyWorld(WorldConformance):
...     @pytest.fixture
...     def make_world(self, tmp_path): ...

For a workflow's own tests: the pytest plugin's fixtures ``wf_world`` and
``wf_clock`` (:mod:`worldflow.testing.pytest_plugin`, on once worldflow is
installed), :func:`wait_until_asleep`, :func:`wait_for_hook` and
:func:`replay` (a recorded log against the code).

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
from ._helpers import replay, wait_for_hook, wait_until_asleep
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
    "replay",
    "replay_log",
    "wait_for_hook",
    "wait_until_asleep",
]
