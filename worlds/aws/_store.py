"""DynamoDB: the AWS world's Storage and Workers, in one table.

=================  ==================  ==============================================
``pk``             ``sk``              item
=================  ==================  ==============================================
``R#<run id>``     ``#RUN``            the run: workflow, status, last_seq, result,
                                       ``holder`` (the worker its steps wait on)
``R#<run id>``     ``E#<last seq>``    one append's events, oldest first
``R#<run id>``     ``O#<expected>``    an append's messages not yet known sent (outbox)
``H#<token>``      ``#HOOK``           a live hook: its run, ``n`` payloads counted, and
                                       ``recent``: the last counts' call ids and numbers
``W#<worker id>``  ``#WORKER``         a worker's heartbeat: alive ``until``
``R#<run id>``     ``B#<stream>``      a stream's head: its length ``n``, and what each
                                       writer (step) has written (``w``, JSON)
``R#<run id>``     ``C#<stream>#<i>``  one flush of chunks of a stream, from index ``i``
``T#<key>=<val>``  ``<order>``         the tag index: a run with that tag (``run``)
=================  ==================  ==============================================

One append is one ``TransactWriteItems``: the run item updated on the
condition ``last_seq = expected`` (a second writer loses cleanly), the events
put, hooks put or deleted, and the outbox item when the append carries
messages (the engine sends them, then :meth:`mark_sent` deletes it). Reading a
log is a ``Query`` on ``pk`` from ``E#<after>``. Everything else is a ``Query``
on a global secondary index, never a scan: runs newest first (``by_time``,
``by_status``, ``by_workflow``, sorted by ``order`` = creation time + id;
the first two sharded, see ``SHARDS``),
the runs a worker holds (``by_holder``, sparse: only runs waiting on a step
have a holder), and expired heartbeats (``by_expiry``: one partition, sorted
by ``until``). Values are stored as they come: the engine has already moved
what is too big for an item to S3.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import random
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from worldflow.world import (
    TERMINAL,
    Append,
    ChunkWrite,
    Clock,
    CorruptLogError,
    Event,
    HookInfo,
    Log,
    NewEvent,
    RunCreate,
    RunInfo,
    RunPage,
    StreamInfo,
    Unsent,
    json_dumps,
    json_loads,
)

from ._errors import AwsWorldError, aws_call, off_loop
from ._queue import decode, encode

log = logging.getLogger("worldflow.aws")

__all__ = ["DynamoStore", "table_definition"]

RUN_SK = "#RUN"
HOOK_SK = "#HOOK"
WORKER_SK = "#WORKER"
#: The unsharded partition of ``by_time`` (runs written before sharding; still listed).
ALL_RUNS = "RUNS"
WORKERS = "WORKERS"
#: Shards of the ``by_time`` and ``by_status`` partitions. One GSI partition takes about
#: 1,000 writes a second, and every run's creation (by_time) and status change
#: (by_status) writes to one: 8 shards make that about 8,000, while a page of a listing
#: costs 8 small queries (keys only), merged newest first.
SHARDS = 8


#: How often a write that met another transaction (``TransactionConflict``) is tried
#: again, after 10 ms, 20 ms... (2.5 s in all): DynamoDB cancels a write to an item that
#: a transaction in progress holds, and the holder is done in milliseconds.
CONFLICT_RETRIES = 7


#: Tries to count a payload of a hook (each a read and a conditional write).
PAYLOAD_TRIES = 30
#: The calls of ``next_payload`` a hook remembers (by id, with the number each got).
RECENT_PAYLOADS = 16
#: Errors after which a write may or may not have been applied.
AMBIGUOUS = ("ConnectionClosedError", "ReadTimeoutError")


def _conflict_backoff(attempt: int) -> None:
    time.sleep(0.01 * 2**attempt * (0.5 + random.random()))


def _shard(run_id: str) -> int:
    return int(hashlib.sha256(run_id.encode()).hexdigest()[:8], 16) % SHARDS


def _all_pk(run_id: str) -> str:
    return f"{ALL_RUNS}#{_shard(run_id)}"


def _status_pk(status: str, run_id: str) -> str:
    """``S#<status>#<shard>`` (before sharding: ``S#<status>``, still read)."""
    return f"S#{status}#{_shard(run_id)}"


def _run_pk(run_id: str) -> str:
    return f"R#{run_id}"


def _chunk_sk(seq: int) -> str:
    return f"E#{seq:012d}"


def _outbox_sk(seq: int) -> str:
    return f"O#{seq:012d}"


def _cursor_order(cursor: str) -> str:
    """The ``order`` a page cursor goes on from (also from a cursor of before sharding,
    DynamoDB's own key, which holds it)."""
    try:
        value = json.loads(base64.urlsafe_b64decode(cursor))
        order = value["o"] if "o" in value else value["order"]["S"]
        if not isinstance(order, str):
            raise TypeError(order)
        return order
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"invalid cursor {cursor!r}") from exc


def _order_key(created: float, run_id: str) -> str:
    return f"{created:017.6f}#{run_id}"


def _s(value: str) -> dict[str, str]:
    return {"S": value}


def _n(value: float) -> dict[str, str]:
    return {"N": repr(value) if isinstance(value, float) else str(value)}


