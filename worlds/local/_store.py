"""SQLite storage for the local world: runs, event logs, hooks, messages, workers.

It is three of the World's parts at once: :class:`~worldflow.world.Storage`,
:class:`~worldflow.world.Workers` (heartbeats in the same database) and the
durable half of the queue (the ``messages`` table, written in the same
transaction as the append that sends them: ``transactional_messages``).

One connection, used on the event loop's thread: a thread hop per write (as
aiosqlite does) costs more than the write. WAL with ``synchronous=NORMAL``:
a commit survives the process being killed (``kill -9``); on power loss the
last commits before the crash may be lost, never the database's integrity.

Writers take the lock with ``BEGIN IMMEDIATE`` (a deferred read-then-write
transaction fails at once with "database is locked" whatever the busy
timeout), under a short busy timeout with an async retry around it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from worldflow.world import (
    Append,
    ChunkWrite,
    Clock,
    CorruptLogError,
    Event,
    HookInfo,
    Log,
    Outgoing,
    RunCreate,
    RunInfo,
    RunPage,
    StreamInfo,
    WorldError,
    json_dumps,
    json_loads,
)

from ._liveness import WorkerLocks

__all__ = ["Store", "StoredMessage"]

T = TypeVar("T")

# 2: runs has no last_seq column (the events table fences appends).
# 3: runs.holder (the worker whose step attempts a run waits on), hooks.n (payloads
#    counted, so they are applied in order), workers.until (a heartbeat's expiry).
SCHEMA_VERSION = 3
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    workflow TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    owner TEXT,
    output TEXT,
    error TEXT,
    holder TEXT
);
CREATE INDEX IF NOT EXISTS runs_by_created ON runs (created_at DESC, id DESC);
CREATE INDEX IF NOT EXISTS runs_by_status ON runs (status, created_at DESC, id DESC);
CREATE INDEX IF NOT EXISTS runs_by_workflow ON runs (workflow, created_at DESC, id DESC);
CREATE TABLE IF NOT EXISTS events (
    run_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    kind TEXT NOT NULL,
    at REAL NOT NULL,
    data TEXT NOT NULL,
    PRIMARY KEY (run_id, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS hooks (
    token TEXT PRIMARY KEY,
    run_id TEXT NOT NULL,
    webhook INTEGER NOT NULL,
    n INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id TEXT NOT NULL,
    msg_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    data TEXT NOT NULL,
    due REAL NOT NULL,
    dedup TEXT UNIQUE
);
CREATE INDEX IF NOT EXISTS messages_by_run ON messages (run_id);
CREATE TABLE IF NOT EXISTS workers (id TEXT PRIMARY KEY, until REAL NOT NULL);
CREATE TABLE IF NOT EXISTS run_tags (
    run_id TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (run_id, key)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS run_tags_by_value ON run_tags (key, value, created_at DESC, run_id DESC);
CREATE TABLE IF NOT EXISTS stream_chunks (
    run_id TEXT NOT NULL,
    stream TEXT NOT NULL,
    idx INTEGER NOT NULL,
    data TEXT NOT NULL,
    PRIMARY KEY (run_id, stream, idx)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS stream_writers (
    run_id TEXT NOT NULL,
    stream TEXT NOT NULL,
    writer TEXT NOT NULL,
    written INTEGER NOT NULL,
    PRIMARY KEY (run_id, stream, writer)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS taken (message INTEGER PRIMARY KEY, worker TEXT NOT NULL);
"""

# From schema 2 to 3: new columns; heartbeats are transient, so that table is remade.
_MIGRATE_2_TO_3 = """
ALTER TABLE runs ADD COLUMN holder TEXT;
ALTER TABLE hooks ADD COLUMN n INTEGER NOT NULL DEFAULT 0;
DROP TABLE IF EXISTS workers;
CREATE TABLE workers (id TEXT PRIMARY KEY, until REAL NOT NULL);
"""

_dumps = json_dumps


