r"""The statements of the postgres world's store, and the arrays they take.

Every write is one statement over ``unnest``\ ed arrays, whatever the number of
runs, events, hooks and messages it writes: :class:`Group` gathers those
arrays, :class:`Sql` holds the statements of one schema and composes the
write of a group from the parts it needs.
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


@dataclasses.dataclass
class Group:
    """The arrays one write statement takes: what a group of appends (or creates) writes."""

    events: tuple[list[str], list[int], list[str], list[float], list[str]] = dataclasses.field(
        default_factory=lambda: ([], [], [], [], [])
    )
    runs: dict[str, list[Any]] = dataclasses.field(default_factory=dict)
    hooks_deleted: tuple[list[str], list[str]] = dataclasses.field(default_factory=lambda: ([], []))
    hooks_created: dict[str, tuple[str, bool]] = dataclasses.field(default_factory=dict)
    messages: tuple[
        list[str], list[str], list[str], list[str], list[float], list[str | None], list[bool]
    ] = dataclasses.field(default_factory=lambda: ([], [], [], [], [], [], []))
    conflict: bool = False  # a hook token both removed and created: written one by one

    def add_event(self, run_id: str, seq: int, kind: str, at: float, data: str) -> None:
        for column, value in zip(self.events, (run_id, seq, kind, at, data), strict=True):
            column.append(value)  # type: ignore[attr-defined]

    def add_message(self, out: Outgoing, due: float, mine: bool) -> None:
        m = out.message
        values = (m.run_id, m.id, m.kind, json_dumps(m.data), due, out.key, mine)
        for column, value in zip(self.messages, values, strict=True):
            column.append(value)  # type: ignore[attr-defined]


class Sql:
    """The statements of one schema (names quoted once)."""

    def __init__(self, s: str) -> None:
        self.s = s
        self.run_columns = (
            "id, workflow, status, created_at, updated_at, "
            f"(SELECT max(seq) FROM {s}.events e WHERE e.run_id = runs.id), output, error"
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
            h AS (DELETE FROM {s}.hooks WHERE run_id IN (SELECT id FROM gone))
            SELECT count(*) FROM gone"""
        self.events = (
            f"INSERT INTO {s}.events (run_id, seq, kind, at, data) SELECT * FROM "
            "unnest(%s::text[], %s::int[], %s::text[], %s::float8[], %s::text[])"
        )
        self.runs = f"""UPDATE {s}.runs AS x SET
                status = coalesce(u.status, x.status),
                updated_at = CASE WHEN u.status IS NULL THEN x.updated_at ELSE u.updated_at END,
                output = CASE WHEN u.status IS NULL THEN x.output ELSE u.output END,
                error = CASE WHEN u.status IS NULL THEN x.error ELSE u.error END,
                holder = CASE WHEN u.set_holder THEN u.holder ELSE x.holder END
            FROM unnest(%s::text[], %s::text[], %s::float8[], %s::text[], %s::text[],
                        %s::bool[], %s::text[])
                AS u(id, status, updated_at, output, error, set_holder, holder)
            WHERE x.id = u.id"""
        self.hooks_deleted = (
            f"DELETE FROM {s}.hooks AS h USING unnest(%s::text[], %s::text[]) AS d(token, run_id) "
            "WHERE h.token = d.token AND h.run_id = d.run_id"
        )
        # A token another live run holds stays with that run.
        self.hooks_created = (
            f"INSERT INTO {s}.hooks (token, run_id, webhook) "
            "SELECT * FROM unnest(%s::text[], %s::text[], %s::bool[]) ON CONFLICT (token) DO NOTHING"
        )
        # Claimed here (mine) or left for any worker, whom a notification wakes.
        self.messages = f"""INSERT INTO {s}.messages
                (run_id, msg_id, kind, data, due, dedup, attempts, claimed_by, claimed_until)
            SELECT u.run_id, u.msg_id, u.kind, u.data, u.due, u.dedup,
                   CASE WHEN u.mine THEN 1 ELSE 0 END,
                   CASE WHEN u.mine THEN %s END,
                   CASE WHEN u.mine THEN {SERVER_NOW} + %s END
            FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[], %s::float8[],
                        %s::text[], %s::bool[])
                AS u(run_id, msg_id, kind, data, due, dedup, mine)
            {{where}}
            ON CONFLICT (dedup) DO NOTHING
            RETURNING id, run_id, msg_id, kind, data, due, dedup, attempts,
                claimed_by IS NOT NULL AS mine,
                CASE WHEN claimed_by IS NULL THEN pg_notify(%s, '') END AS notified"""
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

    def _messages_params(self, group: Group, worker: str, settings: PostgresSettings) -> list[Any]:
        return [worker, settings.lease, *group.messages, settings.channel]

    def append(
        self, group: Group, worker: str, settings: PostgresSettings
    ) -> tuple[str, list[Any]]:
        """One statement writing a group of appends; only the parts it needs, so that the
        common one (events only) is a plain insert. Each shape is prepared once per
        connection by psycopg."""
        has = (bool(group.runs), bool(group.hooks_deleted[0]), bool(group.hooks_created))
        has_messages = bool(group.messages[0])
        params: list[Any] = [*group.events]
        if not any(has) and not has_messages:
            return self.events, params
        key = ("append", *has, has_messages)
        sql = self._cache.get(key)
        parts = [f"e AS ({self.events})"]
        if group.runs:
            parts.append(f"r AS ({self.runs})")
            columns: list[list[Any]] = [[] for _ in range(7)]
            for run_id, row in group.runs.items():
                for column, value in zip(columns, (run_id, *row), strict=True):
                    column.append(value)
            params += columns
        if group.hooks_deleted[0]:
            parts.append(f"hd AS ({self.hooks_deleted})")
            params += group.hooks_deleted
        if group.hooks_created:
            parts.append(f"hc AS ({self.hooks_created})")
            tokens = list(group.hooks_created)
            params += [
                tokens,
                [group.hooks_created[t][0] for t in tokens],
                [group.hooks_created[t][1] for t in tokens],
            ]
        if has_messages:
            parts.append(f"m AS ({self.messages.format(where='')})")
            params += self._messages_params(group, worker, settings)
        if sql is None:
            main = "SELECT * FROM m" if has_messages else "SELECT 1 WHERE false"
            sql = self._cache[key] = "WITH " + ",\n".join(parts) + "\n" + main
        return sql, params

    def create(
        self,
        runs: tuple[list[str], list[str], list[float], list[str], list[str]],
        group: Group,
        worker: str,
        settings: PostgresSettings,
    ) -> tuple[str, list[Any]]:
        """One statement creating runs (those whose id is free) with their first event and
        their messages. Rows: ``("r", run_id)`` per run created, ``("m", ...)`` per message."""
        s = self.s
        params: list[Any] = [*runs]
        sql = f"""WITH u AS (
                SELECT * FROM unnest(%s::text[], %s::text[], %s::float8[], %s::text[], %s::text[])
                    AS u(id, workflow, at, kind, data)),
            r AS (INSERT INTO {s}.runs (id, workflow, status, created_at, updated_at)
                SELECT id, workflow, 'pending', at, at FROM u
                ON CONFLICT (id) DO NOTHING RETURNING id),
            e AS (INSERT INTO {s}.events (run_id, seq, kind, at, data)
                SELECT u.id, 1, u.kind, u.at, u.data FROM u JOIN r ON r.id = u.id)"""
        nothing = (
            "NULL::text, NULL::text, NULL::text, NULL::float8, NULL::text, NULL::int, NULL::bool"
        )
        if group.messages[0]:
            where = "WHERE u.run_id IN (SELECT id FROM r)"
            sql += f",\n m AS ({self.messages.format(where=where)})"
            params += self._messages_params(group, worker, settings)
            sql += f"""
            SELECT 'r', NULL::bigint, r.id, {nothing} FROM r
            UNION ALL
            SELECT 'm', m.id, m.run_id, m.msg_id, m.kind, m.data, m.due, m.dedup, m.attempts,
                   m.mine FROM m"""
        else:
            sql += f"\nSELECT 'r', NULL::bigint, r.id, {nothing} FROM r"
        return sql, params

    def send(self, group: Group, worker: str, settings: PostgresSettings) -> tuple[str, list[Any]]:
        return self.messages.format(where=""), self._messages_params(group, worker, settings)
