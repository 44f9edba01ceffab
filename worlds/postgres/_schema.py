"""The postgres world's tables: their DDL, the version kept in ``meta``, and migrations.

The schema is created on first use when it is missing, under a transaction-level
advisory lock, so that several processes starting at once create it once. A
schema of an older version is migrated by ``worldflow setup postgres`` (never
behind the back of workers that may still run the older code); one of a newer
version than this code knows is refused with an error that says what to do.

Everything here is synchronous: it runs once per process, when the World is
built, before any event loop work depends on it.
"""

from __future__ import annotations

import dataclasses
import math
import socket
from collections.abc import Callable
from typing import Any

from ._errors import PostgresError, translate
from ._settings import PostgresSettings, describe

__all__ = [
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "Prepared",
    "connect",
    "ddl",
    "migrate",
    "prepare",
    "read_version",
]

#: The version of the tables this code reads and writes.
#: 2: run_tags (the tag index), stream_chunks and stream_writers (streams).
SCHEMA_VERSION = 2


def _streams_and_tags(s: str) -> list[str]:
    """The tables of version 2 (IF NOT EXISTS: a migration may meet them half made)."""
    return [
        # The tag index: one row per tag of a run, in the run's creation order.
        f"""CREATE TABLE IF NOT EXISTS {s}.run_tags (
            run_id text NOT NULL,
            key text NOT NULL,
            value text NOT NULL,
            created_at double precision NOT NULL,
            PRIMARY KEY (run_id, key)
        )""",
        f"CREATE INDEX IF NOT EXISTS run_tags_by_value ON {s}.run_tags "
        "(key, value, created_at DESC, run_id DESC)",
        # A row per chunk, numbered densely per stream; a row per writer (a step) counts
        # what it wrote, so a retried attempt's repeats are dropped.
        f"""CREATE TABLE IF NOT EXISTS {s}.stream_chunks (
            run_id text NOT NULL,
            stream text NOT NULL,
            idx integer NOT NULL,
            data text NOT NULL,
            PRIMARY KEY (run_id, stream, idx)
        )""",
        f"""CREATE TABLE IF NOT EXISTS {s}.stream_writers (
            run_id text NOT NULL,
            stream text NOT NULL,
            writer text NOT NULL,
            written integer NOT NULL,
            PRIMARY KEY (run_id, stream, writer)
        )""",
    ]


def ddl(schema: str) -> list[str]:
    """The statements that create version :data:`SCHEMA_VERSION` of the tables."""
    s = f'"{schema}"'
    return [
        f"CREATE SCHEMA IF NOT EXISTS {s}",
        f"CREATE TABLE {s}.meta (key text PRIMARY KEY, value text NOT NULL)",
        # The projection of each run's log. last_seq is not kept: the events' primary
        # key fences appends, and max(seq) is read from it when a run is looked at.
        f"""CREATE TABLE {s}.runs (
            id text PRIMARY KEY,
            workflow text NOT NULL,
            status text NOT NULL,
            created_at double precision NOT NULL,
            updated_at double precision NOT NULL,
            output text,
            error text,
            holder text
        )""",
        f"CREATE INDEX runs_by_created ON {s}.runs (created_at DESC, id DESC)",
        f"CREATE INDEX runs_by_status ON {s}.runs (status, created_at DESC, id DESC)",
        f"CREATE INDEX runs_by_workflow ON {s}.runs (workflow, created_at DESC, id DESC)",
        f"CREATE INDEX runs_by_holder ON {s}.runs (holder) WHERE holder IS NOT NULL",
        f"CREATE INDEX runs_ended ON {s}.runs (updated_at) "
        "WHERE status IN ('completed', 'failed', 'cancelled')",
        f"""CREATE TABLE {s}.events (
            run_id text NOT NULL,
            seq integer NOT NULL,
            kind text NOT NULL,
            at double precision NOT NULL,
            data text NOT NULL,
            PRIMARY KEY (run_id, seq)
        )""",
        f"""CREATE TABLE {s}.hooks (
            token text PRIMARY KEY,
            run_id text NOT NULL,
            webhook boolean NOT NULL,
            n bigint NOT NULL DEFAULT 0
        )""",
        f"CREATE INDEX hooks_by_run ON {s}.hooks (run_id)",
        # The queue and the durable timers. due: the World clock's time; claimed_until:
        # the server's wall clock (leases), so workers' clocks need not agree.
        f"""CREATE TABLE {s}.messages (
            id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            run_id text NOT NULL,
            msg_id text NOT NULL,
            kind text NOT NULL,
            data text NOT NULL,
            due double precision NOT NULL,
            dedup text UNIQUE,
            attempts integer NOT NULL DEFAULT 0,
            claimed_by text,
            claimed_until double precision
        )""",
        f"CREATE INDEX messages_due ON {s}.messages (due) WHERE claimed_until IS NULL",
        f"CREATE INDEX messages_claimed ON {s}.messages (claimed_until) "
        "WHERE claimed_until IS NOT NULL",
        f"CREATE INDEX messages_by_run ON {s}.messages (run_id)",
        f"CREATE TABLE {s}.workers (id text PRIMARY KEY, until double precision NOT NULL)",
        f"CREATE INDEX workers_by_until ON {s}.workers (until)",
        *_streams_and_tags(s),
    ]


#: version -> the statements that take a schema from that version to the next one.
MIGRATIONS: dict[int, Callable[[str], list[str]]] = {
    1: lambda schema: _streams_and_tags(f'"{schema}"'),
}


