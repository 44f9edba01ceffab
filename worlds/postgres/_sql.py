"""The statements of the postgres world's store, and the data one write takes.

Every write is one statement, whatever the number of runs, events, hooks and
messages it writes: :class:`Group` gathers them, and the statement reads them
from one JSON parameter (``json_to_recordset``), which is several times
cheaper to send than psycopg's text arrays (those are escaped in Python, one
element at a time); a few events alone (one step of one run, the common
case) go as ``VALUES`` rows of scalar parameters. Each statement shape is
prepared once per connection (psycopg prepares a query run five times).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from worldflow.world import Outgoing, json_dumps

from ._settings import PostgresSettings

__all__ = ["SERVER_NOW", "Group", "Sql"]

#: The database server's wall clock, in epoch seconds: leases are measured on it, so that
#: the clocks of the workers' machines need not agree.
SERVER_NOW = "extract(epoch from clock_timestamp())"
#: Up to this many events (and nothing else) are inserted as VALUES rows.
VALUES_ROWS = 12


@dataclasses.dataclass
class Group:
    """What one write statement writes: a group of appends, or of new runs."""

    events: list[tuple[str, int, str, float, str]] = dataclasses.field(default_factory=list)
    runs: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    hooks_deleted: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    hooks_created: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    messages: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    created: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    conflict: bool = False  # a hook token both removed and created: written one by one

    def add_event(self, run_id: str, seq: int, kind: str, at: float, data: str) -> None:
        self.events.append((run_id, seq, kind, at, data))

    def add_message(self, out: Outgoing, due: float, mine: bool) -> None:
        m = out.message
        self.messages.append(
            {
                "run_id": m.run_id,
                "msg_id": m.id,
                "kind": m.kind,
                "data": json_dumps(m.data),
                "due": due,
                "dedup": out.key,
                "mine": mine,
            }
        )

    def run(self, run_id: str) -> dict[str, Any]:
        """The projection changes of a run (the last append of the group wins)."""
        found = self.runs.get(run_id)
        if found is None:
            found = self.runs[run_id] = {"id": run_id, "set_holder": False}
        return found

    def document(self) -> str:
        """The JSON parameter: one key per part present."""
        doc: dict[str, Any] = {}
        if self.events:
            doc["e"] = [{"r": r, "s": s, "k": k, "a": a, "d": d} for r, s, k, a, d in self.events]
        if self.runs:
            doc["r"] = list(self.runs.values())
        if self.hooks_deleted:
            doc["hd"] = self.hooks_deleted
        if self.hooks_created:
            doc["hc"] = list(self.hooks_created.values())
        if self.messages:
            doc["m"] = self.messages
        if self.created:
            doc["c"] = self.created
        return json_dumps(doc)


class Sql:
    """The statements of one schema (names quoted once)."""

    def __init__(self, s: str) -> None:
        self.s = s
        self.run_columns = (
            "runs.id, runs.workflow, runs.status, runs.created_at, runs.updated_at, "
            f"(SELECT max(seq) FROM {s}.events e WHERE e.run_id = runs.id), runs.output, "
            f"runs.error, (SELECT json_object_agg(t.key, t.value)::text FROM {s}.run_tags t "
            "WHERE t.run_id = runs.id)"
        )
        self.get_runs = f"SELECT {self.run_columns} FROM {s}.runs WHERE id = ANY(%s)"
        self.read_log = (
            f"SELECT seq, kind, at, data FROM {s}.events WHERE run_id = %s AND seq > %s "
            "ORDER BY seq"
        )
        self.last_seq = f"SELECT max(seq) FROM {s}.events WHERE run_id = %s"
        self.get_hook = f"SELECT token, run_id, webhook, n FROM {s}.hooks WHERE token = %s"
        self.next_payload = (
            f"UPDATE {s}.hooks SET n = n + 1 WHERE token = %s RETURNING run_id, webhook, n"
        )
        self.next_payload_webhook = (
            f"UPDATE {s}.hooks SET n = n + 1 WHERE token = %s AND webhook "
            "RETURNING run_id, webhook, n"
        )
        self.held_by = (
            f"SELECT id FROM {s}.runs WHERE holder = %s AND status IN ('pending', 'running') "
            "LIMIT %s"
        )
        self.prune = f"""
            WITH gone AS (
                DELETE FROM {s}.runs WHERE id IN (
                    SELECT id FROM {s}.runs
                    WHERE status IN ('completed', 'failed', 'cancelled') AND updated_at < %s
                    ORDER BY updated_at LIMIT %s FOR UPDATE SKIP LOCKED)
                RETURNING id),
            e AS (DELETE FROM {s}.events WHERE run_id IN (SELECT id FROM gone)),
            m AS (DELETE FROM {s}.messages WHERE run_id IN (SELECT id FROM gone)),
            h AS (DELETE FROM {s}.hooks WHERE run_id IN (SELECT id FROM gone)),
            t AS (DELETE FROM {s}.run_tags WHERE run_id IN (SELECT id FROM gone)),
            sc AS (DELETE FROM {s}.stream_chunks WHERE run_id IN (SELECT id FROM gone)),
            sw AS (DELETE FROM {s}.stream_writers WHERE run_id IN (SELECT id FROM gone))
            SELECT count(*) FROM gone"""
        self.set_tags = f"""INSERT INTO {s}.run_tags (run_id, key, value, created_at)
            SELECT r.id, x.key, x.value, r.created_at
            FROM {s}.runs r, json_each_text(%s::json) x WHERE r.id = %s
            ON CONFLICT (run_id, key) DO UPDATE SET value = excluded.value"""
        # Writers of one stream take turns (a transaction-level advisory lock on it).
        self.stream_lock = "SELECT pg_advisory_xact_lock(hashtextextended(%s, 1))"
        self.stream_written = (
            f"SELECT written FROM {s}.stream_writers WHERE run_id = %s AND stream = %s "
            "AND writer = %s"
        )
        self.stream_length = (
            f"SELECT coalesce(max(idx) + 1, 0) FROM {s}.stream_chunks "
            "WHERE run_id = %s AND stream = %s"
        )
        self.stream_insert = f"""INSERT INTO {s}.stream_chunks (run_id, stream, idx, data)
            SELECT %s, %s, %s + x.ord - 1, x.data
            FROM json_array_elements_text(%s::json) WITH ORDINALITY AS x(data, ord)"""
        self.stream_writer = f"""INSERT INTO {s}.stream_writers (run_id, stream, writer, written)
            VALUES (%s, %s, %s, %s)
            ON CONFLICT (run_id, stream, writer) DO UPDATE SET written = excluded.written"""
        self.read_chunks = (
            f"SELECT data FROM {s}.stream_chunks WHERE run_id = %s AND stream = %s "
            "AND idx >= %s ORDER BY idx LIMIT %s"
        )
        self.list_streams = (
            f"SELECT stream, max(idx) + 1 FROM {s}.stream_chunks WHERE run_id = %s "
            "GROUP BY stream ORDER BY stream"
        )
        # The parts of a write; each reads its rows from the document (the `doc` CTE).
        self._events = f"""INSERT INTO {s}.events (run_id, seq, kind, at, data)
            SELECT x.r, x.s, x.k, x.a, x.d
            FROM doc, json_to_recordset(doc.d -> 'e') AS x(r text, s int, k text, a float8, d text)"""
        self._runs = f"""UPDATE {s}.runs AS t SET
                status = coalesce(u.status, t.status),
                updated_at = CASE WHEN u.status IS NULL THEN t.updated_at ELSE u.updated_at END,
                output = CASE WHEN u.status IS NULL THEN t.output ELSE u.output END,
                error = CASE WHEN u.status IS NULL THEN t.error ELSE u.error END,
                holder = CASE WHEN u.set_holder THEN u.holder ELSE t.holder END
            FROM doc, json_to_recordset(doc.d -> 'r') AS u(id text, status text,
                updated_at float8, output text, error text, set_holder bool, holder text)
            WHERE t.id = u.id"""
        self._hooks_deleted = f"""DELETE FROM {s}.hooks AS h
            USING doc, json_to_recordset(doc.d -> 'hd') AS x(token text, run_id text)
            WHERE h.token = x.token AND h.run_id = x.run_id"""
        # A token another live run holds stays with that run.
        self._hooks_created = f"""INSERT INTO {s}.hooks (token, run_id, webhook)
            SELECT x.token, x.run_id, x.webhook
            FROM doc, json_to_recordset(doc.d -> 'hc') AS x(token text, run_id text, webhook bool)
            ON CONFLICT (token) DO NOTHING"""
        # Claimed here (mine) or left for any worker, whom a notification wakes.
        self._messages = f"""INSERT INTO {s}.messages
                (run_id, msg_id, kind, data, due, dedup, attempts, claimed_by, claimed_until)
            SELECT u.run_id, u.msg_id, u.kind, u.data, u.due, u.dedup,
                   CASE WHEN u.mine THEN 1 ELSE 0 END,
                   CASE WHEN u.mine THEN %(worker)s END,
                   CASE WHEN u.mine THEN {SERVER_NOW} + %(lease)s END
            FROM doc, json_to_recordset(doc.d -> 'm') AS u(run_id text, msg_id text, kind text,
                data text, due float8, dedup text, mine bool)
            {{where}}
            ON CONFLICT (dedup) DO NOTHING
            RETURNING id, run_id, msg_id, kind, data, due, dedup, attempts,
                claimed_by IS NOT NULL AS mine,
                CASE WHEN claimed_by IS NULL THEN pg_notify(%(channel)s, '') END AS notified"""
        self.claim = f"""
            WITH c AS (
                SELECT m.id FROM {s}.messages m LEFT JOIN {s}.runs r ON r.id = m.run_id
                WHERE m.due <= %s
                  AND (m.claimed_until IS NULL OR m.claimed_until < {SERVER_NOW})
                  AND (r.workflow = ANY(%s) OR r.id IS NULL)
                ORDER BY m.due LIMIT %s
                FOR UPDATE OF m SKIP LOCKED)
            UPDATE {s}.messages m
            SET claimed_by = %s, claimed_until = {SERVER_NOW} + %s, attempts = m.attempts + 1
            FROM c WHERE m.id = c.id
            RETURNING m.id, m.run_id, m.msg_id, m.kind, m.data, m.due, m.dedup, m.attempts"""
        self.next_due = f"""
            SELECT m.due FROM {s}.messages m JOIN {s}.runs r ON r.id = m.run_id
            WHERE m.claimed_until IS NULL AND m.due > %s AND r.workflow = ANY(%s)
            ORDER BY m.due LIMIT 1"""
        self.ack = f"DELETE FROM {s}.messages WHERE id = ANY(%s)"
        self.release = f"""UPDATE {s}.messages SET claimed_by = NULL,
                claimed_until = CASE WHEN %s::float8 IS NULL THEN NULL
                                     ELSE {SERVER_NOW} + %s::float8 END,
                due = %s
            WHERE id = %s"""
        self.extend = (
            f"UPDATE {s}.messages SET claimed_until = {SERVER_NOW} + %s "
            "WHERE id = ANY(%s) AND claimed_by = %s"
        )
        self.unclaim = (
            f"UPDATE {s}.messages SET claimed_by = NULL, claimed_until = NULL "
            "WHERE id = ANY(%s) AND claimed_by = %s"
        )
        self.heartbeat = (
            f"INSERT INTO {s}.workers (id, until) VALUES (%s, %s) "
            "ON CONFLICT (id) DO UPDATE SET until = excluded.until"
        )
        self.expiry = f"SELECT until FROM {s}.workers WHERE id = %s"
        self.expired = f"SELECT id FROM {s}.workers WHERE until < %s ORDER BY until LIMIT %s"
        self.forget = f"DELETE FROM {s}.workers WHERE id = %s"
        self._cache: dict[tuple[object, ...], str] = {}

    def _values(self, n: int) -> str:
        key = ("values", n)
        sql = self._cache.get(key)
        if sql is None:
            rows = ", ".join(["(%s, %s, %s, %s, %s)"] * n)
            sql = self._cache[key] = (
                f"INSERT INTO {self.s}.events (run_id, seq, kind, at, data) VALUES {rows}"
            )
        return sql

    @staticmethod
    def _params(group: Group, worker: str, settings: PostgresSettings) -> dict[str, Any]:
        params: dict[str, Any] = {"doc": group.document()}
        if group.messages:
            params.update(worker=worker, lease=settings.lease, channel=settings.channel)
        return params

    def append(self, group: Group, worker: str, settings: PostgresSettings) -> tuple[str, Any]:
        """One statement writing a group of appends, with only the parts it needs."""
        parts = (
            bool(group.runs),
            bool(group.hooks_deleted),
            bool(group.hooks_created),
            bool(group.messages),
        )
        if not any(parts) and len(group.events) <= VALUES_ROWS:
            return self._values(len(group.events)), [v for row in group.events for v in row]
        key = ("append", *parts)
        sql = self._cache.get(key)
        if sql is None:
            ctes = ["doc AS (SELECT %(doc)s::json AS d)", f"e AS ({self._events})"]
            names = ("r", "hd", "hc")
            bodies = (self._runs, self._hooks_deleted, self._hooks_created)
            ctes += [f"{n} AS ({b})" for n, b, on in zip(names, bodies, parts, strict=False) if on]
            main = "SELECT 1 WHERE false"
            if group.messages:
                ctes.append(f"m AS ({self._messages.format(where='')})")
                main = "SELECT * FROM m"
            sql = self._cache[key] = "WITH " + ",\n".join(ctes) + "\n" + main
        return sql, self._params(group, worker, settings)

    def create(self, group: Group, worker: str, settings: PostgresSettings) -> tuple[str, Any]:
        """One statement creating runs (those whose id is free) with their first event and
        their messages. Rows: ``"r"`` and the id of each run created, ``"m"`` and the
        columns of each message inserted."""
        key = ("create", bool(group.messages))
        sql = self._cache.get(key)
        if sql is None:
            s = self.s
            nothing = ", ".join(
                ["NULL::bigint", "r.id"] + ["NULL::text"] * 3 + ["NULL::float8", "NULL::text"]
            )
            sql = f"""WITH doc AS (SELECT %(doc)s::json AS d),
                u AS (SELECT * FROM doc, json_to_recordset(doc.d -> 'c')
                    AS u(id text, workflow text, at float8, kind text, data text, tags json)),
                r AS (INSERT INTO {s}.runs (id, workflow, status, created_at, updated_at)
                    SELECT id, workflow, 'pending', at, at FROM u
                    ON CONFLICT (id) DO NOTHING RETURNING id),
                e AS (INSERT INTO {s}.events (run_id, seq, kind, at, data)
                    SELECT u.id, 1, u.kind, u.at, u.data FROM u JOIN r ON r.id = u.id),
                t AS (INSERT INTO {s}.run_tags (run_id, key, value, created_at)
                    SELECT u.id, x.key, x.value, u.at FROM u JOIN r ON r.id = u.id,
                        json_each_text(u.tags) AS x)"""
            if group.messages:
                where = "WHERE u.run_id IN (SELECT id FROM r)"
                sql += f",\n m AS ({self._messages.format(where=where)})"
                sql += f"""
                SELECT 'r', {nothing}, NULL::int, NULL::bool FROM r
                UNION ALL
                SELECT 'm', m.id, m.run_id, m.msg_id, m.kind, m.data, m.due, m.dedup,
                       m.attempts, m.mine FROM m"""
            else:
                sql += f"\nSELECT 'r', {nothing}, NULL::int, NULL::bool FROM r"
            self._cache[key] = sql
        return sql, self._params(group, worker, settings)

    def send(self, group: Group, worker: str, settings: PostgresSettings) -> tuple[str, Any]:
        sql = "WITH doc AS (SELECT %(doc)s::json AS d)\n" + self._messages.format(where="")
        return sql, self._params(group, worker, settings)