class StoredMessage:
    __slots__ = ("data", "due", "kind", "msg_id", "row", "run_id")

    def __init__(self, row: int, run_id: str, msg_id: str, kind: str, data: str, due: float):
        self.row = row
        self.run_id = run_id
        self.msg_id = msg_id
        self.kind = kind
        self.data = data
        self.due = due


def _run_info(row: sqlite3.Row | tuple[Any, ...]) -> RunInfo:
    """A run's row; a value that cannot be read makes this run unreadable, not the query."""
    id_, workflow, status, created, updated, last_seq, output, error, tags = row
    values: dict[str, Any] = {"output": None, "error": None, "tags": None}
    unreadable = None
    for name, text in (("output", output), ("error", error), ("tags", tags)):
        if text is not None:
            try:
                values[name] = json_loads(text, f"the {name} of run {id_!r}")
            except CorruptLogError as exc:
                unreadable = str(exc)
    return RunInfo(
        id=id_,
        workflow=workflow,
        status=status,
        created_at=created,
        updated_at=updated,
        last_seq=last_seq or 0,
        output=values["output"],
        error=values["error"],
        unreadable=unreadable,
        tags=values["tags"] or {},
    )


_RUN_COLUMNS = (
    "runs.id, runs.workflow, runs.status, runs.created_at, runs.updated_at, "
    "(SELECT max(seq) FROM events WHERE run_id = runs.id), runs.output, runs.error, "
    "(SELECT json_group_object(key, value) FROM run_tags WHERE run_id = runs.id)"
)


# SQLite keeps process-wide state in memory: mutexes (its allocator's, the one
# guarding its table of open files) and the locks each open file holds. A
# process that forks while one of its threads is inside SQLite leaves the
# child that state as it was: a mutex held by a thread the child does not have
# (the child's first `sqlite3.connect` then hangs for good: 2 children in 100
# forked beside a busy loop did), or a write lock SQLite believes it holds
# (every write of the child is then "locked" for good). So every call into
# SQLite holds `_NO_FORK`, and a fork waits for it: no fork happens inside
# SQLite. (The child must not use the connections it inherited; pre-fork
# servers open their own, as the sync entry points do.) Uncontended, the lock
# costs about 0.1 µs a call.
_NO_FORK = threading.RLock()
os.register_at_fork(
    before=_NO_FORK.acquire,
    after_in_parent=_NO_FORK.release,
    after_in_child=_NO_FORK.release,
)


class _Cursor:
    """A cursor whose fetches hold ``_NO_FORK`` (a fetch steps the statement)."""

    __slots__ = ("_cur",)

    def __init__(self, cur: sqlite3.Cursor) -> None:
        self._cur = cur

    @property
    def rowcount(self) -> int:
        return self._cur.rowcount

    @property
    def lastrowid(self) -> int | None:
        return self._cur.lastrowid

    def fetchone(self) -> Any:
        with _NO_FORK:
            return self._cur.fetchone()

    def fetchall(self) -> list[Any]:
        with _NO_FORK:
            return self._cur.fetchall()

    def __iter__(self) -> Iterator[Any]:
        return iter(self.fetchall())


class _Connection:
    """An SQLite connection whose every call holds ``_NO_FORK`` (see above)."""

    __slots__ = ("_db",)

    def __init__(self, path: str) -> None:
        with _NO_FORK:
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)

    def execute(self, sql: str, params: Sequence[Any] = ()) -> _Cursor:
        with _NO_FORK:
            return _Cursor(self._db.execute(sql, params))

    def executemany(self, sql: str, params: Iterable[Sequence[Any]]) -> _Cursor:
        with _NO_FORK:
            return _Cursor(self._db.executemany(sql, params))

    def executescript(self, script: str) -> None:
        with _NO_FORK:
            self._db.executescript(script)

    def close(self) -> None:
        with _NO_FORK:
            self._db.close()