@dataclasses.dataclass(frozen=True)
class Prepared:
    """What preparing the schema found: its version, whether this call created it, and
    the webhook port stored for it (None when not asked for or not chosen)."""

    version: int | None
    created: bool
    webhook_port: int | None


def connect(settings: PostgresSettings, what: str) -> Any:
    """A blocking autocommit connection (closed by the caller), errors translated."""
    import psycopg

    with translate(what, settings.url, settings.schema):
        return psycopg.connect(
            settings.url,
            autocommit=True,
            connect_timeout=max(2, math.ceil(settings.connect_timeout)),
            application_name="worldflow",
        )


def read_version(conn: Any, schema: str) -> int | None:
    """The schema's version, or None if it has no worldflow tables."""
    # Looked up first, so that a missing table is no error (which would abort the
    # transaction this may run in); in the catalog tables, not with to_regclass(), whose
    # cache may not have seen another process create it a moment ago.
    found = conn.execute(
        "SELECT 1 FROM pg_catalog.pg_tables WHERE schemaname = %s AND tablename = 'meta'",
        (schema,),
    ).fetchone()
    if found is None:
        return None
    row = conn.execute(
        f"SELECT value FROM \"{schema}\".meta WHERE key = 'schema_version'"
    ).fetchone()
    if row is None:
        return None
    return int(row[0])


def _lock(conn: Any, schema: str) -> None:
    conn.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (f"worldflow schema {schema}",)
    )


def _check(settings: PostgresSettings, version: int) -> None:
    where = f"schema {settings.schema!r} of {describe(settings.url)}"
    if version > SCHEMA_VERSION:
        raise PostgresError(
            f"{where} (WORLDFLOW_POSTGRES_SCHEMA) was written by a newer worldflow: its tables "
            f"are at version {version}, this worldflow knows version {SCHEMA_VERSION}. Upgrade "
            "worldflow here (pip install -U 'worldflow[postgres]'), or set "
            "WORLDFLOW_POSTGRES_SCHEMA to another schema"
        )
    if version < SCHEMA_VERSION:
        raise PostgresError(
            f"{where} (WORLDFLOW_POSTGRES_SCHEMA) is at version {version}; this worldflow needs "
            f"version {SCHEMA_VERSION}: stop the workers of the older version and run "
            "`worldflow setup postgres` to migrate it"
        )


def _create(conn: Any, settings: PostgresSettings) -> bool:
    """Create the tables unless another process just did; True if this call did."""
    with conn.transaction():
        _lock(conn, settings.schema)
        if read_version(conn, settings.schema) is not None:
            return False
        for statement in ddl(settings.schema):
            conn.execute(statement)
        conn.execute(
            f"INSERT INTO \"{settings.schema}\".meta (key, value) VALUES ('schema_version', %s)",
            (str(SCHEMA_VERSION),),
        )
    return True


def migrate(conn: Any, settings: PostgresSettings) -> list[int]:
    """Bring the schema up to :data:`SCHEMA_VERSION` (creating it if missing); the versions
    it went through. Refuses a newer schema."""
    done: list[int] = []
    with translate(f"migrate schema {settings.schema!r}", settings.url, settings.schema):
        if read_version(conn, settings.schema) is None and _create(conn, settings):
            return [SCHEMA_VERSION]
        with conn.transaction():
            _lock(conn, settings.schema)
            version = read_version(conn, settings.schema) or 0
            if version > SCHEMA_VERSION:
                _check(settings, version)
            while version < SCHEMA_VERSION:
                step = MIGRATIONS.get(version)
                if step is None:
                    raise PostgresError(
                        f"schema {settings.schema!r} is at version {version}, and this worldflow "
                        f"has no migration from it to {SCHEMA_VERSION}: migrate with the "
                        "worldflow release that follows it first"
                    )
                for statement in step(settings.schema):
                    conn.execute(statement)
                version += 1
                conn.execute(
                    f'UPDATE "{settings.schema}".meta SET value = %s '
                    "WHERE key = 'schema_version'",
                    (str(version),),
                )
                done.append(version)
    return done


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def stored_port(conn: Any, schema: str, *, choose: bool) -> int | None:
    """The webhook port kept in ``meta`` for this schema; chosen once if ``choose``."""
    meta = f'"{schema}".meta'
    if choose:
        conn.execute(
            f"INSERT INTO {meta} (key, value) VALUES ('webhook_port', %s) "
            "ON CONFLICT (key) DO NOTHING",
            (str(_free_port()),),
        )
    row = conn.execute(f"SELECT value FROM {meta} WHERE key = 'webhook_port'").fetchone()
    return None if row is None else int(row[0])


def prepare(settings: PostgresSettings, *, want_port: bool) -> Prepared:
    """Connect once: create the schema if it is missing (unless read-only), check its
    version, and read (or choose) the stored webhook port."""
    conn = connect(settings, f"connect to {describe(settings.url)} (WORLDFLOW_POSTGRES_URL)")
    try:
        with translate(f"prepare schema {settings.schema!r}", settings.url, settings.schema):
            version = read_version(conn, settings.schema)
            created = False
            if version is None and not settings.read_only:
                created = _create(conn, settings)
                version = read_version(conn, settings.schema)
            if version is None:  # read-only, and nothing has run here yet
                return Prepared(None, False, None)
            _check(settings, version)
            port = stored_port(conn, settings.schema, choose=want_port and not settings.read_only)
            return Prepared(version, created, port)
    finally:
        conn.close()