def table_definition(table: str) -> dict[str, Any]:
    """The ``CreateTable`` arguments of worldflow's table (setup, tests; the template
    in infra/aws says the same)."""

    def index(name: str, pk: str, sk: str, projection: dict[str, Any]) -> dict[str, Any]:
        return {
            "IndexName": name,
            "KeySchema": [
                {"AttributeName": pk, "KeyType": "HASH"},
                {"AttributeName": sk, "KeyType": "RANGE"},
            ],
            "Projection": projection,
        }

    keys_only = {"ProjectionType": "KEYS_ONLY"}
    with_status = {"ProjectionType": "INCLUDE", "NonKeyAttributes": ["st_pk"]}
    strings = ["pk", "sk", "all_pk", "order", "st_pk", "wf_pk", "holder", "wk_pk"]
    return {
        "TableName": table,
        "BillingMode": "PAY_PER_REQUEST",
        "AttributeDefinitions": [{"AttributeName": a, "AttributeType": "S"} for a in strings]
        + [{"AttributeName": "until", "AttributeType": "N"}],
        "KeySchema": [
            {"AttributeName": "pk", "KeyType": "HASH"},
            {"AttributeName": "sk", "KeyType": "RANGE"},
        ],
        "GlobalSecondaryIndexes": [
            index("by_time", "all_pk", "order", keys_only),
            index("by_status", "st_pk", "order", keys_only),
            index("by_workflow", "wf_pk", "order", with_status),
            index("by_holder", "holder", "order", with_status),
            index("by_expiry", "wk_pk", "until", keys_only),
        ],
    }


