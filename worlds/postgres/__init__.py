"""The postgres world: runs in one PostgreSQL database shared by any number of workers
(``WORLDFLOW_WORLD=postgres``).

Sequenced appends in transactions, the queue and durable timers in a table
claimed with ``FOR UPDATE SKIP LOCKED`` and leases, ``LISTEN/NOTIFY`` to wake
workers; psycopg 3. Needs ``pip install 'worldflow[postgres]'``; the user
guide is docs/postgres.md. Importing this package imports no driver.
"""

from ._errors import PostgresError
from ._settings import PostgresSettings
from ._world import PostgresWorld, create_world

__all__ = ["CLI_COMMANDS", "PostgresError", "PostgresSettings", "PostgresWorld", "create_world"]

#: ``worldflow setup postgres``.
CLI_COMMANDS = {"setup": "worldflow.worlds.postgres._cli:SETUP"}
