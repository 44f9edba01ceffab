"""DynamoDB storage: runs, their event logs, hooks and workers in one table.

The key design (docs/aws.md draws it):

=================  ==================  ==============================================
``pk``             ``sk``              item
=================  ==================  ==============================================
``R#<run id>``     ``#RUN``            the run: workflow, status, last_seq, result
``R#<run id>``     ``E#<last seq>``    one append's events (a chunk), oldest first
``R#<run id>``     ``O#<last seq>``    messages of an append not yet known sent (outbox)
``H#<token>``      ``#HOOK``           a live hook: its run
``W#<worker id>``  ``#WORKER``         a worker's heartbeat, with its expiry
=================  ==================  ==============================================

One append is one ``TransactWriteItems``: the run item updated on the
condition ``last_seq = expected`` (a second writer loses cleanly), the chunk
put, hooks put or deleted, and the outbox put when the append carries
messages. Reading a log is a ``Query`` on ``pk`` from ``E#<after>`` (paged by
DynamoDB's 1 MB pages). Runs are listed newest first from three global
secondary indexes sorted by creation time (all runs, by status, by
workflow), never by a scan; only run items carry their keys.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator, Sequence
from typing import Any

from worldflow._world import (
    Append,
    Event,
    HookInfo,
    NewEvent,
    RunCreate,
    RunInfo,
    RunPage,
)

from ._blobs import INLINE_LIMIT, Blobs
from ._errors import AwsWorldError, aws_call, error_code
from ._messages import encode_outgoing

__all__ = ["RUN_SK", "DynamoStore", "table_definition"]

RUN_SK = "#RUN"
HOOK_SK = "#HOOK"
WORKER_SK = "#WORKER"
ALL_RUNS = "RUNS"
#: A run's output or error larger than this is kept in S3, not in the run item.
RESULT_INLINE_LIMIT = 64_000


def _run_pk(run_id: str) -> str:
    return f"R#{run_id}"


def _chunk_sk(seq: int) -> str:
    return f"E#{seq:012d}"


def _order_key(created: float, run_id: str) -> str:
    return f"{created:017.6f}#{run_id}"


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def table_definition(table: str) -> dict[str, Any]:
    """The ``CreateTable`` arguments of worldflow's table (setup and tests)."""
    key_attrs = ["pk", "sk", "all_pk", "order", "st_pk", "wf_pk"]

    def index(name: str, pk: str, projection: dict[str, Any]) -> dict[str, Any]:
        return {
            "IndexName": name,
            "KeySchema": [
                {"AttributeName": pk, "KeyType": "HASH"},
                {"AttributeName": "order", "KeyType": "RANGE"},
            ],
            "Projection": projection,
        }

    return {
        "TableName": table,
        "BillingMode": "PAY_PER_REQUEST",
        "AttributeDefinitions": [{"AttributeName": a, "AttributeType": "S"} for a in key_attrs],
        "KeySchema": [
            {"AttributeName": "pk", "KeyType": "HASH"},
            {"AttributeName": "sk", "KeyType": "RANGE"},
        ],
        "GlobalSecondaryIndexes": [
            index("by_time", "all_pk", {"ProjectionType": "KEYS_ONLY"}),
            index("by_status", "st_pk", {"ProjectionType": "KEYS_ONLY"}),
            index(
                "by_workflow",
                "wf_pk",
                {"ProjectionType": "INCLUDE", "NonKeyAttributes": ["st_pk"]},
            ),
        ],
    }