class Store:
    """The SQLite database of one local world."""

    def __init__(
        self, path: str, worker_id: str, clock: Clock, *, busy_timeout_ms: int = 20
    ) -> None:
        self.path = path
        self.worker_id = worker_id
        self.clock = clock
        self.commits = 0  # write transactions committed (the benchmark counts them)
        self.messages_queued = 0
        self._creates: list[tuple[RunCreate, float, asyncio.Future[tuple[RunInfo, bool]]]] = []
        self._creating: asyncio.Task[None] | None = None
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.db = _Connection(path)
        # Another process may be creating the database right now. Switching to WAL
        # can fail at once with "locked" whatever the busy timeout, so retry the
        # whole opening for a while; then keep lock waits short (write() retries).
        deadline = time.monotonic() + 15.0
        while True:
            try:
                self.db.execute("PRAGMA busy_timeout = 2000")
                self.db.execute("PRAGMA journal_mode = WAL")
                self.db.execute("PRAGMA synchronous = NORMAL")
                self.db.executescript(_SCHEMA)
                self._write(self._check_schema)
                self.db.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
                break
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    self.db.close()
                    raise WorldError(
                        f"cannot open the local world's database {path!r}: {exc}"
                    ) from exc
                time.sleep(0.01)
            except sqlite3.Error as exc:
                self.db.close()
                raise WorldError(f"cannot open the local world's database {path!r}: {exc}") from exc
        self.on_messages: Callable[[list[StoredMessage]], None] | None = None
        #: Whether a worker's process is still there, told by a lock it holds.
        self.locks = WorkerLocks(None if path == ":memory:" else Path(path + ".workers"))
        # Runs whose row already names this worker as owner (a hint, not a lock:
        # the events' sequence numbers are what keep writers apart).
        self.owned: set[str] = set()

    def _check_schema(self) -> None:
        found = self.db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
        if found is None:
            self.db.execute(
                "INSERT INTO meta (key, value) VALUES ('schema', ?)", (str(SCHEMA_VERSION),)
            )
        elif int(found[0]) == 2:
            for statement in filter(None, (x.strip() for x in _MIGRATE_2_TO_3.split(";"))):
                self.db.execute(statement)
            self.db.execute(
                "UPDATE meta SET value = ? WHERE key = 'schema'", (str(SCHEMA_VERSION),)
            )
        elif int(found[0]) != SCHEMA_VERSION:
            raise WorldError(
                f"{self.path} was written by another version of worldflow (schema "
                f"{found[0]}; this one reads {SCHEMA_VERSION}): use that version to finish "
                "its runs, or move the data directory aside to start afresh"
            )
        self.db.execute(
            "CREATE INDEX IF NOT EXISTS runs_by_holder ON runs (holder) WHERE holder IS NOT NULL"
        )

    def close(self) -> None:
        self.locks.release()
        self.db.close()

    # -- transactions ------------------------------------------------------------
    def _write(self, body: Callable[[], T]) -> T:
        """Run ``body`` in one IMMEDIATE transaction (raises sqlite3.OperationalError if locked)."""
        db = self.db
        with _NO_FORK:
            db.execute("BEGIN IMMEDIATE")
            try:
                result = body()
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
        self.commits += 1
        return result

    async def write(self, body: Callable[[], T]) -> T:
        """``_write`` with an async retry while another process holds the lock."""
        delay = 0.001
        deadline = time.monotonic() + 30.0
        while True:
            try:
                return self._write(body)
            except sqlite3.OperationalError as exc:
                locked = "locked" in str(exc) or "busy" in str(exc)
                if not locked or time.monotonic() > deadline:
                    raise WorldError(f"local world database {self.path!r}: {exc}") from exc
            except sqlite3.Error as exc:
                raise WorldError(f"local world database {self.path!r}: {exc}") from exc
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.05)

    def _insert_messages(self, messages: Sequence[Outgoing], now: float) -> list[StoredMessage]:
        stored = []
        for out in messages:
            m = out.message
            data = _dumps(m.data)
            due = now if out.not_before is None else out.not_before
            cur = self.db.execute(
                "INSERT OR IGNORE INTO messages (run_id, msg_id, kind, data, due, dedup) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (m.run_id, m.id, m.kind, data, due, out.key),
            )
            if cur.rowcount == 1:
                assert cur.lastrowid is not None
                self.messages_queued += 1
                stored.append(StoredMessage(cur.lastrowid, m.run_id, m.id, m.kind, data, due))
        return stored

    def _announce(self, stored: list[StoredMessage]) -> None:
        if stored and self.on_messages is not None:
            self.on_messages(stored)

    # -- Storage -------------------------------------------------------------------
    async def create_run(self, create: RunCreate) -> tuple[RunInfo, bool]:
        """Create a run; runs created during one turn of the loop share one transaction."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[tuple[RunInfo, bool]] = loop.create_future()
        self._creates.append((create, self.clock.now(), done))
        if len(self._creates) == 1:
            self._creating = loop.create_task(self._create_pending())
        return await done

    async def _create_pending(self) -> None:
        items, self._creates = self._creates, []

        def body() -> list[tuple[bool, list[StoredMessage]]]:
            return [self._create_one(create, now) for create, now, _ in items]

        try:
            results = await self.write(body)
        except Exception as exc:
            for _, _, done in items:
                if not done.done():
                    done.set_exception(exc)
            return
        for (create, _, done), (created, stored) in zip(items, results, strict=True):
            self._announce(stored)
            try:
                if created:
                    at = create.event.at
                    info = RunInfo(
                        create.run_id, create.workflow, "pending", at, at, 1, tags=create.tags
                    )
                else:
                    found = await self.get_run(create.run_id)
                    if found is None:
                        raise WorldError(f"run {create.run_id!r} was neither created nor found")
                    info = found
            except Exception as exc:
                if not done.done():
                    done.set_exception(exc)
                continue
            if not done.done():
                done.set_result((info, created))

    def _create_one(self, create: RunCreate, now: float) -> tuple[bool, list[StoredMessage]]:
        event = create.event
        cur = self.db.execute(  # only an existing id is ignored; any other problem raises
            "INSERT INTO runs (id, workflow, status, created_at, updated_at, owner) "
            "VALUES (?, ?, 'pending', ?, ?, ?) ON CONFLICT (id) DO NOTHING",
            (create.run_id, create.workflow, event.at, event.at, self.worker_id),
        )
        if cur.rowcount == 0:
            return False, []
        self.owned.add(create.run_id)
        self.db.execute(
            "INSERT INTO events (run_id, seq, kind, at, data) VALUES (?, 1, ?, ?, ?)",
            (create.run_id, event.kind, event.at, _dumps(event.data)),
        )
        if create.tags:
            self.db.executemany(
                "INSERT INTO run_tags (run_id, key, value, created_at) VALUES (?, ?, ?, ?)",
                [(create.run_id, k, v, event.at) for k, v in create.tags.items()],
            )
        return True, self._insert_messages(create.messages, now)

    async def append(self, appends: Sequence[Append]) -> list[bool]:
        now = self.clock.now()

        def body() -> tuple[list[bool], list[StoredMessage]]:
            db = self.db
            results: list[bool] = []
            lost: set[str] = set()
            stored: list[StoredMessage] = []
            for a in appends:
                if a.run_id in lost:  # a chain: once one append of a run fails, the rest do
                    results.append(False)
                    continue
                rows = [
                    (a.run_id, a.expected_seq + i, e.kind, e.at, _dumps(e.data))
                    for i, e in enumerate(a.events, 1)
                ]
                try:
                    # The events' primary key (run_id, seq) is the fence: if another
                    # writer took expected_seq + 1, the first insert fails and nothing
                    # of this append is written.
                    db.executemany(
                        "INSERT INTO events (run_id, seq, kind, at, data) VALUES (?, ?, ?, ?, ?)",
                        rows,
                    )
                except sqlite3.IntegrityError:
                    lost.add(a.run_id)
                    results.append(False)
                    continue
                # The run's row changes only with its status, owner or holder: one
                # UPDATE at most, and none for most steps.
                sets: list[str] = []
                values: list[Any] = []
                if a.status is not None:
                    sets.append("updated_at = ?, status = ?, output = ?, error = ?")
                    values += [
                        a.events[-1].at if a.events else now,
                        a.status,
                        None if a.output is None else _dumps(a.output),
                        None if a.error is None else _dumps(a.error),
                    ]
                    if a.status in ("completed", "failed", "cancelled"):
                        self.owned.discard(a.run_id)  # keeps the set to runs in flight
                    elif a.run_id not in self.owned:
                        sets.append("owner = ?")
                        values.append(self.worker_id)
                        self.owned.add(a.run_id)
                elif a.run_id not in self.owned:
                    sets.append("owner = ?")
                    values.append(self.worker_id)
                    self.owned.add(a.run_id)
                if a.holder_changed:
                    sets.append("holder = ?")
                    values.append(a.holder)
                if sets:
                    db.execute(
                        f"UPDATE runs SET {', '.join(sets)} WHERE id = ?", (*values, a.run_id)
                    )
                if a.hooks_created:
                    db.executemany(
                        "INSERT INTO hooks (token, run_id, webhook) VALUES (?, ?, ?) "
                        "ON CONFLICT (token) DO NOTHING",
                        [(h.token, h.run_id, int(h.webhook)) for h in a.hooks_created],
                    )
                if a.hooks_removed:
                    db.executemany(
                        "DELETE FROM hooks WHERE token = ? AND run_id = ?",
                        [(token, a.run_id) for token in a.hooks_removed],
                    )
                if a.messages:
                    stored += self._insert_messages(a.messages, now)
                results.append(True)
            return results, stored

        results, stored = await self.write(body)
        self._announce(stored)
        return results

    async def read_log(self, run_id: str, after_seq: int = 0) -> Log:
        rows = self.db.execute(
            "SELECT seq, kind, at, data FROM events WHERE run_id = ? AND seq > ? ORDER BY seq",
            (run_id, after_seq),
        ).fetchall()
        events = []
        for seq, kind, at, data in rows:
            decoded = json_loads(data, f"run {run_id!r}: event {seq} ({kind}) in {self.path}")
            if not isinstance(decoded, dict):
                raise CorruptLogError(f"run {run_id!r}: event {seq} ({kind}) is not an object")
            events.append(Event(run_id, seq, kind, decoded, at))
        return Log(events)

    async def mark_sent(self, run_id: str, seqs: Sequence[int]) -> None:
        """Nothing to do: an append's messages are queued in its own transaction."""

    async def get_run(self, run_id: str) -> RunInfo | None:
        row = self.db.execute(f"SELECT {_RUN_COLUMNS} FROM runs WHERE id = ?", (run_id,)).fetchone()
        return None if row is None else _run_info(row)

    async def list_runs(
        self,
        *,
        status: str | None = None,
        workflow: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> RunPage:
        where: list[str] = []
        params: list[Any] = []
        # With tags: the first tag's index gives the runs in order (run_tags_by_value),
        # each other tag is one primary-key lookup per run.
        order = "runs"
        sql = f"SELECT {_RUN_COLUMNS} FROM runs"
        for i, (key, value) in enumerate((tags or {}).items()):
            if i == 0:
                order = "t0"
                sql = f"SELECT {_RUN_COLUMNS} FROM run_tags t0 JOIN runs ON runs.id = t0.run_id"
                where.append("t0.key = ? AND t0.value = ?")
            else:
                where.append(
                    "EXISTS (SELECT 1 FROM run_tags t WHERE t.run_id = runs.id "
                    "AND t.key = ? AND t.value = ?)"
                )
            params += [key, value]
        if status is not None:
            where.append("runs.status = ?")
            params.append(status)
        if workflow is not None:
            where.append("runs.workflow = ?")
            params.append(workflow)
        ident = "run_id" if order == "t0" else "id"
        if cursor:
            created, _, last_id = cursor.partition("|")
            try:
                created_at = float(created)
            except ValueError:
                raise ValueError(f"invalid cursor {cursor!r}") from None
            where.append(f"({order}.created_at, {order}.{ident}) < (?, ?)")
            params += [created_at, last_id]
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += f" ORDER BY {order}.created_at DESC, {order}.{ident} DESC LIMIT ?"
        rows = self.db.execute(sql, (*params, limit + 1)).fetchall()
        runs = [_run_info(row) for row in rows[:limit]]
        next_cursor = None
        if len(rows) > limit:
            last = runs[-1]
            next_cursor = f"{last.created_at!r}|{last.id}"
        return RunPage(runs, next_cursor)

    async def get_hook(self, token: str) -> HookInfo | None:
        row = self.db.execute(
            "SELECT token, run_id, webhook FROM hooks WHERE token = ?", (token,)
        ).fetchone()
        return None if row is None else HookInfo(row[0], row[1], bool(row[2]))

    async def next_payload(self, token: str, *, webhook: bool = False) -> HookInfo | None:
        sql = "UPDATE hooks SET n = n + 1 WHERE token = ?"
        if webhook:
            sql += " AND webhook = 1"

        def body() -> Any:
            return self.db.execute(sql + " RETURNING run_id, webhook, n", (token,)).fetchone()

        row = await self.write(body)
        return None if row is None else HookInfo(token, row[0], bool(row[1]), int(row[2]))

    async def prune(self, ended_before: float, limit: int) -> int:
        """Delete up to ``limit`` runs that ended before ``ended_before``, with their
        logs, messages and hooks."""

        def body() -> int:
            rows = self.db.execute(
                "SELECT id FROM runs WHERE status IN ('completed', 'failed', 'cancelled') "
                "AND updated_at < ? LIMIT ?",
                (ended_before, limit),
            ).fetchall()
            ids = [(row[0],) for row in rows]
            for table, column in (
                ("events", "run_id"),
                ("messages", "run_id"),
                ("hooks", "run_id"),
                ("run_tags", "run_id"),
                ("stream_chunks", "run_id"),
                ("stream_writers", "run_id"),
                ("runs", "id"),
            ):
                self.db.executemany(f"DELETE FROM {table} WHERE {column} = ?", ids)
            return len(ids)

        return await self.write(body)

    async def set_tags(self, run_id: str, tags: Mapping[str, str]) -> None:
        """Upsert the run's tags (the index takes the run's creation time, its order)."""
        rows = [(run_id, key, value, run_id) for key, value in tags.items()]
        await self.write(
            lambda: self.db.executemany(
                "INSERT INTO run_tags (run_id, key, value, created_at) "
                "SELECT ?, ?, ?, created_at FROM runs WHERE id = ? "
                "ON CONFLICT (run_id, key) DO UPDATE SET value = excluded.value",
                rows,
            )
        )

    # -- Streams: a row per chunk; a row per writer counts what it wrote ------------------
    async def write_chunks(self, write: ChunkWrite) -> int:
        key = (write.run_id, write.stream)

        def body() -> int:
            db = self.db
            row = db.execute(
                "SELECT written FROM stream_writers WHERE run_id = ? AND stream = ? AND writer = ?",
                (*key, write.writer),
            ).fetchone()
            written = int(row[0]) if row else 0
            new = write.chunks[max(0, written - write.start) :]
            (length,) = db.execute(
                "SELECT coalesce(max(idx) + 1, 0) FROM stream_chunks WHERE run_id = ? "
                "AND stream = ?",
                key,
            ).fetchone()
            db.executemany(
                "INSERT INTO stream_chunks (run_id, stream, idx, data) VALUES (?, ?, ?, ?)",
                [(*key, length + i, text) for i, text in enumerate(new)],
            )
            db.execute(
                "INSERT INTO stream_writers (run_id, stream, writer, written) "
                "VALUES (?, ?, ?, ?) ON CONFLICT (run_id, stream, writer) "
                "DO UPDATE SET written = excluded.written",
                (*key, write.writer, max(written, write.start + len(write.chunks))),
            )
            return int(length) + len(new)

        return await self.write(body)

    async def read_chunks(self, run_id: str, stream: str, start: int, limit: int) -> list[str]:
        rows = self.db.execute(
            "SELECT data FROM stream_chunks WHERE run_id = ? AND stream = ? AND idx >= ? "
            "ORDER BY idx LIMIT ?",
            (run_id, stream, start, limit),
        ).fetchall()
        return [row[0] for row in rows]

    async def list_streams(self, run_id: str) -> list[StreamInfo]:
        rows = self.db.execute(
            "SELECT stream, max(idx) + 1 FROM stream_chunks WHERE run_id = ? "
            "GROUP BY stream ORDER BY stream",
            (run_id,),
        ).fetchall()
        return [StreamInfo(row[0], int(row[1])) for row in rows]

    async def runs_held_by(self, worker_id: str, limit: int) -> list[str]:
        rows = self.db.execute(
            "SELECT id FROM runs WHERE holder = ? AND status IN ('pending', 'running') LIMIT ?",
            (worker_id, limit),
        ).fetchall()
        return [row[0] for row in rows]

    # -- Queue ---------------------------------------------------------------------
    async def send(self, messages: Sequence[Outgoing]) -> None:
        now = self.clock.now()
        stored = await self.write(lambda: self._insert_messages(messages, now))
        self._announce(stored)

    async def ack(self, rows: Sequence[int]) -> None:
        def body() -> None:
            self.db.executemany("DELETE FROM messages WHERE id = ?", [(r,) for r in rows])
            self.db.executemany("DELETE FROM taken WHERE message = ?", [(r,) for r in rows])

        await self.write(body)

    async def take(self, row: int) -> bool:
        """Take a ``step`` message (any worker may run a remote step's attempt): it is
        still queued and no other live worker has taken it. Read and written in one
        transaction, so two workers never both take it; a dead taker's goes to the next."""

        def body() -> bool:
            cur = self.db.execute(
                "INSERT INTO taken (message, worker) SELECT ?, ? "
                "WHERE EXISTS (SELECT 1 FROM messages WHERE id = ?) "
                "ON CONFLICT (message) DO UPDATE SET worker = excluded.worker "
                "WHERE taken.worker = excluded.worker "
                "OR taken.worker NOT IN (SELECT id FROM workers WHERE until >= ?)",
                (row, self.worker_id, row, time.time()),
            )
            return cur.rowcount == 1

        return await self.write(body)

    def data_version(self) -> int:
        return int(self.db.execute("PRAGMA data_version").fetchone()[0])

    async def claimable(
        self, workflows: list[str], known: set[int], after: int = 0
    ) -> list[StoredMessage]:
        """Messages (with ``id > after``) of runs this process may take: its own,
        unowned, or a dead worker's (liveness read here, from the heartbeats); and
        ``step`` messages of any run that no other live worker has taken."""
        now = time.time()
        rows = self.db.execute(
            "SELECT m.id, m.run_id, m.msg_id, m.kind, m.data, m.due FROM messages m "
            "JOIN runs r ON r.id = m.run_id "
            "WHERE m.id > ? AND r.workflow IN (SELECT value FROM json_each(?)) "
            "AND (r.owner IS NULL OR r.owner = ? "
            "OR r.owner NOT IN (SELECT id FROM workers WHERE until >= ?) "
            "OR (m.kind = 'step' AND NOT EXISTS (SELECT 1 FROM taken t WHERE t.message = m.id "
            "AND t.worker != ? AND t.worker IN (SELECT id FROM workers WHERE until >= ?)))) "
            "ORDER BY m.id",
            (after, _dumps(workflows), self.worker_id, now, self.worker_id, now),
        ).fetchall()
        return [StoredMessage(*row) for row in rows if row[0] not in known]

    async def claim(self, run_id: str) -> bool:
        """Take ownership of a run that is unowned, ours, or a dead worker's. Whether its
        owner is alive is read in the same transaction, never from a cached list: a
        worker that has just started (its first heartbeat newer than a list) keeps its
        runs."""

        def body() -> bool:
            cur = self.db.execute(
                "UPDATE runs SET owner = ? WHERE id = ? AND (owner IS NULL OR owner = ? "
                "OR owner NOT IN (SELECT id FROM workers WHERE until >= ?))",
                (self.worker_id, run_id, self.worker_id, time.time()),
            )
            if cur.rowcount == 1:
                self.owned.add(run_id)
            return cur.rowcount == 1

        return await self.write(body)

    # -- Workers ---------------------------------------------------------------------
    async def heartbeat(self, worker_id: str, until: float) -> None:
        alive = until >= time.time()
        if alive and worker_id == self.worker_id:
            self.locks.hold(worker_id)  # before the heartbeat: see _liveness
        await self.write(
            lambda: self.db.execute(
                "INSERT OR REPLACE INTO workers (id, until) VALUES (?, ?)", (worker_id, until)
            )
        )
        if not alive and worker_id == self.worker_id:
            self.locks.release()  # ended cleanly: its heartbeat already says so

    async def expiry(self, worker_id: str) -> float | None:
        row = self.db.execute("SELECT until FROM workers WHERE id = ?", (worker_id,)).fetchone()
        if row is None:
            return None
        until = float(row[0])
        if until >= time.time() and self.locks.alive(worker_id) is False:
            with contextlib.suppress(sqlite3.OperationalError):  # locked: the next look reaps
                self._reap([worker_id])
            return 0.0  # its process is gone: its heartbeat no longer holds
        return until

    def reap(self) -> list[str]:
        """Expire the heartbeats of workers whose process is gone (their lock is free),
        so that every query of liveness (claims, sweeps) sees them dead from now on,
        not once their lease runs out. Returns those workers."""
        rows = self.db.execute(
            "SELECT id FROM workers WHERE until >= ? AND id != ?", (time.time(), self.worker_id)
        ).fetchall()
        dead = [row[0] for row in rows if self.locks.alive(row[0]) is False]
        if dead:
            self._reap(dead)
        return dead

    def _reap(self, dead: list[str]) -> None:
        self._write(
            lambda: self.db.executemany(
                "UPDATE workers SET until = 0 WHERE id = ?", [(w,) for w in dead]
            )
        )
        for worker in dead:
            self.locks.discard(worker)

    async def expired(self, before: float, limit: int) -> list[str]:
        rows = self.db.execute(
            "SELECT id FROM workers WHERE until < ? ORDER BY until LIMIT ?", (before, limit)
        ).fetchall()
        return [row[0] for row in rows]

    def live_workers(self) -> list[str]:
        """The workers whose heartbeat holds now and whose process is not known to be
        gone (those are reaped first), sorted."""
        with contextlib.suppress(sqlite3.OperationalError):  # locked: the next look reaps
            self.reap()
        rows = self.db.execute(
            "SELECT id FROM workers WHERE until >= ? ORDER BY id", (time.time(),)
        ).fetchall()
        return [row[0] for row in rows]

    async def forget(self, worker_id: str) -> None:
        await self.write(lambda: self.db.execute("DELETE FROM workers WHERE id = ?", (worker_id,)))
        if worker_id != self.worker_id:
            self.locks.discard(worker_id)

    def get_meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        self._write(
            lambda: self.db.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value)
            )
        )


class Checkpointer:
    """Moves the WAL into the database on a thread of its own, off the event loop.

    SQLite's automatic checkpoint runs inside whichever commit crosses the
    threshold, so every few hundred steps one step paid several milliseconds.
    A passive checkpoint from another connection waits for no reader or
    writer; the writer's own automatic checkpoint stays as a backstop for
    when this one cannot keep up.
    """

    def __init__(self, path: str, interval: float = 0.25) -> None:
        self.path = path
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="worldflow-checkpoint", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        try:
            db = _Connection(self.path)  # a checkpoint is inside SQLite too: no fork in it
        except sqlite3.Error:
            return
        try:
            db.execute("PRAGMA busy_timeout = 100")
            while not self._stop.wait(self.interval):
                with contextlib.suppress(sqlite3.Error):  # busy: the next round will do
                    db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        finally:
            db.close()
