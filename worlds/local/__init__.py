"""The local world: runs in SQLite on this machine, queues and timers in-process.

The embedded default (``WORLDFLOW_WORLD=local``): zero set-up, persistent in
``WORLDFLOW_DATA_DIR`` (default ``./.worldflow``), shared safely by every
process that opens the same directory.
"""

from ._world import LocalWorld, create_world

__all__ = ["LocalWorld", "create_world"]
