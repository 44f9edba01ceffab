"""PostgreSQL storage for the postgres world: runs, event logs, hooks, messages, workers.

It is three of the World's parts at once, as the local world's store is:
:class:`~worldflow.world.Storage`, :class:`~worldflow.world.Workers`
(heartbeats in the same database) and the durable half of the queue (the
``messages`` table, written in the same transaction as the append that sends
them: ``transactional_messages``).

One round trip per group commit. The engine hands :meth:`Store.append` every
append that piled up while the previous one was in flight; they are written by
*one* statement (data-modifying CTEs reading one JSON document: the events,
the runs' projection, hooks, messages, and a ``pg_notify`` for the messages
other workers must see; see :mod:`._sql`), which the server runs as one
transaction. The
events' primary key ``(run_id, seq)`` is the fence: if another writer took a
sequence number first, the statement fails whole, and the group is written
again one append at a time, each under a savepoint, so that only the appends
that lost (and the later appends of the same run) fail.

Messages this process inserts for a run it is executing, due now, are
claimed by it in the same statement and handed straight to its own engine
(no round trip through the table and a notification); everything else is
claimed by whichever worker takes it first (:mod:`._queue`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from worldflow.world import (
    TERMINAL,
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
    json_dumps,
    json_loads,
)

from ._errors import PostgresError, explain
from ._liveness import KEY_PREFIX, LifeLock, reap_sql
from ._settings import PostgresSettings, describe
from ._sql import Group, Sql

if TYPE_CHECKING:
    from psycopg import AsyncConnection
    from psycopg_pool import AsyncConnectionPool

__all__ = ["Store", "StoredMessage"]

log = logging.getLogger("worldflow.postgres")

T = TypeVar("T")

#: Seconds between looks for workers whose session lock is gone (see _liveness).
REAP_INTERVAL = 0.5
#: At most this many runs are remembered as executed here (a hint for claiming messages).
ACTIVE_RUNS = 100_000
#: PostgreSQL's text cannot hold it: an id or token with one can be in no row.
NUL = "\x00"


@dataclasses.dataclass(slots=True)
class StoredMessage:
    """A row of the messages table, as a consumer got it."""

    row: int
    run_id: str
    msg_id: str
    kind: str
    data: str
    due: float
    key: str | None
    attempts: int


def _message(row: Sequence[Any]) -> StoredMessage:
    return StoredMessage(
        int(row[0]), row[1], row[2], row[3], row[4], float(row[5]), row[6], int(row[7])
    )


def _run_info(row: Sequence[Any]) -> RunInfo:
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


class Store:
    """The tables of one postgres world schema, through a pool of async connections."""

    def __init__(self, settings: PostgresSettings, worker_id: str, clock: Clock) -> None:
        # Imported here, when a World is built: importing the package needs no driver.
        import psycopg
        import psycopg_pool

        self._psycopg = psycopg
        self._pool_module = psycopg_pool
        self.settings = settings
        self.worker_id = worker_id
        self.clock = clock
        self._pool: AsyncConnectionPool[Any] | None = None
        self._opening: asyncio.Lock | None = None
        self._writer: AsyncConnection[Any] | None = None
        self._writing = asyncio.Lock()
        self._closed = False
        #: The queue's hand-off while this process serves: messages this store claimed
        #: for it as it inserted them.
        self.local: Callable[[list[StoredMessage]], None] | None = None
        #: Runs this process wrote to last (a hint: their messages due now are claimed here).
        self.active: OrderedDict[str, None] = OrderedDict()
        #: Claim this process's own messages as they are inserted (the benchmark turns it
        #: off to measure what it saves).
        self.claim_own = True
        self._creates: list[tuple[RunCreate, asyncio.Future[tuple[RunInfo, bool]]]] = []
        self._wanted: dict[str, list[asyncio.Future[RunInfo | None]]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.writes = 0  # write statements sent (the benchmark counts them)
        self.messages_queued = 0
        self._sql = Sql(f'"{settings.schema}"')
        #: This worker's session lock, which tells others at once that its process died.
        self.life = LifeLock(settings.url, connect_options(settings), settings.schema, worker_id)
        self._reap = reap_sql(f'"{settings.schema}"')
        self._reaped_at = 0.0
        self._life_check: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"<postgres {describe(self.settings.url)} schema={self.settings.schema}>"

    # -- connections -----------------------------------------------------------------
    async def _open(self) -> AsyncConnectionPool[Any]:
        if self._opening is None:
            self._opening = asyncio.Lock()
        async with self._opening:
            if self._pool is not None:
                return self._pool
            if self._closed:
                raise PostgresError(f"{self!r} is closed")
            s = self.settings
            pool = self._pool_module.AsyncConnectionPool(
                s.url,
                min_size=s.pool_min,
                max_size=s.pool_max,
                open=False,
                timeout=max(10.0, 2 * s.connect_timeout),
                name=f"worldflow-{s.schema}",
                kwargs=connect_options(s),
            )
            try:
                await pool.open(wait=True, timeout=s.connect_timeout + 1)
            except Exception as exc:
                await pool.close()
                raise explain(exc, f"connect to {describe(s.url)}", *self._where) from exc
            self._pool = pool
            return pool

    @property
    def _where(self) -> tuple[str, str]:
        return self.settings.url, self.settings.schema

    async def _run(
        self, what: str, body: Callable[[AsyncConnection[Any]], Awaitable[T]], retry: bool = True
    ) -> T:
        """Run ``body`` on a pooled connection, errors translated. A connection that turns
        out broken (the server restarted, the backend was terminated) is replaced and
        ``body`` runs once more on a new one."""
        pool = self._pool or await self._open()
        operational = self._psycopg.OperationalError
        for attempt in (1, 2):
            try:
                async with pool.connection() as conn:
                    return await body(conn)
            except operational as exc:
                if retry and attempt == 1 and not self._closed:
                    await self._recover(pool, what, exc)
                    continue
                raise explain(exc, what, *self._where) from exc
            except (self._psycopg.Error, self._pool_module.PoolTimeout) as exc:
                raise explain(exc, what, *self._where) from exc
        raise AssertionError("unreachable")

    async def _recover(self, pool: AsyncConnectionPool[Any], what: str, exc: Exception) -> None:
        """A connection broke (the server restarted, a backend was terminated): the idle
        ones are likely broken too. Check them all (the pool replaces the dead ones)
        before trying again."""
        log.info("worldflow: %s: %s; checking the pool's connections, trying again", what, exc)
        with contextlib.suppress(Exception):
            await pool.check()

    async def _write(self, what: str, body: Callable[[AsyncConnection[Any]], Awaitable[T]]) -> T:
        """Like :meth:`_run`, on the connection kept for appends: the engine makes one
        append call at a time, and a pool checkout per step costs more than it saves."""
        pool = self._pool or await self._open()
        async with self._writing:
            for attempt in (1, 2):
                conn = self._writer
                try:
                    if conn is None:
                        conn = self._writer = await pool.getconn()
                    return await body(conn)
                except self._psycopg.OperationalError as exc:
                    await self._drop_writer()
                    if attempt == 1 and not self._closed:
                        await self._recover(pool, what, exc)
                        continue
                    raise explain(exc, what, *self._where) from exc
                except (self._psycopg.Error, self._pool_module.PoolTimeout) as exc:
                    if conn is not None and conn.info.transaction_status:
                        await self._drop_writer()  # left in a transaction: not reused
                    raise explain(exc, what, *self._where) from exc
            raise AssertionError("unreachable")

    async def _drop_writer(self) -> None:
        conn, self._writer = self._writer, None
        if conn is not None and self._pool is not None:
            with contextlib.suppress(Exception):
                await self._pool.putconn(conn)  # the pool discards a broken one

    async def close(self) -> None:
        self._closed = True
        await self._end_life()
        await self._drop_writer()
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close(timeout=2.0)

    # -- Storage: creating runs ------------------------------------------------------------
    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """A task of the store's own (a batch of creates or reads), kept until it ends."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _mark_active(self, run_id: str, status: str | None = None) -> None:
        if status in TERMINAL:
            self.active.pop(run_id, None)
            return
        self.active[run_id] = None
        self.active.move_to_end(run_id)
        if len(self.active) > ACTIVE_RUNS:
            self.active.popitem(last=False)

    def _mine(self, out: Outgoing, due: float, now: float) -> bool:
        """Whether this process claims the message as it inserts it: it serves, the
        message is due, and its run is one this process is executing."""
        return (
            self.claim_own
            and self.local is not None
            and due <= now
            and out.message.run_id in self.active
        )

    async def create_run(self, create: RunCreate) -> tuple[RunInfo, bool]:
        """Create a run; runs created during one turn of the loop share one statement."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[tuple[RunInfo, bool]] = loop.create_future()
        self._creates.append((create, done))
        if len(self._creates) == 1:
            self._spawn(self._create_pending())
        return await done

    async def _create_pending(self) -> None:
        items, self._creates = self._creates, []
        first: dict[str, RunCreate] = {}
        for create, done in items:
            if NUL in create.run_id or NUL in create.workflow:
                done.set_exception(
                    ValueError(
                        f"run id {create.run_id!r}: the postgres world cannot store a NUL "
                        "character in a run id or workflow name"
                    )
                )
                continue
            first.setdefault(create.run_id, create)
        if not first:
            return
        now = self.clock.now()
        group = Group()
        for create in first.values():
            e = create.event
            group.created.append(
                {
                    "id": create.run_id,
                    "workflow": create.workflow,
                    "at": e.at,
                    "kind": e.kind,
                    "data": json_dumps(e.data),
                    "tags": create.tags or None,
                }
            )
            for out in create.messages:
                due = now if out.not_before is None else out.not_before
                # A run created here is executed here: its start is claimed for this process.
                mine = self.claim_own and self.local is not None and due <= now
                group.add_message(out, due, mine)
        sql, params = self._sql.create(group, self.worker_id, self.settings)

        async def body(conn: AsyncConnection[Any]) -> tuple[set[str], list[StoredMessage]]:
            cur = await conn.execute(sql, params)
            self.writes += 1
            created: set[str] = set()
            stored: list[StoredMessage] = []
            for row in await cur.fetchall():
                if row[0] == "r":
                    created.add(row[2])
                elif row[9]:  # claimed here as it was inserted
                    stored.append(_message(row[1:9]))
            return created, stored

        try:
            created, stored = await self._run(f"create {len(first)} run(s)", body)
            missing = [run_id for run_id in first if run_id not in created]
            existing = {info.id: info for info in await self._get_runs(missing)} if missing else {}
        except Exception as exc:
            for _, done in items:
                if not done.done():
                    done.set_exception(exc)
            return
        self.messages_queued += len(stored)
        for create, done in items:
            if done.done():
                continue
            if create.run_id in created and first[create.run_id] is create:
                at = create.event.at
                self._mark_active(create.run_id)
                made = RunInfo(
                    create.run_id, create.workflow, "pending", at, at, 1, tags=create.tags
                )
                done.set_result((made, True))
            else:
                info = existing.get(create.run_id)
                if info is None:
                    done.set_exception(
                        PostgresError(f"run {create.run_id!r} was neither created nor found")
                    )
                else:
                    done.set_result((info, False))
        # After the creators have their answers (so the engine primes the runs first).
        if stored and self.local is not None:
            self.local(stored)

    # -- Storage: the write path --------------------------------------------------------------
    def _group(self, appends: Sequence[Append], now: float) -> Group:
        group = Group()
        ops: dict[str, list[tuple[bool, str]]] = {}
        for a in appends:
            for i, e in enumerate(a.events, a.expected_seq + 1):
                group.add_event(a.run_id, i, e.kind, e.at, json_dumps(e.data))
            if a.status is not None:
                row = group.run(a.run_id)
                row["status"] = a.status
                row["updated_at"] = a.events[-1].at if a.events else now
                row["output"] = None if a.output is None else json_dumps(a.output)
                row["error"] = None if a.error is None else json_dumps(a.error)
            if a.holder_changed:
                row = group.run(a.run_id)
                row["set_holder"] = True
                row["holder"] = a.holder
            for token in a.hooks_removed:
                if NUL not in token:
                    ops.setdefault(token, []).append((False, a.run_id))
            for hook in a.hooks_created:
                if NUL in hook.token:  # no row can hold it: the hook can never be resumed
                    log.error(
                        "worldflow: run %r: hook token %r has a NUL character", a.run_id, hook.token
                    )
                    continue
                ops.setdefault(hook.token, []).append((True, hook.run_id))
                group.hooks_created[hook.token] = {
                    "token": hook.token,
                    "run_id": hook.run_id,
                    "webhook": hook.webhook,
                }
            for out in a.messages:
                due = now if out.not_before is None else out.not_before
                group.add_message(out, due, self._mine(out, due, now))
        for token, changes in ops.items():
            removed = [run_id for created, run_id in changes if not created]
            if removed and any(created for created, _ in changes):
                group.conflict = True  # the order of the two matters: one append at a time
            group.hooks_deleted += [{"token": token, "run_id": run_id} for run_id in removed]
            if not changes[-1][0]:
                group.hooks_created.pop(token, None)
        return group

    async def append(self, appends: Sequence[Append]) -> list[bool]:
        if not appends:
            return []
        now = self.clock.now()
        for a in appends:  # claims are decided on whether the run is executed here
            self._mark_active(a.run_id)
        group = self._group(appends, now)
        fast = not group.conflict and all(a.events for a in appends)
        unique = self._psycopg.errors.UniqueViolation

        async def body(conn: AsyncConnection[Any]) -> tuple[list[bool], list[StoredMessage]]:
            if fast:
                sql, params = self._sql.append(group, self.worker_id, self.settings)
                try:
                    cur = await conn.execute(sql, params)
                    self.writes += 1
                    rows = await cur.fetchall() if cur.description else []
                    return [True] * len(appends), _claimed(rows)
                except unique:
                    pass  # another writer took a sequence number: one append at a time
            return await self._append_one_by_one(conn, appends, now)

        results, stored = await self._write(f"append to {len(appends)} run(s)", body)
        for a, ok in zip(appends, results, strict=True):
            if ok:
                self._mark_active(a.run_id, a.status)
            else:
                self.active.pop(a.run_id, None)
        self.messages_queued += len(stored)
        if stored and self.local is not None:
            self.local(stored)
        return results

    async def _append_one_by_one(
        self, conn: AsyncConnection[Any], appends: Sequence[Append], now: float
    ) -> tuple[list[bool], list[StoredMessage]]:
        """Each append under a savepoint of one transaction: a lost race rolls back only
        that append (and the later ones of its run)."""
        unique = self._psycopg.errors.UniqueViolation
        results: list[bool] = []
        lost: set[str] = set()
        stored: list[StoredMessage] = []
        async with conn.transaction():
            for a in appends:
                if a.run_id in lost:
                    results.append(False)
                    continue
                try:
                    async with conn.transaction():  # a savepoint
                        if not a.events and not await self._ends_at(conn, a):
                            raise unique()
                        group = self._group([a], now)
                        sql, params = self._sql.append(group, self.worker_id, self.settings)
                        cur = await conn.execute(sql, params)
                        self.writes += 1
                        rows = await cur.fetchall() if cur.description else []
                except unique:
                    lost.add(a.run_id)
                    results.append(False)
                    continue
                stored += _claimed(rows)
                results.append(True)
        return results, stored

    async def _ends_at(self, conn: AsyncConnection[Any], a: Append) -> bool:
        """An append without events: does the log still end at its expected_seq?"""
        cur = await conn.execute(self._sql.last_seq, (a.run_id,))
        row = await cur.fetchone()
        return (row[0] if row else 0) == a.expected_seq

    # -- Storage: reads -----------------------------------------------------------------------
    async def read_log(self, run_id: str, after_seq: int = 0) -> Log:
        if NUL in run_id:
            return Log([])

        async def body(conn: AsyncConnection[Any]) -> list[Any]:
            cur = await conn.execute(self._sql.read_log, (run_id, after_seq))
            return await cur.fetchall()

        rows: list[Any] = await self._reading(f"read the log of run {run_id!r}", body, [])
        events = []
        for seq, kind, at, data in rows:
            decoded = json_loads(data, f"run {run_id!r}: event {seq} ({kind})")
            if not isinstance(decoded, dict):
                raise CorruptLogError(f"run {run_id!r}: event {seq} ({kind}) is not an object")
            events.append(Event(run_id, seq, kind, decoded, at))
        return Log(events)

    async def _reading(
        self, what: str, body: Callable[[AsyncConnection[Any]], Awaitable[T]], empty: T
    ) -> T:
        """A read; a read-only world whose schema was never created reads as empty."""
        try:
            return await self._run(what, body)
        except Exception as exc:
            cause = exc.__cause__
            missing = self._psycopg.errors.UndefinedTable, self._psycopg.errors.InvalidSchemaName
            if self.settings.read_only and isinstance(cause, missing):
                return empty
            raise

    async def mark_sent(self, run_id: str, seqs: Sequence[int]) -> None:
        """Nothing to do: an append's messages are queued in its own transaction."""

    async def get_run(self, run_id: str) -> RunInfo | None:
        """A run's projection; the runs asked for during one turn of the loop are read by
        one query (every ``run.result()`` of a process polls, and they come in waves)."""
        if NUL in run_id:
            return None
        loop = asyncio.get_running_loop()
        done: asyncio.Future[RunInfo | None] = loop.create_future()
        self._wanted.setdefault(run_id, []).append(done)
        if len(self._wanted) == 1 and len(self._wanted[run_id]) == 1:
            self._spawn(self._get_wanted())
        return await done

    async def _get_wanted(self) -> None:
        wanted, self._wanted = self._wanted, {}
        try:
            found = {info.id: info for info in await self._get_runs(list(wanted))}
        except Exception as exc:
            for futures in wanted.values():
                for done in futures:
                    if not done.done():
                        done.set_exception(exc)
            return
        for run_id, futures in wanted.items():
            for done in futures:
                if not done.done():
                    done.set_result(found.get(run_id))

    async def _get_runs(self, run_ids: list[str]) -> list[RunInfo]:
        async def body(conn: AsyncConnection[Any]) -> list[Any]:
            cur = await conn.execute(self._sql.get_runs, (run_ids,))
            return await cur.fetchall()

        rows: list[Any] = await self._reading(f"read run(s) {run_ids[:3]!r}", body, [])
        return [_run_info(row) for row in rows]

    async def list_runs(
        self,
        *,
        status: str | None = None,
        workflow: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> RunPage:
        s = self._sql.s
        where: list[str] = []
        params: list[Any] = []
        # With tags: the first tag's index gives the runs in order (run_tags_by_value),
        # each other tag is one primary-key lookup per run.
        order, ident = "runs", "id"
        sql = f"SELECT {self._sql.run_columns} FROM {s}.runs"
        for i, (key, value) in enumerate((tags or {}).items()):
            if NUL in key or NUL in value:
                return RunPage([], None)
            if i == 0:
                order, ident = "t0", "run_id"
                sql = (
                    f"SELECT {self._sql.run_columns} FROM {s}.run_tags t0 "
                    f"JOIN {s}.runs ON runs.id = t0.run_id"
                )
                where.append("t0.key = %s AND t0.value = %s")
            else:
                where.append(
                    f"EXISTS (SELECT 1 FROM {s}.run_tags t WHERE t.run_id = runs.id "
                    "AND t.key = %s AND t.value = %s)"
                )
            params += [key, value]
        if status is not None:
            where.append("runs.status = %s")
            params.append(status)
        if workflow is not None:
            where.append("runs.workflow = %s")
            params.append(workflow)
        if cursor:
            created, _, last_id = cursor.partition("|")
            try:
                created_at = float(created)
            except ValueError:
                raise ValueError(f"invalid cursor {cursor!r}") from None
            where.append(f"({order}.created_at, {order}.{ident}) < (%s, %s)")
            params += [created_at, last_id]
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += f" ORDER BY {order}.created_at DESC, {order}.{ident} DESC LIMIT %s"
        params.append(limit + 1)

        async def body(conn: AsyncConnection[Any]) -> list[Any]:
            cur = await conn.execute(sql, params)
            return await cur.fetchall()

        rows: list[Any] = await self._reading("list runs", body, [])
        runs = [_run_info(row) for row in rows[:limit]]
        next_cursor = None
        if len(rows) > limit:
            last = runs[-1]
            next_cursor = f"{last.created_at!r}|{last.id}"
        return RunPage(runs, next_cursor)

    async def get_hook(self, token: str) -> HookInfo | None:
        if NUL in token:
            return None

        async def body(conn: AsyncConnection[Any]) -> Any:
            cur = await conn.execute(self._sql.get_hook, (token,))
            return await cur.fetchone()

        row = await self._reading(f"read hook {token!r}", body, None)
        return None if row is None else HookInfo(row[0], row[1], bool(row[2]), int(row[3]))

    async def next_payload(self, token: str, *, webhook: bool = False) -> HookInfo | None:
        if NUL in token:
            return None
        sql = self._sql.next_payload_webhook if webhook else self._sql.next_payload

        async def body(conn: AsyncConnection[Any]) -> Any:
            cur = await conn.execute(sql, (token,))
            self.writes += 1
            return await cur.fetchone()

        row = await self._run(f"count a payload of hook {token!r}", body)
        return None if row is None else HookInfo(token, row[0], bool(row[1]), int(row[2]))

    async def runs_held_by(self, worker_id: str, limit: int) -> list[str]:
        async def body(conn: AsyncConnection[Any]) -> list[Any]:
            cur = await conn.execute(self._sql.held_by, (worker_id, limit))
            return await cur.fetchall()

        rows = await self._run(f"read the runs held by {worker_id!r}", body)
        return [row[0] for row in rows]

    async def set_tags(self, run_id: str, tags: Mapping[str, str]) -> None:
        async def body(conn: AsyncConnection[Any]) -> None:
            await conn.execute(self._sql.set_tags, (json_dumps(dict(tags)), run_id))
            self.writes += 1

        await self._run(f"tag run {run_id!r}", body)

    # -- Streams: a row per chunk, a row per writer ------------------------------------------
    async def write_chunks(self, write: ChunkWrite) -> int:
        sql = self._sql
        key = (write.run_id, write.stream)

        async def body(conn: AsyncConnection[Any]) -> int:
            async with conn.transaction():
                await conn.execute(sql.stream_lock, (f"{write.stream}#{write.run_id}",))
                cur = await conn.execute(sql.stream_written, (*key, write.writer))
                row = await cur.fetchone()
                written = int(row[0]) if row else 0
                new = write.chunks[max(0, written - write.start) :]
                cur = await conn.execute(sql.stream_length, key)
                row = await cur.fetchone()
                length = int(row[0]) if row else 0
                if new:
                    await conn.execute(sql.stream_insert, (*key, length, json_dumps(new)))
                count = max(written, write.start + len(write.chunks))
                await conn.execute(sql.stream_writer, (*key, write.writer, count))
            self.writes += 1
            return length + len(new)

        return await self._run(f"write to stream {write.stream!r} of run {write.run_id!r}", body)

    async def read_chunks(self, run_id: str, stream: str, start: int, limit: int) -> list[str]:
        if NUL in run_id:
            return []

        async def body(conn: AsyncConnection[Any]) -> list[Any]:
            cur = await conn.execute(self._sql.read_chunks, (run_id, stream, start, limit))
            return await cur.fetchall()

        rows: list[Any] = await self._reading(f"read stream {stream!r} of run {run_id!r}", body, [])
        return [row[0] for row in rows]

    async def list_streams(self, run_id: str) -> list[StreamInfo]:
        if NUL in run_id:
            return []

        async def body(conn: AsyncConnection[Any]) -> list[Any]:
            cur = await conn.execute(self._sql.list_streams, (run_id,))
            return await cur.fetchall()

        rows: list[Any] = await self._reading(f"list the streams of run {run_id!r}", body, [])
        return [StreamInfo(row[0], int(row[1])) for row in rows]

    async def prune(self, ended_before: float, limit: int) -> int:
        """Delete up to ``limit`` runs that ended before ``ended_before``, with their
        logs, messages and hooks (one statement)."""

        async def body(conn: AsyncConnection[Any]) -> int:
            cur = await conn.execute(self._sql.prune, (ended_before, limit))
            self.writes += 1
            row = await cur.fetchone()
            return int(row[0]) if row else 0

        return await self._run("delete old runs", body)

    # -- Queue: the messages table ---------------------------------------------------------------
    async def send(self, messages: Sequence[Outgoing]) -> None:
        now = self.clock.now()
        group = Group()
        for out in messages:
            due = now if out.not_before is None else out.not_before
            group.add_message(out, due, self._mine(out, due, now))
        sql, params = self._sql.send(group, self.worker_id, self.settings)

        async def body(conn: AsyncConnection[Any]) -> list[StoredMessage]:
            cur = await conn.execute(sql, params)
            self.writes += 1
            return _claimed(await cur.fetchall())

        stored = await self._run(f"queue {len(messages)} message(s)", body)
        self.messages_queued += len(stored)
        if stored and self.local is not None:
            self.local(stored)

    async def claim(
        self, workflows: list[str], limit: int
    ) -> tuple[list[StoredMessage], float | None]:
        """Take up to ``limit`` due messages of runs of these workflows (or of no run) for
        this worker, under a lease; and when the next one not yet due comes due (the
        World's clock), in the same round trip."""
        if time.monotonic() - self._reaped_at >= REAP_INTERVAL:
            self._reaped_at = time.monotonic()
            try:
                await self.reap()
            except Exception as exc:  # the lease still ends what this did not
                log.warning("worldflow: looking for dead workers failed (%s)", exc)
        now = self.clock.now()
        sql = self._sql
        lease = self.settings.lease

        async def body(conn: AsyncConnection[Any]) -> tuple[list[Any], Any]:
            async with conn.pipeline():
                claimed = await conn.execute(
                    sql.claim, (now, workflows, limit, self.worker_id, lease)
                )
                upcoming = await conn.execute(sql.next_due, (now, workflows))
            return await claimed.fetchall(), await upcoming.fetchone()

        rows, upcoming = await self._run("claim messages", body)
        return [_message(row) for row in rows], (None if upcoming is None else upcoming[0])

    async def ack(self, rows: Sequence[int]) -> None:
        async def body(conn: AsyncConnection[Any]) -> None:
            await conn.execute(self._sql.ack, (list(rows),))
            self.writes += 1

        await self._run(f"delete {len(rows)} delivered message(s)", body)

    async def release(self, row: int, due: float, hidden_for: float | None) -> None:
        """Give a message back, due at ``due`` (World clock); ``hidden_for``: seconds of
        the server's clock before anyone may take it again (for a virtual clock)."""

        async def body(conn: AsyncConnection[Any]) -> None:
            await conn.execute(self._sql.release, (hidden_for, hidden_for, due, row))
            self.writes += 1

        await self._run("give a message back", body)

    async def extend(self, rows: Sequence[int]) -> None:
        """Renew this worker's lease on messages it is still delivering."""

        async def body(conn: AsyncConnection[Any]) -> None:
            await conn.execute(self._sql.extend, (self.settings.lease, list(rows), self.worker_id))

        await self._run("renew the lease of messages", body)

    async def unclaim(self, rows: Sequence[int]) -> None:
        """Give back messages this worker claimed and will not deliver (it stops)."""

        async def body(conn: AsyncConnection[Any]) -> None:
            await conn.execute(self._sql.unclaim, (list(rows), self.worker_id))

        await self._run("give back claimed messages", body, retry=False)

    # -- Workers -------------------------------------------------------------------------------
    async def heartbeat(self, worker_id: str, until: float) -> None:
        alive = until >= time.time()
        if alive and worker_id == self.worker_id and not self._closed:
            if not self.life.held:
                await self._hold_life()  # before the first heartbeat: see _liveness
            elif self._life_check is None or self._life_check.done():
                # Its session may have ended (a server restart): checked beside the
                # heartbeat, which must not wait for a reconnection.
                self._life_check = asyncio.get_running_loop().create_task(self._hold_life())

        async def body(conn: AsyncConnection[Any]) -> None:
            await conn.execute(self._sql.heartbeat, (worker_id, until))

        await self._run("record a heartbeat", body)
        if not alive and worker_id == self.worker_id:
            await self._end_life()  # ended cleanly: its heartbeat already says so

    async def _end_life(self) -> None:
        check, self._life_check = self._life_check, None
        if check is not None and not check.done():
            check.cancel()
            await asyncio.wait([check])  # a check must not take the lock again after this
        await self.life.release()

    async def _hold_life(self) -> None:
        try:
            await self.life.hold()
        except Exception as exc:
            log.warning(
                "worldflow: cannot hold this worker's session lock (%s); other workers "
                "will learn of its end from its lease only",
                exc,
            )

    async def reap(self, only: str | None = None) -> list[str]:
        """Void the heartbeats of workers whose session lock is gone (their process
        died), freeing the messages they had claimed; returns them."""
        params = {
            "now": time.time(),
            "me": self.worker_id,
            "only": only,
            "space": self.life.space & 0xFFFFFFFF,
            "grace": 2 * self.settings.heartbeat + 1.0,
        }

        async def body(conn: AsyncConnection[Any]) -> list[Any]:
            cur = await conn.execute(self._reap, params)
            return await cur.fetchall()

        rows = await self._run("look for dead workers", body)
        for worker, freed in rows:
            log.info(
                "worldflow: worker %s is gone (its session lock was released); "
                "%d of its message(s) freed",
                worker,
                freed,
            )
        return [row[0] for row in rows]

    async def expiry(self, worker_id: str) -> float | None:
        async def body(conn: AsyncConnection[Any]) -> Any:
            cur = await conn.execute(self._sql.expiry, (worker_id,))
            return await cur.fetchone()

        row = await self._run(f"read the heartbeat of {worker_id!r}", body)
        if row is None:
            return None
        until = float(row[0])
        if until >= time.time() and worker_id != self.worker_id:
            try:
                if await self.reap(only=worker_id):
                    return 0.0  # its process is gone: its heartbeat no longer holds
            except Exception as exc:
                log.warning("worldflow: looking for dead workers failed (%s)", exc)
        return until

    async def expired(self, before: float, limit: int) -> list[str]:
        async def body(conn: AsyncConnection[Any]) -> list[Any]:
            cur = await conn.execute(self._sql.expired, (before, limit))
            return await cur.fetchall()

        return [row[0] for row in await self._run("read expired heartbeats", body)]

    async def forget(self, worker_id: str) -> None:
        async def body(conn: AsyncConnection[Any]) -> None:
            await conn.execute(self._sql.forget, (worker_id,))
            meta = f'"{self.settings.schema}".meta'
            await conn.execute(f"DELETE FROM {meta} WHERE key = %s", (KEY_PREFIX + worker_id,))

        await self._run(f"forget worker {worker_id!r}", body)


def _claimed(rows: Sequence[Sequence[Any]]) -> list[StoredMessage]:
    """The messages of an insert's RETURNING rows that were claimed for this process."""
    return [_message(row) for row in rows if row[8]]


def connect_options(settings: PostgresSettings) -> dict[str, Any]:
    """libpq options of every connection: autocommit, a bounded connect, TCP keepalives
    (so that a dead server or network is noticed by a connection that only listens)."""
    import math

    return {
        "autocommit": True,
        "connect_timeout": max(2, math.ceil(settings.connect_timeout)),
        "application_name": "worldflow",
        "keepalives": 1,
        "keepalives_idle": 10,
        "keepalives_interval": 5,
        "keepalives_count": 3,
    }