class DynamoStore:
    """Storage and Workers over one DynamoDB table (boto3 calls run on threads)."""

    def __init__(
        self, client: Any, table: str, clock: Clock, *, expire_after: float | None = None
    ) -> None:
        self.client = client
        self.table = table
        self.clock = clock
        #: Seconds after a run ends when DynamoDB's TTL may delete its items (None: never).
        self.expire_after = expire_after
        self.where = f"DynamoDB table {table!r}"
        # Streams: the head of each stream as this process last wrote it (a write that
        # finds it current needs no read), the indexes where stored flushes begin, and
        # the TransactWriteItems calls stream writes made (bench/bench_streams.py).
        self._heads: dict[tuple[str, str], tuple[int, dict[str, int]]] = {}
        self._starts: dict[tuple[str, str], set[int]] = {}
        self.stream_writes = 0

    def __repr__(self) -> str:
        return f"<DynamoStore {self.table!r}>"

    def _call(self, operation: str, **kwargs: Any) -> Any:
        """One DynamoDB call (blocking), errors translated. A write that meets a
        transaction in progress on its item (``TransactionConflictException``, which
        botocore does not retry) is retried with a backoff (about 2.5 s in all)."""
        method = getattr(self.client, operation)
        name = "".join(part.title() for part in operation.split("_"))
        for attempt in range(CONFLICT_RETRIES + 1):
            try:
                with aws_call(f"DynamoDB {name}", self.where):
                    return method(TableName=self.table, **kwargs)
            except AwsWorldError as exc:
                if exc.code != "TransactionConflictException" or attempt == CONFLICT_RETRIES:
                    raise
            _conflict_backoff(attempt)
        raise AssertionError("unreachable")  # pragma: no cover

    def _query(self, **kwargs: Any) -> Iterator[dict[str, Any]]:
        while True:
            response = self._call("query", **kwargs)
            yield from response.get("Items", [])
            if "LastEvaluatedKey" not in response:
                return
            kwargs["ExclusiveStartKey"] = response["LastEvaluatedKey"]

    # -- runs ------------------------------------------------------------------------
    async def create_run(self, create: RunCreate) -> tuple[RunInfo, bool]:
        return await off_loop(self._create_run, create)

    def _create_run(self, create: RunCreate) -> tuple[RunInfo, bool]:
        at = create.event.at
        run_item = {
            "pk": _s(_run_pk(create.run_id)),
            "sk": _s(RUN_SK),
            "workflow": _s(create.workflow),
            "status": _s("pending"),
            "created": _n(at),
            "updated": _n(at),
            "last_seq": _n(1),
            "all_pk": _s(_all_pk(create.run_id)),
            "order": _s(_order_key(at, create.run_id)),
            "st_pk": _s(_status_pk("pending", create.run_id)),
            "wf_pk": _s(f"W#{create.workflow}"),
        }
        if create.tags:
            run_item["tags"] = _s(json_dumps(create.tags))
        condition = "attribute_not_exists(pk)"
        items = [
            {"Put": {"TableName": self.table, "Item": run_item, "ConditionExpression": condition}},
            {
                "Put": {
                    "TableName": self.table,
                    "Item": self._chunk(create.run_id, 1, [create.event]),
                }
            },
        ]
        items += [
            {"Put": {"TableName": self.table, "Item": self._tag_item(create.run_id, at, k, v)}}
            for k, v in create.tags.items()
        ]
        reasons: list[str] = []
        for attempt in range(CONFLICT_RETRIES + 1):
            cancelled = self._transact(items)
            if cancelled is None:
                info = RunInfo(
                    create.run_id, create.workflow, "pending", at, at, 1, tags=create.tags
                )
                return info, True
            reasons = cancelled
            if "TransactionConflict" not in reasons or attempt == CONFLICT_RETRIES:
                break
            _conflict_backoff(attempt)  # another transaction on the run's items
        existing = (
            self._get_run(create.run_id) if reasons[:1] == ["ConditionalCheckFailed"] else None
        )
        if existing is None:
            raise _cancelled(self.where, reasons)
        return existing, False

    async def get_run(self, run_id: str) -> RunInfo | None:
        return await off_loop(self._get_run, run_id)

    def _get_run(self, run_id: str) -> RunInfo | None:
        key = {"pk": _s(_run_pk(run_id)), "sk": _s(RUN_SK)}
        item = self._call("get_item", Key=key, ConsistentRead=True).get("Item")
        return None if item is None else self._run_info(item)

    def _run_info(self, item: dict[str, Any]) -> RunInfo:
        """A run item; a value that cannot be read makes this run unreadable, not the call."""
        run_id = item["pk"]["S"][2:]
        values: dict[str, Any] = {"output": None, "error": None, "tags": None}
        unreadable = None
        for name in values:
            if name in item:
                try:
                    values[name] = json_loads(item[name]["S"], f"the {name} of run {run_id!r}")
                except (CorruptLogError, KeyError) as exc:
                    unreadable = f"the {name} of run {run_id!r} in {self.where}: {exc}"
        return RunInfo(
            id=run_id,
            workflow=item["workflow"]["S"],
            status=item["status"]["S"],
            created_at=float(item["created"]["N"]),
            updated_at=float(item["updated"]["N"]),
            last_seq=int(item["last_seq"]["N"]),
            output=values["output"],
            error=values["error"],
            unreadable=unreadable,
            tags=values["tags"] if isinstance(values["tags"], dict) else {},
        )

    # -- the one write path ------------------------------------------------------------
    async def append(self, appends: Sequence[Append]) -> list[bool]:
        """Appends of one run form a chain, written in order (one lost race fails the
        rest); different runs are written concurrently, a transaction each."""
        chains: dict[str, list[int]] = {}
        for i, append in enumerate(appends):
            chains.setdefault(append.run_id, []).append(i)
        results = [False] * len(appends)
        now = self.clock.now()

        def write_chain(indexes: list[int]) -> None:
            for i in indexes:
                results[i] = self._append(appends[i], now)
                if not results[i]:
                    return

        await asyncio.gather(*(off_loop(write_chain, ix) for ix in chains.values()))
        return results

    def _append(self, append: Append, now: float) -> bool:
        items = self._append_items(append, now)
        for attempt in range(CONFLICT_RETRIES + 1):
            reasons = self._transact(items)
            if reasons is None:
                if self._expires(append):
                    self._expire_earlier_items(append.run_id, self._ttl())
                    self._expire_tag_items(append.run_id, self._ttl())
                return True
            if reasons[:1] == ["ConditionalCheckFailed"]:
                return False  # the sequence was taken: the engine reloads
            conflicts = {
                i for i, r in enumerate(reasons) if i >= 2 and r == "ConditionalCheckFailed"
            }
            if conflicts:
                # A hook token held by another run stays with it (the engine fails our
                # hook with HookConflict); a removed hook no longer ours is not deleted.
                items = [item for i, item in enumerate(items) if i not in conflicts]
                continue
            if "TransactionConflict" in reasons and attempt < CONFLICT_RETRIES:
                _conflict_backoff(attempt)  # another transaction on these items
                continue
            raise _cancelled(self.where, reasons)
        return False

    def _append_items(self, append: Append, now: float) -> list[dict[str, Any]]:
        run_id = append.run_id
        names = {"#n": "last_seq", "#u": "updated"}
        values: dict[str, Any] = {
            ":e": _n(append.expected_seq),
            ":n": _n(append.last_seq),
            ":u": _n(now),
        }
        sets = ["#n = :n", "#u = :u"]
        removes = []
        if self._expires(append):
            sets.append("#ttl = :ttl")
            names["#ttl"] = "ttl"
            values[":ttl"] = _n(self._ttl())
        if append.status is not None:
            sets += ["#s = :s", "#sp = :sp"]
            names.update({"#s": "status", "#sp": "st_pk"})
            values[":s"] = _s(append.status)
            values[":sp"] = _s(_status_pk(append.status, run_id))
        for name, value in (("output", append.output), ("error", append.error)):
            if value is not None:
                names[f"#{name}"] = name
                values[f":{name}"] = _s(json_dumps(value))
                sets.append(f"#{name} = :{name}")
        if append.holder_changed:
            names["#h"] = "holder"
            if append.holder is None:
                removes.append("#h")
            else:
                values[":h"] = _s(append.holder)
                sets.append("#h = :h")
        expression = "SET " + ", ".join(sets) + (" REMOVE " + ", ".join(removes) if removes else "")
        update = {
            "TableName": self.table,
            "Key": {"pk": _s(_run_pk(run_id)), "sk": _s(RUN_SK)},
            "UpdateExpression": expression,
            "ConditionExpression": "#n = :e",
            "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": values,
        }
        chunk = self._chunk(run_id, append.expected_seq + 1, append.events)
        if self._expires(append):
            chunk["ttl"] = _n(self._ttl())
        items: list[dict[str, Any]] = [
            {"Update": update},
            {"Put": {"TableName": self.table, "Item": chunk}},
        ]
        mine = {":r": _s(run_id)}
        for hook in append.hooks_created:
            # An update, not a put: a hook the run holds already keeps its payload count.
            items.append(
                {
                    "Update": {
                        "TableName": self.table,
                        "Key": {"pk": _s(f"H#{hook.token}"), "sk": _s(HOOK_SK)},
                        "UpdateExpression": "SET run_id = :r, webhook = :w",
                        "ConditionExpression": "attribute_not_exists(pk) OR run_id = :r",
                        "ExpressionAttributeValues": {**mine, ":w": {"BOOL": hook.webhook}},
                    }
                }
            )
        for token in append.hooks_removed:
            items.append(
                {
                    "Delete": {
                        "TableName": self.table,
                        "Key": {"pk": _s(f"H#{token}"), "sk": _s(HOOK_SK)},
                        "ConditionExpression": "run_id = :r",
                        "ExpressionAttributeValues": mine,
                    }
                }
            )
        if append.messages:
            outbox = {
                "pk": _s(_run_pk(run_id)),
                "sk": _s(_outbox_sk(append.expected_seq)),
                "msgs": _s(json_dumps([encode(m) for m in append.messages])),
                "t": _n(time.time()),  # wall clock: how long the send has been pending
            }
            items.append({"Put": {"TableName": self.table, "Item": outbox}})
        return items

    def _expires(self, append: Append) -> bool:
        return self.expire_after is not None and append.status in TERMINAL

    def _ttl(self) -> int:
        assert self.expire_after is not None
        return int(time.time() + self.expire_after)  # DynamoDB's TTL is wall-clock epoch

    def _expire_earlier_items(self, run_id: str, ttl: int) -> None:
        """The run ended: its earlier items (events, a lingering outbox) get the run's
        expiry too, one UpdateItem each (the price of TTL: about one write per append
        of the run). A failure is logged; the items it missed stay (no TTL)."""
        pk = _s(_run_pk(run_id))
        try:
            keys: list[dict[str, Any]] = []
            kwargs: dict[str, Any] = {
                "TableName": self.table,
                "KeyConditionExpression": "pk = :p",
                "FilterExpression": "attribute_not_exists(#ttl)",
                "ProjectionExpression": "pk, sk",
                "ExpressionAttributeNames": {"#ttl": "ttl"},
                "ExpressionAttributeValues": {":p": pk},
            }
            while True:
                with aws_call("DynamoDB Query", self.where):
                    page = self.client.query(**kwargs)
                keys += [{"pk": i["pk"], "sk": i["sk"]} for i in page.get("Items", [])]
                if "LastEvaluatedKey" not in page:
                    break
                kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
            for key in keys:
                with aws_call("DynamoDB UpdateItem", self.where):
                    self.client.update_item(
                        TableName=self.table,
                        Key=key,
                        UpdateExpression="SET #ttl = :ttl",
                        ConditionExpression="attribute_exists(pk)",  # not one deleted since
                        ExpressionAttributeNames={"#ttl": "ttl"},
                        ExpressionAttributeValues={":ttl": _n(ttl)},
                    )
        except Exception as exc:
            log.warning("worldflow: could not set the expiry of run %s's items (%s)", run_id, exc)

    def _chunk(self, run_id: str, first: int, events: Sequence[NewEvent]) -> dict[str, Any]:
        return {
            "pk": _s(_run_pk(run_id)),
            "sk": _s(_chunk_sk(first + len(events) - 1)),
            "first": _n(first),
            "ev": _s(json_dumps([[e.kind, e.data, e.at] for e in events])),
        }

    def _transact(self, items: list[dict[str, Any]]) -> list[str] | None:
        """Write the items in one transaction; None if done, else the cancellation
        reason of each item (``"None"`` for an item that was fine)."""
        try:
            with aws_call("DynamoDB TransactWriteItems", self.where):
                self.client.transact_write_items(TransactItems=items)
        except AwsWorldError as exc:
            if exc.code != "TransactionCanceledException":
                raise
            response = getattr(exc.__cause__, "response", {})
            return [str(r.get("Code", "None")) for r in response.get("CancellationReasons", [])]
        return None

    async def mark_sent(self, run_id: str, seqs: Sequence[int]) -> None:
        await off_loop(self._mark_sent, run_id, list(seqs))

    def _mark_sent(self, run_id: str, seqs: list[int]) -> None:
        for seq in seqs:
            self._call("delete_item", Key={"pk": _s(_run_pk(run_id)), "sk": _s(_outbox_sk(seq))})

    # -- reading a log ------------------------------------------------------------------
    async def read_log(self, run_id: str, after_seq: int = 0) -> Log:
        return await off_loop(self._read_log, run_id, after_seq)

    def _read_log(self, run_id: str, after_seq: int) -> Log:
        events: list[Event] = []
        unsent: list[Unsent] = []
        for item in self._query(
            KeyConditionExpression="pk = :p AND sk > :s",
            ExpressionAttributeValues={":p": _s(_run_pk(run_id)), ":s": _s(_chunk_sk(after_seq))},
            ConsistentRead=True,
        ):
            sk = item["sk"]["S"]
            where = f"run {run_id!r}: item {sk} of {self.where}"
            if sk.startswith("O#"):
                unsent.append(self._unsent(item, where))
                continue
            rows = json_loads(item.get("ev", {}).get("S", ""), where)
            seq = int(item["first"]["N"])
            if not isinstance(rows, list):
                raise CorruptLogError(f"{where} is not a list of events")
            for row in rows:
                if not (
                    isinstance(row, list)
                    and len(row) == 3
                    and isinstance(row[0], str)
                    and isinstance(row[1], dict)
                    and isinstance(row[2], int | float)
                ):
                    raise CorruptLogError(f"{where}: event {seq} is not [kind, data, at]")
                if seq > after_seq:
                    events.append(Event(run_id, seq, row[0], row[1], float(row[2])))
                seq += 1
        return Log(events, unsent)

    @staticmethod
    def _unsent(item: dict[str, Any], where: str) -> Unsent:
        messages = json_loads(item["msgs"]["S"], where)
        try:
            if not isinstance(messages, list):
                raise ValueError("not a list")
            return Unsent(
                int(item["sk"]["S"][2:]), [decode(m) for m in messages], float(item["t"]["N"])
            )
        except ValueError as exc:
            raise CorruptLogError(f"{where}: {exc}") from None

    # -- listing runs ----------------------------------------------------------------------
    async def list_runs(
        self,
        *,
        status: str | None = None,
        workflow: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> RunPage:
        if tags:
            return await off_loop(self._list_tagged, dict(tags), status, workflow, limit, cursor)
        return await off_loop(self._list_runs, status, workflow, limit, cursor)

    def _list_runs(
        self, status: str | None, workflow: str | None, limit: int, cursor: str | None
    ) -> RunPage:
        before = _cursor_order(cursor) if cursor else None
        queries: list[dict[str, Any]] = []
        if workflow is not None:
            query: dict[str, Any] = {
                "IndexName": "by_workflow",
                "KeyConditionExpression": "wf_pk = :k",
                "ExpressionAttributeValues": {":k": _s(f"W#{workflow}")},
            }
            if status is not None:
                query["FilterExpression"] = "st_pk = :s OR begins_with(st_pk, :ss)"
                query["ExpressionAttributeValues"][":s"] = _s(f"S#{status}")
                query["ExpressionAttributeValues"][":ss"] = _s(f"S#{status}#")
            queries.append(query)
        else:
            index, name = ("by_status", "st_pk") if status is not None else ("by_time", "all_pk")
            base = f"S#{status}" if status is not None else ALL_RUNS
            for key in [base] + [f"{base}#{shard}" for shard in range(SHARDS)]:
                queries.append(
                    {
                        "IndexName": index,
                        "KeyConditionExpression": f"{name} = :k",
                        "ExpressionAttributeValues": {":k": _s(key)},
                    }
                )
        found: list[tuple[str, dict[str, Any]]] = []
        more = False
        for query in queries:
            keys, rest = self._newest(query, limit, before)
            found += keys
            more = more or rest
        found.sort(key=lambda pair: pair[0], reverse=True)
        more = more or len(found) > limit
        page = found[:limit]
        runs = {info.id: info for info in self._get_runs([key for _, key in page])}
        ordered = [runs[k["pk"]["S"][2:]] for _, k in page if k["pk"]["S"][2:] in runs]
        # The cursor is the last run's position in the one order of all shards: each
        # shard goes on from there.
        cursor_out = None
        if more and page:
            cursor_out = base64.urlsafe_b64encode(json_dumps({"o": page[-1][0]}).encode()).decode()
        return RunPage(ordered, cursor_out)

    def _newest(
        self, query: dict[str, Any], limit: int, before: str | None
    ) -> tuple[list[tuple[str, dict[str, Any]]], bool]:
        """Up to ``limit`` keys of one index partition, newest first, older than ``before``
        (an ``order``), with each key's order; and whether there are more."""
        kwargs: dict[str, Any] = {"ScanIndexForward": False, **query}
        kwargs["ExpressionAttributeValues"] = dict(query["ExpressionAttributeValues"])
        if before is not None:
            kwargs["KeyConditionExpression"] += " AND #o < :before"
            kwargs["ExpressionAttributeNames"] = {"#o": "order"}
            kwargs["ExpressionAttributeValues"][":before"] = _s(before)
        keys: list[tuple[str, dict[str, Any]]] = []
        while len(keys) < limit:
            kwargs["Limit"] = limit - len(keys)
            response = self._call("query", **kwargs)
            keys += [
                (i["order"]["S"], {"pk": i["pk"], "sk": i["sk"]}) for i in response.get("Items", [])
            ]
            next_key = response.get("LastEvaluatedKey")
            if next_key is None:
                return keys, False
            kwargs["ExclusiveStartKey"] = next_key
        return keys, True

    def _get_runs(self, keys: list[dict[str, Any]]) -> list[RunInfo]:
        found: list[RunInfo] = []
        for start in range(0, len(keys), 100):
            pending: dict[str, Any] = {
                self.table: {"Keys": keys[start : start + 100], "ConsistentRead": True}
            }
            while pending:
                with aws_call("DynamoDB BatchGetItem", self.where):
                    response = self.client.batch_get_item(RequestItems=pending)
                found += [self._run_info(i) for i in response["Responses"].get(self.table, [])]
                pending = response.get("UnprocessedKeys") or {}
        return found

    async def runs_held_by(self, worker_id: str, limit: int) -> list[str]:
        return await off_loop(self._runs_held_by, worker_id, limit)

    def _runs_held_by(self, worker_id: str, limit: int) -> list[str]:
        held: list[str] = []
        for item in self._query(
            IndexName="by_holder",
            KeyConditionExpression="#h = :w",
            FilterExpression=(
                "st_pk IN (:p, :r) OR begins_with(st_pk, :ps) OR begins_with(st_pk, :rs)"
            ),
            ExpressionAttributeNames={"#h": "holder"},
            ExpressionAttributeValues={
                ":w": _s(worker_id),
                ":p": _s("S#pending"),
                ":r": _s("S#running"),
                ":ps": _s("S#pending#"),
                ":rs": _s("S#running#"),
            },
        ):
            held.append(item["pk"]["S"][2:])
            if len(held) >= limit:
                break
        return held

    # -- hooks ------------------------------------------------------------------------------
    async def get_hook(self, token: str) -> HookInfo | None:
        return await off_loop(self._get_hook, token)

    def _get_hook(self, token: str) -> HookInfo | None:
        key = {"pk": _s(f"H#{token}"), "sk": _s(HOOK_SK)}
        item = self._call("get_item", Key=key, ConsistentRead=True).get("Item")
        if item is None:
            return None
        return HookInfo(
            token, item["run_id"]["S"], item["webhook"]["BOOL"], int(item.get("n", {}).get("N", 0))
        )

    async def next_payload(self, token: str, *, webhook: bool = False) -> HookInfo | None:
        return await off_loop(self._next_payload, token, webhook)

    def _next_payload(self, token: str, webhook: bool) -> HookInfo | None:
        """Count one more payload of a hook and return its number.

        Read the hook, then write ``n + 1`` on the condition that ``n`` is still what was
        read, noting this call's id with its number in ``recent`` (the last
        ``RECENT_PAYLOADS`` calls). A write that was applied but whose answer was lost
        (the connection dropped: botocore sends it again, and its condition then fails)
        is found by its id at the next read, so it is counted once, not twice (a gap in
        the numbers holds the next payload back for a minute); a write that lost to
        another caller's reads again, with a backoff.
        """
        key = {"pk": _s(f"H#{token}"), "sk": _s(HOOK_SK)}
        me = uuid.uuid4().hex[:16]
        for attempt in range(PAYLOAD_TRIES):
            if attempt:
                time.sleep(min(0.01 * 2**attempt, 0.2) * (0.5 + random.random()))
            item = self._call("get_item", Key=key, ConsistentRead=True).get("Item")
            if item is None or (webhook and not item["webhook"]["BOOL"]):
                return None
            run_id, is_webhook = item["run_id"]["S"], item["webhook"]["BOOL"]
            recent: dict[str, Any] = item.get("recent", {}).get("M", {})
            if me in recent:  # ours was applied: its answer was lost
                return HookInfo(token, run_id, is_webhook, int(recent[me]["N"]))
            n = int(item.get("n", {}).get("N", 0))
            kept = sorted(recent, key=lambda k: int(recent[k]["N"]))[1 - RECENT_PAYLOADS :]
            values: dict[str, Any] = {
                ":new": _n(n + 1),
                ":recent": {"M": {**{k: recent[k] for k in kept}, me: _n(n + 1)}},
                ":r": _s(run_id),
            }
            if "n" in item:
                values[":old"] = item["n"]
                counted = "#n = :old"
            else:
                counted = "attribute_not_exists(#n)"
            try:
                self._call(
                    "update_item",
                    Key=key,
                    UpdateExpression="SET #n = :new, #recent = :recent",
                    ConditionExpression=f"run_id = :r AND {counted}",
                    ExpressionAttributeNames={"#n": "n", "#recent": "recent"},
                    ExpressionAttributeValues=values,
                )
            except AwsWorldError as exc:
                if exc.code in ("ConditionalCheckFailedException", *AMBIGUOUS):
                    continue  # another payload was counted, or ours and its answer lost
                raise
            return HookInfo(token, run_id, is_webhook, n + 1)
        raise AwsWorldError(
            f"could not count a payload of hook {token!r} in {self.where}: "
            f"{PAYLOAD_TRIES} tries each lost to another payload counted at the same time, "
            "or to a lost connection",
            "PayloadContention",
        )

    # -- tags: items ``T#<key>=<value>`` / ``<order>`` in the table itself ------------------
    def _tag_item(self, run_id: str, created: float, key: str, value: str) -> dict[str, Any]:
        return {
            "pk": _s(f"T#{key}={value}"),
            "sk": _s(_order_key(created, run_id)),
            "run": _s(run_id),
        }

    def _list_tagged(
        self,
        tags: dict[str, str],
        status: str | None,
        workflow: str | None,
        limit: int,
        cursor: str | None,
    ) -> RunPage:
        """Runs with every tag: the first tag's index partition, newest first, a page of
        keys at a time; their run items read in one batch and the other filters applied."""
        (key, value), *others = tags.items()
        kwargs: dict[str, Any] = {
            "KeyConditionExpression": "pk = :p",
            "ExpressionAttributeValues": {":p": _s(f"T#{key}={value}")},
            "ScanIndexForward": False,
        }
        if cursor:
            kwargs["KeyConditionExpression"] += " AND sk < :before"
            kwargs["ExpressionAttributeValues"][":before"] = _s(_cursor_order(cursor))
        found: list[RunInfo] = []
        last_order = None
        more = False
        while len(found) < limit:
            kwargs["Limit"] = max(limit - len(found), 10)
            response = self._call("query", **kwargs)
            items = response.get("Items", [])
            runs = {
                info.id: info
                for info in self._get_runs(
                    [{"pk": _s(_run_pk(i["run"]["S"])), "sk": _s(RUN_SK)} for i in items]
                )
            }
            for n, item in enumerate(items):
                info = runs.get(item["run"]["S"])
                last_order = item["sk"]["S"]
                if (
                    info is not None
                    and status in (None, info.status)
                    and workflow in (None, info.workflow)
                    and all(info.tags.get(k) == v for k, v in others)
                ):
                    found.append(info)
                    if len(found) == limit:
                        more = n + 1 < len(items) or "LastEvaluatedKey" in response
                        break
            if len(found) == limit:
                break
            if "LastEvaluatedKey" not in response:
                break
            kwargs["ExclusiveStartKey"] = response["LastEvaluatedKey"]
        cursor_out = None
        if more and last_order is not None:
            cursor_out = base64.urlsafe_b64encode(json_dumps({"o": last_order}).encode()).decode()
        return RunPage(found, cursor_out)

    async def set_tags(self, run_id: str, tags: Mapping[str, str]) -> None:
        await off_loop(self._set_tags, run_id, dict(tags))

    def _expire_tag_items(self, run_id: str, ttl: int) -> None:
        """The run ended: its tag index items get the run's expiry (one UpdateItem each;
        they live under their tag's key, not the run's). A failure is logged; an item it
        missed stays, and listings skip it once its run is gone."""
        try:
            key = {"pk": _s(_run_pk(run_id)), "sk": _s(RUN_SK)}
            item = self._call("get_item", Key=key, ConsistentRead=True).get("Item")
            if item is None:
                return
            info = self._run_info(item)
            order = _order_key(info.created_at, run_id)
            for k, v in info.tags.items():
                self._call(
                    "update_item",
                    Key={"pk": _s(f"T#{k}={v}"), "sk": _s(order)},
                    UpdateExpression="SET #ttl = :ttl",
                    ConditionExpression="attribute_exists(pk)",
                    ExpressionAttributeNames={"#ttl": "ttl"},
                    ExpressionAttributeValues={":ttl": _n(ttl)},
                )
        except Exception as exc:
            log.warning("worldflow: could not set the expiry of run %s's tags (%s)", run_id, exc)

    def _set_tags(self, run_id: str, tags: dict[str, str]) -> None:
        """One transaction: the run item's tags (on the condition that they are still the
        ones read), the new index items, and the items of values replaced."""
        key = {"pk": _s(_run_pk(run_id)), "sk": _s(RUN_SK)}
        for attempt in range(8):
            item = self._call("get_item", Key=key, ConsistentRead=True).get("Item")
            if item is None:
                raise AwsWorldError(f"run {run_id!r} is not in {self.where}: cannot tag it")
            info = self._run_info(item)
            merged = {**info.tags, **tags}
            if merged == info.tags:
                return
            update: dict[str, Any] = {
                "TableName": self.table,
                "Key": key,
                "UpdateExpression": "SET tags = :t",
                "ExpressionAttributeValues": {":t": _s(json_dumps(merged))},
            }
            if "tags" in item:
                update["ConditionExpression"] = "tags = :old"
                update["ExpressionAttributeValues"][":old"] = item["tags"]
            else:
                update["ConditionExpression"] = "attribute_not_exists(tags)"
            items: list[dict[str, Any]] = [{"Update": update}]
            order = _order_key(info.created_at, run_id)
            for k, v in tags.items():
                if info.tags.get(k) == v:
                    continue
                if k in info.tags:
                    old = {"pk": _s(f"T#{k}={info.tags[k]}"), "sk": _s(order)}
                    items.append({"Delete": {"TableName": self.table, "Key": old}})
                tag_item = self._tag_item(run_id, info.created_at, k, v)
                items.append({"Put": {"TableName": self.table, "Item": tag_item}})
            reasons = self._transact(items)
            if reasons is None:
                return
            if attempt < 7 and (
                reasons[:1] == ["ConditionalCheckFailed"] or "TransactionConflict" in reasons
            ):
                time.sleep(0.01 * 2**attempt)  # tagged meanwhile: read again
                continue
            raise _cancelled(self.where, reasons)

    # -- streams: a head item and an item per flush, under the run's key --------------------
    def _head_key(self, run_id: str, stream: str) -> dict[str, Any]:
        return {"pk": _s(_run_pk(run_id)), "sk": _s(f"B#{stream}")}

    def _read_head(self, run_id: str, stream: str) -> tuple[int, dict[str, int]]:
        item = self._call("get_item", Key=self._head_key(run_id, stream), ConsistentRead=True).get(
            "Item"
        )
        if item is None:
            return 0, {}
        writers = json_loads(item["w"]["S"], f"the head of stream {stream!r} of run {run_id!r}")
        return int(item["n"]["N"]), writers if isinstance(writers, dict) else {}

    async def write_chunks(self, write: ChunkWrite) -> int:
        return await off_loop(self._write_chunks, write)

    def _write_chunks(self, write: ChunkWrite) -> int:
        """One TransactWriteItems: the head put on the condition that the stream's length
        is still the one this process knows (the fence between writers), and the item
        of the new chunks. A process that knows the head (it wrote last) makes no read."""
        run_id, stream = write.run_id, write.stream
        known = self._heads.get((run_id, stream))
        for attempt in range(10):
            if known is None:
                known = self._read_head(run_id, stream)
            length, writers = known
            written = int(writers.get(write.writer, 0))
            new = write.chunks[max(0, written - write.start) :]
            count = max(written, write.start + len(write.chunks))
            if not new and count == written:
                return length
            head = {
                **self._head_key(run_id, stream),
                "n": _n(length + len(new)),
                "w": _s(json_dumps({**writers, write.writer: count})),
            }
            put_head: dict[str, Any] = {"TableName": self.table, "Item": head}
            if length == 0 and not writers:
                put_head["ConditionExpression"] = "attribute_not_exists(pk)"
            else:
                put_head["ConditionExpression"] = "n = :n"
                put_head["ExpressionAttributeValues"] = {":n": _n(length)}
            items: list[dict[str, Any]] = [{"Put": put_head}]
            if new:
                chunk = {
                    "pk": _s(_run_pk(run_id)),
                    "sk": _s(f"C#{stream}#{length:012d}"),
                    "first": _n(length),
                    "ch": _s(json_dumps(new)),
                }
                items.append({"Put": {"TableName": self.table, "Item": chunk}})
            reasons = self._transact(items)
            self.stream_writes += 1
            if reasons is None:
                self._remember_head(
                    run_id, stream, (length + len(new), json_loads(head["w"]["S"], ""))
                )
                self._boundaries(run_id, stream).update({length, length + len(new)})
                return length + len(new)
            if attempt < 9 and (
                reasons[:1] == ["ConditionalCheckFailed"] or "TransactionConflict" in reasons
            ):
                known = None  # another writer went first: read the head again
                self._heads.pop((run_id, stream), None)
                if "TransactionConflict" in reasons:
                    time.sleep(0.005 * 2**attempt)
                continue
            raise _cancelled(self.where, reasons)
        raise AwsWorldError(f"could not write to stream {stream!r} of run {run_id!r}")

    def _remember_head(self, run_id: str, stream: str, head: tuple[int, dict[str, int]]) -> None:
        self._heads[(run_id, stream)] = head
        if len(self._heads) > 10_000:
            del self._heads[next(iter(self._heads))]

    def _boundaries(self, run_id: str, stream: str) -> set[int]:
        """Indexes where a stored flush begins (known here): a read from one needs no
        look back for the flush that holds it."""
        found = self._starts.get((run_id, stream))
        if found is None:
            found = self._starts[(run_id, stream)] = {0}
            if len(self._starts) > 10_000:
                del self._starts[next(iter(self._starts))]
        return found

    async def read_chunks(self, run_id: str, stream: str, start: int, limit: int) -> list[str]:
        return await off_loop(self._read_chunks, run_id, stream, start, limit)

    def _read_chunks(self, run_id: str, stream: str, start: int, limit: int) -> list[str]:
        pk = _s(_run_pk(run_id))
        prefix = f"C#{stream}#"
        starts = self._boundaries(run_id, stream)
        begin = _s(f"{prefix}{start:012d}")
        if start not in starts:  # the flush that holds ``start`` begins before it
            response = self._call(
                "query",
                KeyConditionExpression="pk = :p AND sk BETWEEN :a AND :b",
                ExpressionAttributeValues={":p": pk, ":a": _s(f"{prefix}{0:012d}"), ":b": begin},
                ScanIndexForward=False,
                Limit=1,
                ConsistentRead=True,
            )
            for item in response.get("Items", []):
                begin = item["sk"]
        texts: list[str] = []
        kwargs: dict[str, Any] = {
            "KeyConditionExpression": "pk = :p AND sk BETWEEN :a AND :b",
            "ExpressionAttributeValues": {":p": pk, ":a": begin, ":b": _s(f"{prefix}~")},
            "ConsistentRead": True,
        }
        while len(texts) < limit:
            response = self._call("query", **kwargs)
            for item in response.get("Items", []):
                where = f"stream {stream!r} of run {run_id!r}: item {item['sk']['S']}"
                first = int(item["first"]["N"])
                chunks = json_loads(item["ch"]["S"], where)
                if not isinstance(chunks, list) or not all(isinstance(c, str) for c in chunks):
                    raise CorruptLogError(f"{where} is not a list of chunks")
                starts.update({first, first + len(chunks)})
                texts += chunks[max(0, start - first) :]
            if "LastEvaluatedKey" not in response:
                break
            kwargs["ExclusiveStartKey"] = response["LastEvaluatedKey"]
        return texts

    async def list_streams(self, run_id: str) -> list[StreamInfo]:
        return await off_loop(self._list_streams, run_id)

    def _list_streams(self, run_id: str) -> list[StreamInfo]:
        found = []
        for item in self._query(
            KeyConditionExpression="pk = :p AND begins_with(sk, :b)",
            ExpressionAttributeValues={":p": _s(_run_pk(run_id)), ":b": _s("B#")},
            ConsistentRead=True,
        ):
            found.append(StreamInfo(item["sk"]["S"][2:], int(item["n"]["N"])))
        return sorted(found, key=lambda info: info.name)

    # -- Workers ------------------------------------------------------------------------------
    async def heartbeat(self, worker_id: str, until: float) -> None:
        item = {
            "pk": _s(f"W#{worker_id}"),
            "sk": _s(WORKER_SK),
            "wk_pk": _s(WORKERS),
            "until": _n(until),
            "ttl": _n(int(until) + 86400),  # DynamoDB's TTL drops records nobody forgot
        }
        await off_loop(lambda: self._call("put_item", Item=item))

    async def expiry(self, worker_id: str) -> float | None:
        key = {"pk": _s(f"W#{worker_id}"), "sk": _s(WORKER_SK)}
        response = await off_loop(lambda: self._call("get_item", Key=key, ConsistentRead=True))
        item = response.get("Item")
        return None if item is None else float(item["until"]["N"])

    async def expired(self, before: float, limit: int) -> list[str]:
        response = await off_loop(
            lambda: self._call(
                "query",
                IndexName="by_expiry",
                KeyConditionExpression="wk_pk = :k AND #u < :b",
                ExpressionAttributeNames={"#u": "until"},
                ExpressionAttributeValues={":k": _s(WORKERS), ":b": _n(before)},
                Limit=limit,
            )
        )
        return [item["pk"]["S"][2:] for item in response.get("Items", [])]

    async def forget(self, worker_id: str) -> None:
        key = {"pk": _s(f"W#{worker_id}"), "sk": _s(WORKER_SK)}
        await off_loop(lambda: self._call("delete_item", Key=key))


def _cancelled(where: str, reasons: list[str]) -> AwsWorldError:
    return AwsWorldError(
        f"AWS DynamoDB TransactWriteItems on {where} was cancelled (reasons: {', '.join(reasons)})",
        "TransactionCanceledException",
    )
