"""Helpers to test against a real PostgreSQL server: a fresh database, dropped afterwards.

Used by worldflow's own tests and usable in a project's tests::

    with fresh_database() as url:            # CREATE DATABASE worldflow_test_<random>
        make_world = world_factory(url, wf.VirtualClock(), schema="t1")
        ...                                   # a conformance suite's make_world
                                              # DROP DATABASE ... WITH (FORCE) at the end

The server is the one ``WORLDFLOW_POSTGRES_TEST_URL`` names (default
``postgresql://postgres@127.0.0.1:5432/postgres``): a user who may create
databases, connected to any database of the server.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from worldflow.world import Clock

from ._schema import SCHEMA_VERSION, ddl, read_version
from ._settings import redact
from ._world import PostgresWorld

__all__ = [
    "DEFAULT_SERVER_URL",
    "ServerMissing",
    "create_database",
    "database_url",
    "drop_database",
    "empty_schema",
    "fresh_database",
    "server_url",
    "sql",
    "world_factory",
]

DEFAULT_SERVER_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
_TABLES = ("events", "runs", "hooks", "messages", "workers")


class ServerMissing(RuntimeError):
    """No PostgreSQL server answers at the test URL; the message says which and how to set it."""


def server_url() -> str:
    """The server tests use: ``WORLDFLOW_POSTGRES_TEST_URL`` or the local default."""
    return os.environ.get("WORLDFLOW_POSTGRES_TEST_URL") or DEFAULT_SERVER_URL


def database_url(server: str, name: str) -> str:
    """The URL of database ``name`` on the server of URL ``server``."""
    return urlunsplit(urlsplit(server)._replace(path=f"/{name}"))


def _admin(server: str) -> Any:
    import psycopg

    try:
        return psycopg.connect(server, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        raise ServerMissing(
            f"no PostgreSQL server at {redact(server)} ({exc}); start one, or set "
            "WORLDFLOW_POSTGRES_TEST_URL to a server where this user may create databases"
        ) from exc


def create_database(server: str | None = None, prefix: str = "worldflow_test") -> str:
    """Create a database with a random name; its URL."""
    server = server or server_url()
    name = f"{prefix}_{secrets.token_hex(6)}"
    with contextlib.closing(_admin(server)) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return database_url(server, name)


def drop_database(url: str, server: str | None = None) -> None:
    """Drop the database of ``url``, disconnecting whoever is still connected to it."""
    server = server or server_url()
    name = urlsplit(url).path.lstrip("/")
    with contextlib.closing(_admin(server)) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def fresh_database(server: str | None = None) -> Iterator[str]:
    """A new, empty database for the block; dropped at its end."""
    url = create_database(server)
    try:
        yield url
    finally:
        drop_database(url, server)


def empty_schema(url: str, schema: str) -> None:
    """Create the world's tables in ``schema`` if missing, and delete every row of them
    (faster than a new schema per test)."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn, conn.transaction():
        conn.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))",
            (f"worldflow schema {schema}",),
        )
        if read_version(conn, schema) is None:
            for statement in ddl(schema):
                conn.execute(statement)
            conn.execute(
                f"INSERT INTO \"{schema}\".meta (key, value) VALUES ('schema_version', %s)",
                (str(SCHEMA_VERSION),),
            )
        for table in _TABLES:
            conn.execute(f'DELETE FROM "{schema}".{table}')


def world_factory(
    url: str, clock: Clock | None = None, *, schema: str = "worldflow", **options: Any
) -> Callable[[], PostgresWorld]:
    """A callable returning a new :class:`PostgresWorld` over the same schema at each call
    (a restart), for a conformance suite's ``make_world``."""

    def make() -> PostgresWorld:
        return PostgresWorld(url, clock=clock, schema=schema, **options)

    return make


def sql(url: str, statement: str, *args: Any) -> list[tuple[Any, ...]]:
    """Run one statement on its own connection (autocommit); the rows it returns, if any."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(statement, args or None)
        return cur.fetchall() if cur.description else []
