"""Learning at once that a postgres worker died: a lock its database session held.

A heartbeat says a worker was alive a moment ago; only its lease running out
says it died. The server can say more: each serving worker holds a session
advisory lock, keyed by its schema and its id, on a connection of its own for
as long as it lives, and records the lock's key in ``meta``
(``worker-lock:<worker id>``) before its first heartbeat. A process that is
killed or crashes closes its socket, the server ends its session and drops the
lock at once. A worker that has recorded a key but whose lock no session holds
is gone: :data:`REAP` voids its heartbeat, frees the messages it had claimed
and removes the key, all in one statement.

Left to the lease, as before: a hung or stopped process and a machine that
vanished without closing its sockets (their sessions keep the lock until TCP
keepalives end them), a worker that recorded no key (an older version), and
any worker for a while after the server restarted (every session, and so
every lock, ended then: workers take theirs again at their next heartbeat).
"""

from __future__ import annotations

import contextlib
import logging
import zlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from psycopg import AsyncConnection

__all__ = ["KEY_PREFIX", "LifeLock", "lock_key", "reap_sql"]

log = logging.getLogger("worldflow.postgres")

KEY_PREFIX = "worker-lock:"


def lock_key(text: str) -> int:
    """A stable int4 for ``text`` (crc32, as a signed 32-bit value)."""
    value = zlib.crc32(text.encode())
    return value - (1 << 32) if value >= 1 << 31 else value


def reap_sql(s: str) -> str:
    """Void the heartbeats of workers whose lock no session holds (``%(only)s``: of that
    worker alone, or of all when NULL); free their messages, drop their keys; return them.

    Parameters: now (wall clock, as heartbeats are), me, space (the schema's lock key,
    unsigned), grace (seconds after a server start during which nothing is reaped)."""
    return f"""
        WITH dead AS (
            UPDATE {s}.workers w SET until = 0
            FROM {s}.meta k
            WHERE k.key = '{KEY_PREFIX}' || w.id
              AND w.until >= %(now)s AND w.id <> %(me)s
              AND (%(only)s::text IS NULL OR w.id = %(only)s::text)
              AND pg_catalog.pg_postmaster_start_time()
                  < pg_catalog.now() - make_interval(secs => %(grace)s)
              AND NOT EXISTS (
                  SELECT 1 FROM pg_catalog.pg_locks l
                  WHERE l.locktype = 'advisory' AND l.objsubid = 2 AND l.granted
                    AND l.database = (SELECT oid FROM pg_catalog.pg_database
                                      WHERE datname = pg_catalog.current_database())
                    AND l.classid = %(space)s::bigint::oid
                    AND l.objid = k.value::bigint::oid)
            RETURNING w.id),
        freed AS (
            UPDATE {s}.messages m SET claimed_by = NULL, claimed_until = NULL
            FROM dead WHERE m.claimed_by = dead.id
            RETURNING m.id),
        dropped AS (
            DELETE FROM {s}.meta k USING dead WHERE k.key = '{KEY_PREFIX}' || dead.id
            RETURNING k.key)
        SELECT id, (SELECT count(*) FROM freed) FROM dead"""


class LifeLock:
    """This worker's lock: held on a connection of its own while the worker serves."""

    def __init__(self, url: str, options: dict[str, Any], schema: str, worker_id: str) -> None:
        self.url = url
        self.options = options
        self.schema = schema
        self.worker_id = worker_id
        self.space = lock_key(f"worldflow:{schema}")
        self.key = lock_key(worker_id)
        self._conn: AsyncConnection[Any] | None = None

    @property
    def held(self) -> bool:
        return self._conn is not None and not self._conn.closed

    async def hold(self) -> None:
        """Take the lock (again, if its session ended) and record its key; checked at
        every heartbeat, before the heartbeat is written."""
        import psycopg

        if self._conn is not None:
            try:
                await self._conn.execute("SELECT 1")
                return
            except psycopg.Error:
                await self._drop()
        conn = await psycopg.AsyncConnection.connect(self.url, **self.options)
        try:
            await conn.execute("SELECT pg_advisory_lock(%s, %s)", (self.space, self.key))
            await conn.execute(
                f'INSERT INTO "{self.schema}".meta (key, value) VALUES (%s, %s) '
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (KEY_PREFIX + self.worker_id, str(self.key & 0xFFFFFFFF)),
            )
        except BaseException:
            with contextlib.suppress(Exception):
                await conn.close()
            raise
        self._conn = conn

    async def release(self) -> None:
        """Remove the key and end the session (the lock goes with it): a clean end."""
        conn = self._conn
        if conn is None:
            return
        with contextlib.suppress(Exception):
            await conn.execute(
                f'DELETE FROM "{self.schema}".meta WHERE key = %s',
                (KEY_PREFIX + self.worker_id,),
            )
        await self._drop()

    async def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close()