class DynamoStore:
    """Synchronous DynamoDB calls; the World runs them on its threads."""

    def __init__(self, client: Any, table: str, blobs: Blobs) -> None:
        self.client = client
        self.table = table
        self.blobs = blobs
        self.where = f"DynamoDB table {table!r}"

    # -- runs ------------------------------------------------------------------------
    def create_run(self, create: RunCreate) -> tuple[RunInfo, bool]:
        at = create.event.at
        run_item = {
            "pk": {"S": _run_pk(create.run_id)},
            "sk": {"S": RUN_SK},
            "workflow": {"S": create.workflow},
            "status": {"S": "pending"},
            "created": {"N": repr(at)},
            "updated": {"N": repr(at)},
            "last_seq": {"N": "1"},
            "all_pk": {"S": ALL_RUNS},
            "order": {"S": _order_key(at, create.run_id)},
            "st_pk": {"S": "S#pending"},
            "wf_pk": {"S": f"W#{create.workflow}"},
        }
        items = [
            {
                "Put": {
                    "TableName": self.table,
                    "Item": run_item,
                    "ConditionExpression": "attribute_not_exists(pk)",
                }
            },
            {
                "Put": {
                    "TableName": self.table,
                    "Item": self._chunk(create.run_id, 1, [create.event]),
                }
            },
        ]
        try:
            with aws_call("DynamoDB TransactWriteItems", self.where):
                self._transact(items)
        except _Cancelled as cancelled:
            if cancelled.reasons[:1] != ["ConditionalCheckFailed"]:
                raise cancelled.world_error(self.where) from cancelled.error
            existing = self.get_run(create.run_id)
            if existing is None:  # deleted in between: should not happen; say so
                raise cancelled.world_error(self.where) from cancelled.error
            return existing, False
        info = RunInfo(create.run_id, create.workflow, "pending", at, at, 1)
        return info, True

    def get_run(self, run_id: str) -> RunInfo | None:
        with aws_call("DynamoDB GetItem", self.where):
            response = self.client.get_item(
                TableName=self.table,
                Key={"pk": {"S": _run_pk(run_id)}, "sk": {"S": RUN_SK}},
                ConsistentRead=True,
            )
        item = response.get("Item")
        return None if item is None else self._run_info(item)

    def _run_info(self, item: dict[str, Any]) -> RunInfo:
        output = None
        if "output_blob" in item:
            output = json.loads(self.blobs.get(item["output_blob"]["S"]))
        elif "output" in item:
            output = json.loads(item["output"]["S"])
        error = None
        if "error_blob" in item:
            error = json.loads(self.blobs.get(item["error_blob"]["S"]))
        elif "error" in item:
            error = json.loads(item["error"]["S"])
        return RunInfo(
            id=item["pk"]["S"][2:],
            workflow=item["workflow"]["S"],
            status=item["status"]["S"],
            created_at=float(item["created"]["N"]),
            updated_at=float(item["updated"]["N"]),
            last_seq=int(item["last_seq"]["N"]),
            output=output,
            error=error,
        )

    # -- the one write path ------------------------------------------------------------
    def append(self, append: Append, now: float) -> bool:
        """Apply one append atomically; False if another writer took its sequence."""
        items = self._append_items(append, now)
        dropped: set[int] = set()
        for attempt in range(8):
            try:
                with aws_call("DynamoDB TransactWriteItems", self.where):
                    self._transact([item for i, item in enumerate(items) if i not in dropped])
                return True
            except _Cancelled as cancelled:
                kept = [i for i in range(len(items)) if i not in dropped]
                reasons = dict(zip(kept, cancelled.reasons, strict=False))
                if reasons.get(0) == "ConditionalCheckFailed":
                    return False  # the sequence was taken: the engine reloads
                hooks = {i for i, r in reasons.items() if i >= 2 and r == "ConditionalCheckFailed"}
                if hooks:
                    # A hook token held by another run stays with it (the engine
                    # fails our hook with HookConflict); a removed hook that is no
                    # longer ours is not deleted. Try again without those items.
                    dropped |= hooks
                    continue
                if "TransactionConflict" in reasons.values() and attempt < 7:
                    time.sleep(0.01 * 2**attempt)  # another transaction on these items
                    continue
                raise cancelled.world_error(self.where) from cancelled.error
        return False

    def _append_items(self, append: Append, now: float) -> list[dict[str, Any]]:
        run_id = append.run_id
        names = {"#n": "last_seq", "#u": "updated"}
        values: dict[str, Any] = {
            ":e": {"N": str(append.expected_seq)},
            ":n": {"N": str(append.last_seq)},
            ":u": {"N": repr(now)},
        }
        sets = ["#n = :n", "#u = :u"]
        if append.status is not None:
            sets += ["#s = :s", "#sp = :sp"]
            names.update({"#s": "status", "#sp": "st_pk"})
            values[":s"] = {"S": append.status}
            values[":sp"] = {"S": f"S#{append.status}"}
        for name, value in (("output", append.output), ("error", append.error)):
            if value is None:
                continue
            text = _dumps(value)
            if len(text) > RESULT_INLINE_LIMIT:
                names[f"#{name}"] = f"{name}_blob"
                values[f":{name}"] = {"S": self.blobs.put(f"{run_id}/{name}", text)}
            else:
                names[f"#{name}"] = name
                values[f":{name}"] = {"S": text}
            sets.append(f"#{name} = :{name}")
        update: dict[str, Any] = {
            "TableName": self.table,
            "Key": {"pk": {"S": _run_pk(run_id)}, "sk": {"S": RUN_SK}},
            "UpdateExpression": "SET " + ", ".join(sets),
            "ConditionExpression": "#n = :e",
            "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": values,
        }
        items: list[dict[str, Any]] = [
            {"Update": update},
            {
                "Put": {
                    "TableName": self.table,
                    "Item": self._chunk(run_id, append.expected_seq + 1, append.events),
                }
            },
        ]
        for hook in append.hooks_created:
            items.append(
                {
                    "Put": {
                        "TableName": self.table,
                        "Item": {
                            "pk": {"S": f"H#{hook.token}"},
                            "sk": {"S": HOOK_SK},
                            "run_id": {"S": hook.run_id},
                            "webhook": {"BOOL": hook.webhook},
                        },
                        "ConditionExpression": "attribute_not_exists(pk) OR run_id = :r",
                        "ExpressionAttributeValues": {":r": {"S": run_id}},
                    }
                }
            )
        for token in append.hooks_removed:
            items.append(
                {
                    "Delete": {
                        "TableName": self.table,
                        "Key": {"pk": {"S": f"H#{token}"}, "sk": {"S": HOOK_SK}},
                        "ConditionExpression": "run_id = :r",
                        "ExpressionAttributeValues": {":r": {"S": run_id}},
                    }
                }
            )
        if append.messages:
            items.append({"Put": {"TableName": self.table, "Item": self._outbox(append)}})
        return items

    def _chunk(self, run_id: str, first: int, events: Sequence[NewEvent]) -> dict[str, Any]:
        last = first + len(events) - 1
        text = _dumps([[e.kind, e.data, e.at] for e in events])
        item: dict[str, Any] = {
            "pk": {"S": _run_pk(run_id)},
            "sk": {"S": _chunk_sk(last)},
            "first": {"N": str(first)},
        }
        if len(text) > INLINE_LIMIT:
            item["blob"] = {"S": self.blobs.put(f"{run_id}/{first}", text)}
        else:
            item["ev"] = {"S": text}
        return item

    def _outbox(self, append: Append) -> dict[str, Any]:
        return {
            "pk": {"S": _run_pk(append.run_id)},
            "sk": {"S": f"O#{append.last_seq:012d}"},
            "msgs": {"S": _dumps([encode_outgoing(m) for m in append.messages])},
            "t": {"N": repr(time.time())},  # real time: how long the send has been pending
        }

    def _transact(self, items: list[dict[str, Any]]) -> None:
        try:
            self.client.transact_write_items(TransactItems=items)
        except Exception as exc:
            if error_code(exc) == "TransactionCanceledException":
                reasons = [
                    str(r.get("Code", "None"))
                    for r in getattr(exc, "response", {}).get("CancellationReasons", [])
                ]
                raise _Cancelled(reasons, exc) from exc
            raise

    def clear_outbox(self, run_id: str, last_seqs: Sequence[int]) -> None:
        """The messages of these appends were sent: forget them."""
        requests = [
            {"DeleteRequest": {"Key": {"pk": {"S": _run_pk(run_id)}, "sk": {"S": f"O#{seq:012d}"}}}}
            for seq in last_seqs
        ]
        for start in range(0, len(requests), 25):
            with aws_call("DynamoDB BatchWriteItem", self.where):
                self.client.batch_write_item(
                    RequestItems={self.table: requests[start : start + 25]}
                )

    # -- reading a log ------------------------------------------------------------------
    def read_events(self, run_id: str, after_seq: int) -> tuple[list[Event], list[Outbox]]:
        """The events after ``after_seq``, and the outbox items found on the way."""
        events: list[Event] = []
        outbox: list[Outbox] = []
        for item in self._query(
            KeyConditionExpression="pk = :p AND sk > :s",
            ExpressionAttributeValues={
                ":p": {"S": _run_pk(run_id)},
                ":s": {"S": _chunk_sk(after_seq)},
            },
            ConsistentRead=True,
        ):
            sk = item["sk"]["S"]
            if sk.startswith("O#"):
                outbox.append(
                    Outbox(int(sk[2:]), json.loads(item["msgs"]["S"]), float(item["t"]["N"]))
                )
                continue
            text = self.blobs.get(item["blob"]["S"]) if "blob" in item else item["ev"]["S"]
            seq = int(item["first"]["N"])
            for kind, data, at in json.loads(text):
                if seq > after_seq:
                    events.append(Event(run_id, seq, kind, data, at))
                seq += 1
        return events, outbox

    def _query(self, **kwargs: Any) -> Iterator[dict[str, Any]]:
        while True:
            with aws_call("DynamoDB Query", self.where):
                response = self.client.query(TableName=self.table, **kwargs)
            yield from response.get("Items", [])
            if "LastEvaluatedKey" not in response:
                return
            kwargs["ExclusiveStartKey"] = response["LastEvaluatedKey"]

    # -- listing runs ----------------------------------------------------------------------
    def list_runs(
        self, status: str | None, workflow: str | None, limit: int, cursor: str | None
    ) -> RunPage:
        kwargs: dict[str, Any] = {"ScanIndexForward": False}
        if workflow is not None:
            kwargs["IndexName"] = "by_workflow"
            kwargs["KeyConditionExpression"] = "wf_pk = :k"
            kwargs["ExpressionAttributeValues"] = {":k": {"S": f"W#{workflow}"}}
            if status is not None:
                kwargs["FilterExpression"] = "st_pk = :s"
                kwargs["ExpressionAttributeValues"][":s"] = {"S": f"S#{status}"}
        elif status is not None:
            kwargs["IndexName"] = "by_status"
            kwargs["KeyConditionExpression"] = "st_pk = :k"
            kwargs["ExpressionAttributeValues"] = {":k": {"S": f"S#{status}"}}
        else:
            kwargs["IndexName"] = "by_time"
            kwargs["KeyConditionExpression"] = "all_pk = :k"
            kwargs["ExpressionAttributeValues"] = {":k": {"S": ALL_RUNS}}
        if cursor:
            kwargs["ExclusiveStartKey"] = json.loads(base64.urlsafe_b64decode(cursor))
        keys: list[dict[str, Any]] = []
        next_key: dict[str, Any] | None = None
        while len(keys) < limit:
            kwargs["Limit"] = limit - len(keys)
            with aws_call("DynamoDB Query", self.where):
                response = self.client.query(TableName=self.table, **kwargs)
            keys += [{"pk": i["pk"], "sk": i["sk"]} for i in response.get("Items", [])]
            next_key = response.get("LastEvaluatedKey")
            if next_key is None:
                break
            kwargs["ExclusiveStartKey"] = next_key
        runs = {info.id: info for info in self._get_runs(keys)}
        ordered = [runs[k["pk"]["S"][2:]] for k in keys if k["pk"]["S"][2:] in runs]
        # A page cut short by the limit has more after it; a filter may make it less
        # than full, in which case DynamoDB's own key says where to go on.
        cursor_out = None
        if next_key is not None:
            cursor_out = base64.urlsafe_b64encode(_dumps(next_key).encode()).decode()
        return RunPage(ordered, cursor_out)

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

    # -- hooks and workers ---------------------------------------------------------------------
    def get_hook(self, token: str) -> HookInfo | None:
        with aws_call("DynamoDB GetItem", self.where):
            response = self.client.get_item(
                TableName=self.table,
                Key={"pk": {"S": f"H#{token}"}, "sk": {"S": HOOK_SK}},
                ConsistentRead=True,
            )
        item = response.get("Item")
        if item is None:
            return None
        return HookInfo(token, item["run_id"]["S"], bool(item["webhook"]["BOOL"]))

    def heartbeat(self, worker_id: str, expires: float) -> None:
        """Say this worker is alive until ``expires`` (epoch seconds, real time)."""
        with aws_call("DynamoDB PutItem", self.where):
            self.client.put_item(
                TableName=self.table,
                Item={
                    "pk": {"S": f"W#{worker_id}"},
                    "sk": {"S": WORKER_SK},
                    "expires": {"N": repr(expires)},
                    # DynamoDB's TTL (when enabled on "ttl") removes old heartbeats.
                    "ttl": {"N": str(int(expires) + 86400)},
                },
            )

    def worker_expires(self, worker_id: str) -> float | None:
        with aws_call("DynamoDB GetItem", self.where):
            response = self.client.get_item(
                TableName=self.table,
                Key={"pk": {"S": f"W#{worker_id}"}, "sk": {"S": WORKER_SK}},
                ConsistentRead=True,
            )
        item = response.get("Item")
        return None if item is None else float(item["expires"]["N"])

    def leave(self, worker_id: str) -> None:
        with aws_call("DynamoDB DeleteItem", self.where):
            self.client.delete_item(
                TableName=self.table,
                Key={"pk": {"S": f"W#{worker_id}"}, "sk": {"S": WORKER_SK}},
            )


class Outbox:
    """Messages of an append whose sending was not yet confirmed."""

    __slots__ = ("last_seq", "messages", "written")

    def __init__(self, last_seq: int, messages: list[dict[str, Any]], written: float) -> None:
        self.last_seq = last_seq
        self.messages = messages
        self.written = written


class _Cancelled(Exception):
    """A transaction was cancelled; ``reasons`` has one code per item (``"None"`` if fine)."""

    def __init__(self, reasons: list[str], error: BaseException) -> None:
        super().__init__(reasons)
        self.reasons = reasons
        self.error = error

    def world_error(self, where: str) -> AwsWorldError:
        return AwsWorldError(
            f"AWS DynamoDB TransactWriteItems on {where} was cancelled (reasons: "
            f"{', '.join(self.reasons)})",
            "TransactionCanceledException",
        )
