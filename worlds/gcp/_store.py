"""Firestore: the GCP world's Storage and Workers.

The data model (docs/gcp.md draws it):

- ``runs/{run_id}``: the projection (``workflow``, ``status``, ``created_at``,
  ``updated_at``, ``last_seq``, ``output``/``error`` as JSON text, ``holder``).
- ``runs/{run_id}/events/{expected_seq:012d}``: one document per append, the
  events numbered ``expected_seq + 1`` .. ``last`` as JSON text, and its
  outbox (``out``, ``sent``, ``written_at``) when the append has messages. The
  id is the sequence number the append expected, so two writers appending at
  one position collide on one id: the document is created with a
  must-not-exist precondition and the loser fails whole, writing nothing.
- ``hooks/{sha256(token)}``: ``token``, ``run_id``, ``webhook``, ``n`` (payloads
  counted), ``recent`` (the last counts: call id -> number).
- ``workers/{worker_id}``: ``until`` (wall-clock seconds the heartbeat holds).
- Tags: the run document's ``tags`` (a map) and ``tag_list`` (``"key=value"``
  strings, which ``list_runs(tags=)`` queries with ``array-contains``, newest first).
- ``runs/{run_id}/streams/{stream}``: a stream's head (``n`` chunks, ``w`` what each
  writer wrote, as JSON text); ``.../streams/{stream}/chunks/{first:012d}``: one
  flush of chunks from index ``first`` (``ch``, JSON text). A flush is created with
  a must-not-exist precondition at the stream's length as the writer knows it, so
  two writers (or a writer behind another) collide on one id, as appends do.

When a run ends, its run document, every events document and its streams'
documents get ``expire_at`` (a timestamp: the end plus ``run_ttl``), the field
Firestore's TTL policy (infra/gcp/main.tf) deletes documents after.

Values are JSON text, not Firestore maps: Firestore has no nested arrays, and
text keeps a document's size exact. Big values never reach this module: the
engine puts them in Cloud Storage first and stores a reference.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import datetime as dt
import hashlib
import logging
import random
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from worldflow.world import (
    TERMINAL,
    Append,
    ChunkWrite,
    CorruptLogError,
    Event,
    HookInfo,
    Log,
    Outgoing,
    RunCreate,
    RunInfo,
    RunPage,
    StreamInfo,
    Unsent,
    WorldError,
    json_dumps,
    json_loads,
)

from ._errors import GcpError, translate
from ._queue import delivery_of, encode_task

__all__ = ["FirestoreStore"]

log = logging.getLogger("worldflow.gcp")


#: Tries to count a payload of a hook (each a read and a conditional write).
PAYLOAD_TRIES = 30
#: The calls of ``next_payload`` a hook remembers (by id, with the number each got).
RECENT_PAYLOADS = 16
#: The errors of a payload count's write after which it reads the hook again: the
#: document changed since it was read (``FAILED_PRECONDITION``), or the write may or may
#: not have been applied.
RETRIED_COUNT = ("FailedPrecondition", "Aborted", "ServiceUnavailable", "DeadlineExceeded")
#: Tries of a transaction that Firestore aborts for contention (``ABORTED``), with a
#: backoff between them; the client itself tries each 5 times at once.
TRANSACTION_TRIES = 5


async def transactional(txn: Any, client: Any, what: str) -> Any:
    """Run ``txn`` (an ``async_transactional`` function) in a transaction of ``client``.

    The client's own errors are not all Google's: once its 5 tries are ABORTED it raises
    a ``ValueError`` ("Failed to commit transaction in 5 attempts"), tried again here
    with a backoff, then a :class:`GcpError` saying so; and when the transaction could
    not begin (the connection lost, or the call cancelled) its rollback raises
    ``ValueError`` ("no transaction ID"), which hides the real error: that one is
    raised instead (a cancellation stays a cancellation).
    """
    from google.api_core import exceptions

    for attempt in range(TRANSACTION_TRIES):
        if attempt:
            await asyncio.sleep(min(0.05 * 2**attempt, 1.0) * (0.5 + random.random()))
        try:
            with translate(what):
                try:
                    return await txn(client.transaction())
                except ValueError as exc:
                    hidden = exc.__context__
                    if exc.__cause__ is None and isinstance(hidden, BaseException):
                        raise hidden from None  # the rollback's error hid it
                    raise
        except ValueError as exc:
            if not isinstance(exc.__cause__, exceptions.Aborted):
                raise
    raise GcpError(
        f"could not {what}: Firestore aborted the transaction for contention "
        f"{TRANSACTION_TRIES * 5} times (ABORTED: other writes to the same documents)"
    )


def hook_doc_id(token: str) -> str:
    """Tokens may hold '/' or be long: the document id is a hash, the token a field."""
    return hashlib.sha256(token.encode()).hexdigest()


def _already_exists(exc: BaseException) -> bool:
    cause = exc.__cause__ if exc.__cause__ is not None else exc
    return type(cause).__name__ in ("AlreadyExists", "Conflict")


def _tag_list(tags: Mapping[str, str]) -> list[str]:
    """What ``list_runs(tags=)`` queries: ``key=value`` (a key has no '=')."""
    return sorted(f"{key}={value}" for key, value in tags.items())


def _decode_out(text: str, where: str) -> list[Outgoing]:
    """An outbox: the bodies of the tasks its messages make."""
    try:
        return [delivery_of(body).outgoing for body in json_loads(text, where)]
    except (TypeError, ValueError) as exc:
        raise CorruptLogError(f"{where} is not a list of messages: {exc}") from None


class FirestoreStore:
    """Storage and Workers over an ``AsyncClient`` (created on first use, on the running loop)."""

    def __init__(
        self, project: str, database: str = "(default)", *, run_ttl: float | None = None
    ) -> None:
        self.project = project
        self.database = database
        self.run_ttl = run_ttl
        self._client: Any = None
        self._closed = False
        self._holders: dict[str, str] = {}  # run -> the holder this process last wrote
        # run -> the ids of all its events documents, for runs this process has seen from
        # their start (created, or read from seq 0): a run's end gives them their expiry
        # without reading them first.
        self._chains: dict[str, set[int]] = {}
        # Billable operations, counted at the client (bench/bench_gcp.py).
        self.reads = 0
        self.writes = 0
        self.run_reads = 0  # get_run: what result() polls, apart from the engine's reads
        # Streams: each stream's head as this process last wrote it, and the commits of
        # stream writes (bench/bench_streams.py).
        self._heads: dict[tuple[str, str], tuple[int, dict[str, int]]] = {}
        self.stream_commits = 0

    def __repr__(self) -> str:
        return f"<FirestoreStore {self.project}/{self.database}>"

    @property
    def client(self) -> Any:
        if self._client is None:
            if self._closed:
                raise WorldError(f"{self!r} is closed")
            from google.cloud import firestore

            with translate("create a Firestore client"):
                self._client = firestore.AsyncClient(project=self.project, database=self.database)
        return self._client

    def close(self) -> None:
        self._closed = True
        if self._client is not None:
            client, self._client = self._client, None
            client.close()

    def _run_ref(self, run_id: str) -> Any:
        return self.client.collection("runs").document(run_id)

    def _batch_ref(self, run_id: str, expected_seq: int) -> Any:
        return self._run_ref(run_id).collection("events").document(f"{expected_seq:012d}")

    def _hook_ref(self, token: str) -> Any:
        return self.client.collection("hooks").document(hook_doc_id(token))

    def _worker_ref(self, worker_id: str) -> Any:
        return self.client.collection("workers").document(worker_id)

    async def _query(self, query: Any, what: str) -> list[Any]:
        """The documents a query finds (Firestore bills one read for an empty answer)."""
        with translate(f"{what} in Firestore"):
            docs = [snap async for snap in query.stream()]
        self.reads += max(1, len(docs))
        return docs

    @staticmethod
    def _info(run_id: str, doc: dict[str, Any]) -> RunInfo:
        """A run document; a value that cannot be read makes this run unreadable, not the
        caller's page."""
        values: dict[str, Any] = {"output": None, "error": None}
        unreadable = None
        for name in values:
            text = doc.get(name)
            if text is not None:
                try:
                    values[name] = json_loads(text, f"the {name} of run {run_id!r} in Firestore")
                except CorruptLogError as exc:
                    unreadable = str(exc)
        return RunInfo(
            id=run_id,
            workflow=str(doc.get("workflow", "")),
            status=doc.get("status", "pending"),
            created_at=float(doc.get("created_at", 0.0)),
            updated_at=float(doc.get("updated_at", 0.0)),
            last_seq=int(doc.get("last_seq", 0)),
            output=values["output"],
            error=values["error"],
            unreadable=unreadable,
            tags=dict(doc.get("tags") or {}),
        )

    # -- Storage -------------------------------------------------------------------
    async def create_run(self, create: RunCreate) -> tuple[RunInfo, bool]:
        at = create.event.at
        doc = {"workflow": create.workflow, "status": "pending", "created_at": at}
        doc.update(updated_at=at, last_seq=1, output=None, error=None, holder=None)
        if create.tags:
            doc.update(tags=dict(create.tags), tag_list=_tag_list(create.tags))
        log = json_dumps([{"kind": create.event.kind, "at": at, "data": create.event.data}])
        batch = self.client.batch()
        batch.create(self._run_ref(create.run_id), doc)
        batch.create(self._batch_ref(create.run_id, 0), {"last": 1, "log": log})
        self.writes += 2
        try:
            with translate(f"create run {create.run_id!r} in Firestore"):
                await batch.commit()
            self._chain(create.run_id, {0}, start=True)
        except Exception as exc:
            if not _already_exists(exc):
                raise
            info = await self.get_run(create.run_id)
            if info is None:  # pragma: no cover - a run is never deleted
                raise
            return info, False
        return self._info(create.run_id, doc), True

    async def append(self, appends: Sequence[Append]) -> list[bool]:
        by_run: dict[str, list[int]] = {}
        for i, a in enumerate(appends):
            by_run.setdefault(a.run_id, []).append(i)
        results = [False] * len(appends)

        async def chain(indices: list[int]) -> None:
            for i in indices:  # a chain: once one fails, the rest fail too
                if not await self._append_one(appends[i]):
                    return
                results[i] = True

        await asyncio.gather(*(chain(ix) for ix in by_run.values()))
        return results

    def _run_update(self, a: Append) -> dict[str, Any] | None:
        """The run document changes only with the status or a new holder: a sequential step,
        and a step-and-sleep turn after the first, write only their events' document.

        The run document's ``holder`` is a hint that may name a worker the run no longer
        waits on (a holder that ends is cleared with the run's status, never alone); every
        events document has the exact one, and :meth:`runs_held_by` checks the last. A
        holder is written unless this process wrote that very one last (``_holders``):
        no other writer has appended since, or this append would have lost its race.
        """
        update: dict[str, Any] = {}
        if a.status is not None:
            update["status"] = a.status
            update["updated_at"] = a.events[-1].at if a.events else time.time()
            update["last_seq"] = a.last_seq
            if a.output is not None:
                update["output"] = json_dumps(a.output)
            if a.error is not None:
                update["error"] = json_dumps(a.error)
            if a.status in TERMINAL:
                update["holder"] = None
                expiry = self._expiry(update["updated_at"])
                if expiry is not None:
                    update["expire_at"] = expiry
        if a.holder is not None and self._holders.get(a.run_id) != a.holder:
            update.setdefault("holder", a.holder)
        return update or None

    def _chain(self, run_id: str, ids: set[int], *, start: bool = False) -> None:
        """Note events documents of a run (``start``: all of them from its first)."""
        known = self._chains.get(run_id)
        if known is not None:
            known.update(ids)
        elif start and self.run_ttl is not None:
            self._chains[run_id] = set(ids)
            if len(self._chains) > 2_000:  # the oldest then reads its ids at its end
                del self._chains[next(iter(self._chains))]

    def _expiry(self, ended: float) -> dt.datetime | None:
        """When a run that ended at ``ended`` may be deleted (Firestore's TTL reads it)."""
        if self.run_ttl is None:
            return None
        return dt.datetime.fromtimestamp(ended + self.run_ttl, dt.UTC)

    async def _expire_events(self, run_id: str, expiry: dt.datetime, skip: int) -> None:
        """Give the run's earlier events documents and its streams' documents its expiry:
        one read and one write each, once, when the run ends (the TTL policy deletes documents one by one, and a
        run document's deletion leaves its events)."""
        known = self._chains.pop(run_id, None)
        if known is not None:  # every document of the chain passed through this process
            events = self._run_ref(run_id).collection("events")
            refs = [events.document(f"{seq:012d}") for seq in sorted(known - {skip})]
        else:
            query = self._run_ref(run_id).collection("events").select(["last"])
            docs = await self._query(query, f"list the events of run {run_id!r}")
            refs = [doc.reference for doc in docs if doc.id != f"{skip:012d}"]
        # Its streams too: each head and its flushes (a query per stream; a run that
        # wrote none costs one empty query).
        heads = await self._query(
            self._run_ref(run_id).collection("streams"), f"list the streams of run {run_id!r}"
        )
        for head in heads:
            refs.append(head.reference)
            chunks = head.reference.collection("chunks").select(["first"])
            found = await self._query(chunks, f"list a stream of run {run_id!r}")
            refs += [doc.reference for doc in found]
        for start in range(0, len(refs), 500):  # a batch takes 500 writes
            batch = self.client.batch()
            for ref in refs[start : start + 500]:
                batch.update(ref, {"expire_at": expiry})
            with translate(f"set the expiry of run {run_id!r}'s events in Firestore"):
                await batch.commit()
        self.writes += len(refs)

    def _wrote(self, a: Append, update: dict[str, Any] | None) -> None:
        """After a committed append: the run document's holder, as this process wrote it."""
        if update is None or "holder" not in update:
            return  # unchanged
        self._holders.pop(a.run_id, None)
        if update["holder"] is not None:
            self._holders[a.run_id] = update["holder"]
            if len(self._holders) > 10_000:
                del self._holders[next(iter(self._holders))]

    async def _append_one(self, a: Append) -> bool:
        doc: dict[str, Any] = {
            "last": a.last_seq,
            "log": json_dumps([{"kind": e.kind, "at": e.at, "data": e.data} for e in a.events]),
            "holder": a.holder,
        }
        if a.messages:
            # The outbox: the engine sends these once this write is durable, then marks
            # them sent; a reader of the log sends them if the writer died in between.
            out = b"[" + b",".join(encode_task(m) for m in a.messages) + b"]"
            doc.update(out=out.decode(), sent=False, written_at=time.time())
        update = self._run_update(a)
        expiry = None if update is None else update.get("expire_at")
        if expiry is not None:
            doc["expire_at"] = expiry
        try:
            if a.hooks_created or a.hooks_removed:
                ok = await self._append_with_hooks(a, doc, update)
            else:
                ok = await self._commit(a, doc, update)
        except BaseException:
            self._holders.pop(a.run_id, None)  # whether it was written is not known
            raise
        if ok:
            self._wrote(a, update)
            self._chain(a.run_id, {a.expected_seq})
            if expiry is not None:
                # Once the run's end is durable. Should this fail (or the process die
                # first), the earlier events documents keep no expiry: they outlive the
                # run document (WORLDFLOW_RETENTION's sweep deletes them, if shorter).
                try:
                    await self._expire_events(a.run_id, expiry, a.expected_seq)
                except Exception as exc:
                    log.warning(
                        "worldflow: run %s ended, its events keep no expiry: %s", a.run_id, exc
                    )
        else:
            self._holders.pop(a.run_id, None)  # another writer's: the run document is theirs
        return ok

    async def _commit(self, a: Append, doc: dict[str, Any], update: dict[str, Any] | None) -> bool:
        batch = self.client.batch()
        batch.create(self._batch_ref(a.run_id, a.expected_seq), doc)
        if update is not None:
            batch.update(self._run_ref(a.run_id), update)
        try:
            with translate(f"append to run {a.run_id!r} in Firestore"):
                await batch.commit()
        except Exception as exc:
            if _already_exists(exc):
                return False
            raise
        self.writes += 1 if update is None else 2
        return True

    async def _append_with_hooks(
        self, a: Append, doc: dict[str, Any], update: dict[str, Any] | None
    ) -> bool:
        """Hooks change rarely: a transaction reads their documents, then writes all."""
        from google.cloud import firestore

        batch_ref = self._batch_ref(a.run_id, a.expected_seq)
        tokens = [h.token for h in a.hooks_created] + list(a.hooks_removed)

        @firestore.async_transactional  # type: ignore[untyped-decorator]
        async def txn(transaction: Any) -> bool:
            snap = await batch_ref.get(transaction=transaction)
            held: dict[str, str | None] = {}
            for token in tokens:
                hook = await self._hook_ref(token).get(transaction=transaction)
                held[token] = hook.get("run_id") if hook.exists else None
            self.reads += 1 + len(tokens)
            if snap.exists:
                return False
            transaction.create(batch_ref, doc)
            writes = 1
            if update is not None:
                transaction.update(self._run_ref(a.run_id), update)
                writes += 1
            for h in a.hooks_created:
                if held[h.token] is None:  # another run's token stays its own
                    data = {"token": h.token, "run_id": h.run_id, "webhook": h.webhook, "n": 0}
                    transaction.set(self._hook_ref(h.token), data)
                    writes += 1
            for token in a.hooks_removed:
                if held[token] == a.run_id:
                    transaction.delete(self._hook_ref(token))
                    writes += 1
            self.writes += writes
            return True

        ok: bool = await transactional(
            txn, self.client, f"append to run {a.run_id!r} (with hooks) in Firestore"
        )
        return ok

    async def read_log(self, run_id: str, after_seq: int = 0) -> Log:
        """One query: one document read per batch (append) of the run."""
        from google.cloud.firestore_v1.base_query import FieldFilter

        self._holders.pop(run_id, None)  # a reader may be behind another writer

        query = (
            self._run_ref(run_id)
            .collection("events")
            .where(filter=FieldFilter("last", ">", after_seq))
            .order_by("last")
        )
        docs = await self._query(query, f"read the events of run {run_id!r}")
        events: list[Event] = []
        unsent: list[Unsent] = []
        ids = {int(snap.id) for snap in docs if snap.id.isdigit()}
        self._chain(run_id, ids, start=after_seq == 0)
        for snap in docs:
            doc = snap.to_dict()
            where = f"run {run_id!r}: events document {snap.id} in Firestore"
            try:
                items = json_loads(doc["log"], where)
                last = int(doc["last"])
                first = last - len(items) + 1
                for i, item in enumerate(items):
                    data = item["data"]
                    if not isinstance(data, dict):
                        raise TypeError(f"event {first + i} is not an object")
                    events.append(Event(run_id, first + i, item["kind"], data, float(item["at"])))
            except (KeyError, TypeError, ValueError) as exc:
                raise CorruptLogError(f"{where}: {exc}") from None
            if doc.get("out") and not doc.get("sent"):
                messages = _decode_out(doc["out"], f"{where}: its outbox")
                unsent.append(Unsent(int(snap.id), messages, float(doc.get("written_at", 0.0))))
        return Log([e for e in events if e.seq > after_seq], unsent)

    async def mark_sent(self, run_id: str, seqs: Sequence[int]) -> None:
        """The outbox of these appends is in Cloud Tasks: no reader sends it again."""
        if not seqs:
            return
        batch = self.client.batch()
        for seq in seqs:
            batch.update(self._batch_ref(run_id, seq), {"sent": True})
        with translate(f"mark the outbox of run {run_id!r} sent in Firestore"):
            await batch.commit()
        self.writes += len(seqs)

    async def get_run(self, run_id: str) -> RunInfo | None:
        with translate(f"read run {run_id!r} from Firestore"):
            snap = await self._run_ref(run_id).get()
        self.reads += 1
        self.run_reads += 1
        return self._info(run_id, snap.to_dict()) if snap.exists else None

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
            return await self._list_tagged(dict(tags), status, workflow, limit, cursor)
        from google.cloud import firestore
        from google.cloud.firestore_v1.base_query import FieldFilter

        query: Any = self.client.collection("runs")
        if status is not None:
            query = query.where(filter=FieldFilter("status", "==", status))
        if workflow is not None:
            query = query.where(filter=FieldFilter("workflow", "==", workflow))
        query = query.order_by("created_at", direction=firestore.Query.DESCENDING).order_by(
            "__name__", direction=firestore.Query.DESCENDING
        )
        if cursor:
            try:
                created_at, last_id = json_loads(base64.urlsafe_b64decode(cursor.encode()), "")
                position = {"created_at": float(created_at), "__name__": self._run_ref(last_id)}
            except (ValueError, TypeError, CorruptLogError):
                raise ValueError(f"not a cursor of list_runs: {cursor!r}") from None
            query = query.start_after(position)
        docs = await self._query(query.limit(limit + 1), "list runs")
        runs = [self._info(snap.id, snap.to_dict()) for snap in docs[:limit]]
        next_cursor = None
        if len(docs) > limit and runs:
            last = runs[-1]
            raw = json_dumps([last.created_at, last.id]).encode()
            next_cursor = base64.urlsafe_b64encode(raw).decode()
        return RunPage(runs, next_cursor)

    async def get_hook(self, token: str) -> HookInfo | None:
        with translate(f"read hook {token!r} from Firestore"):
            snap = await self._hook_ref(token).get()
        self.reads += 1
        if not snap.exists:
            return None
        doc = snap.to_dict()
        return HookInfo(doc["token"], doc["run_id"], bool(doc.get("webhook")), int(doc.get("n", 0)))

    async def next_payload(self, token: str, *, webhook: bool = False) -> HookInfo | None:
        """Count one more payload of a hook and return its number.

        Not a transaction (twenty callers resuming one hook at once all failed theirs,
        ABORTED five times over, against the emulator): read the hook, then write
        ``n + 1`` on the precondition that the document is still the one read, noting
        this call's id with its number in ``recent`` (the last ``RECENT_PAYLOADS``
        calls). A write that lost to another caller's reads again, with a backoff; a
        write applied whose answer was lost (the client sends it again, and its
        precondition then fails) is found by its id at the next read, so it is counted
        once (a gap in the numbers would hold the next payload back for a minute).
        """
        ref = self._hook_ref(token)
        me = uuid.uuid4().hex[:16]
        for attempt in range(PAYLOAD_TRIES):
            if attempt:
                await asyncio.sleep(min(0.01 * 2**attempt, 0.2) * (0.5 + random.random()))
            with translate(f"read hook {token!r} from Firestore"):
                snap = await ref.get()
            self.reads += 1
            if not snap.exists:
                return None
            doc = snap.to_dict()
            if webhook and not doc.get("webhook"):
                return None
            found = HookInfo(doc["token"], doc["run_id"], bool(doc.get("webhook")), 0)
            recent: dict[str, int] = doc.get("recent") or {}
            if me in recent:  # ours was applied: its answer was lost
                return dataclasses.replace(found, n=int(recent[me]))
            n = int(doc.get("n", 0)) + 1
            kept = sorted(recent, key=lambda k: int(recent[k]))[1 - RECENT_PAYLOADS :]
            counted = {"n": n, "recent": {**{k: recent[k] for k in kept}, me: n}}
            option = self.client.write_option(last_update_time=snap.update_time)
            try:
                with translate(f"count a payload of hook {token!r} in Firestore"):
                    await ref.update(counted, option=option)
            except GcpError as exc:
                if type(exc.__cause__).__name__ in RETRIED_COUNT:
                    continue  # another payload was counted, or ours and its answer lost
                raise
            self.writes += 1
            return dataclasses.replace(found, n=n)
        raise GcpError(
            f"could not count a payload of hook {token!r} in Firestore: {PAYLOAD_TRIES} "
            "tries each lost to another payload counted at the same time, or to a lost "
            "connection"
        )

    async def prune(self, ended_before: float, limit: int) -> int:
        """Delete up to ``limit`` runs that ended before ``ended_before`` (``updated_at`` is
        when the status last changed), each with its events documents (and so its outbox).
        Its hooks went when it ended; its blobs stay (a bucket lifecycle rule can age them).
        """
        from google.cloud.firestore_v1.base_query import FieldFilter

        query = (
            self.client.collection("runs")
            .where(filter=FieldFilter("status", "in", sorted(TERMINAL)))
            .where(filter=FieldFilter("updated_at", "<", ended_before))
            .limit(limit)
        )
        runs = await self._query(query, "find runs to delete")
        for snap in runs:
            events = self._run_ref(snap.id).collection("events")
            docs = await self._query(events, f"list the events of run {snap.id!r}")
            refs = [doc.reference for doc in docs]
            streams = self._run_ref(snap.id).collection("streams")
            for head in await self._query(streams, f"list the streams of run {snap.id!r}"):
                chunks = head.reference.collection("chunks")
                found = await self._query(chunks, f"list a stream of run {snap.id!r}")
                refs += [doc.reference for doc in found] + [head.reference]
            refs.append(snap.reference)
            for start in range(0, len(refs), 500):  # a batch takes 500 writes
                batch = self.client.batch()
                for ref in refs[start : start + 500]:
                    batch.delete(ref)
                with translate(f"delete run {snap.id!r} from Firestore"):
                    await batch.commit()
            self.writes += len(refs)
        return len(runs)

    async def runs_held_by(self, worker_id: str, limit: int) -> list[str]:
        """Runs whose document names the worker (an equality query on ``holder``), kept
        when their last events document names it too (the run document's is a hint)."""
        from google.cloud import firestore
        from google.cloud.firestore_v1.base_query import FieldFilter

        held: list[str] = []
        query = self.client.collection("runs").where(filter=FieldFilter("holder", "==", worker_id))
        after = None
        while len(held) < limit:
            page = query.limit(limit) if after is None else query.start_after(after).limit(limit)
            docs = await self._query(page, f"find the runs worker {worker_id!r} held")
            for snap in docs:
                if snap.get("status") in TERMINAL:
                    continue
                events = self._run_ref(snap.id).collection("events")
                last = events.order_by("last", direction=firestore.Query.DESCENDING).limit(1)
                found = await self._query(last, f"read the last events of run {snap.id!r}")
                if found and found[0].to_dict().get("holder") == worker_id:
                    held.append(snap.id)
            if len(docs) < limit:
                break
            after = docs[-1]
        return held[:limit]

    # -- tags ------------------------------------------------------------------------------
    async def _list_tagged(
        self,
        tags: dict[str, str],
        status: str | None,
        workflow: str | None,
        limit: int,
        cursor: str | None,
    ) -> RunPage:
        """Runs with every tag: ``tag_list`` array-contains the first, newest first (one
        composite index); the other filters applied to each page."""
        from google.cloud import firestore
        from google.cloud.firestore_v1.base_query import FieldFilter

        (key, value), *others = tags.items()
        query: Any = (
            self.client.collection("runs")
            .where(filter=FieldFilter("tag_list", "array_contains", f"{key}={value}"))
            .order_by("created_at", direction=firestore.Query.DESCENDING)
            .order_by("__name__", direction=firestore.Query.DESCENDING)
        )
        position = None
        if cursor:
            try:
                created_at, last_id = json_loads(base64.urlsafe_b64decode(cursor.encode()), "")
                position = {"created_at": float(created_at), "__name__": self._run_ref(last_id)}
            except (ValueError, TypeError, CorruptLogError):
                raise ValueError(f"not a cursor of list_runs: {cursor!r}") from None
        found: list[RunInfo] = []
        last: RunInfo | None = None
        more = False
        while len(found) < limit:
            page_size = max(limit - len(found), 10)
            page = query if position is None else query.start_after(position)
            docs = await self._query(page.limit(page_size), "list runs by tag")
            for n, snap in enumerate(docs):
                info = self._info(snap.id, snap.to_dict())
                last = info
                if (
                    status in (None, info.status)
                    and workflow in (None, info.workflow)
                    and all(info.tags.get(k) == v for k, v in others)
                ):
                    found.append(info)
                    if len(found) == limit:
                        more = n + 1 < len(docs) or len(docs) == page_size
                        break
            if len(found) == limit or len(docs) < page_size or last is None:
                break
            position = {"created_at": last.created_at, "__name__": self._run_ref(last.id)}
        next_cursor = None
        if more and last is not None:
            raw = json_dumps([last.created_at, last.id]).encode()
            next_cursor = base64.urlsafe_b64encode(raw).decode()
        return RunPage(found, next_cursor)

    async def set_tags(self, run_id: str, tags: Mapping[str, str]) -> None:
        """A transaction: read the run's tags, write them merged (map and list)."""
        from google.cloud import firestore

        ref = self._run_ref(run_id)

        @firestore.async_transactional  # type: ignore[untyped-decorator]
        async def txn(transaction: Any) -> None:
            snap = await ref.get(transaction=transaction)
            self.reads += 1
            if not snap.exists:
                raise WorldError(f"run {run_id!r} is not in Firestore: cannot tag it")
            merged = (
                {**(snap.get("tags") or {}), **tags} if "tags" in snap.to_dict() else dict(tags)
            )
            transaction.update(ref, {"tags": merged, "tag_list": _tag_list(merged)})
            self.writes += 1

        with translate(f"tag run {run_id!r} in Firestore"):
            await txn(self.client.transaction())

    # -- streams ---------------------------------------------------------------------------
    def _stream_ref(self, run_id: str, stream: str) -> Any:
        return self._run_ref(run_id).collection("streams").document(stream)

    async def _read_head(self, run_id: str, stream: str) -> tuple[int, dict[str, int]]:
        with translate(f"read the head of stream {stream!r} of run {run_id!r} in Firestore"):
            snap = await self._stream_ref(run_id, stream).get()
        self.reads += 1
        if not snap.exists:
            return 0, {}
        doc = snap.to_dict()
        writers = json_loads(doc.get("w", "{}"), f"the head of stream {stream!r} of {run_id!r}")
        return int(doc.get("n", 0)), writers if isinstance(writers, dict) else {}

    async def write_chunks(self, write: ChunkWrite) -> int:
        """One batch: the flush's document created at the stream's length (the fence) and
        the head set. A process that knows the head (it wrote last) reads nothing."""
        run_id, stream = write.run_id, write.stream
        known = self._heads.get((run_id, stream))
        for _ in range(20):
            if known is None:
                known = await self._read_head(run_id, stream)
            length, writers = known
            written = int(writers.get(write.writer, 0))
            new = write.chunks[max(0, written - write.start) :]
            if not new:  # then the writer's count is unchanged too
                return length
            count = max(written, write.start + len(write.chunks))
            head_ref = self._stream_ref(run_id, stream)
            batch = self.client.batch()
            batch.create(
                head_ref.collection("chunks").document(f"{length:012d}"),
                {"first": length, "ch": json_dumps(new)},
            )
            merged = {**writers, write.writer: count}
            batch.set(head_ref, {"n": length + len(new), "w": json_dumps(merged)})
            try:
                with translate(f"write to stream {stream!r} of run {run_id!r} in Firestore"):
                    await batch.commit()
            except Exception as exc:
                self.stream_commits += 1
                if not _already_exists(exc):
                    self._heads.pop((run_id, stream), None)
                    raise
                known = None  # another writer went first: read the head again
                self._heads.pop((run_id, stream), None)
                continue
            self.stream_commits += 1
            self.writes += 2
            self._heads[(run_id, stream)] = (length + len(new), merged)
            if len(self._heads) > 10_000:
                del self._heads[next(iter(self._heads))]
            return length + len(new)
        raise WorldError(f"could not write to stream {stream!r} of run {run_id!r}: contended")

    async def read_chunks(self, run_id: str, stream: str, start: int, limit: int) -> list[str]:
        from google.cloud import firestore
        from google.cloud.firestore_v1.base_query import FieldFilter

        chunks = self._stream_ref(run_id, stream).collection("chunks")
        begin = start
        if start > 0:  # the flush that holds ``start`` may begin before it
            back = (
                chunks.where(filter=FieldFilter("first", "<=", start))
                .order_by("first", direction=firestore.Query.DESCENDING)
                .limit(1)
            )
            docs = await self._query(back, f"read stream {stream!r} of run {run_id!r}")
            if docs:
                begin = int(docs[0].get("first"))
        query = chunks.where(filter=FieldFilter("first", ">=", begin)).order_by("first")
        docs = await self._query(
            query.limit(max(1, limit // 10)), f"read stream {stream!r} of run {run_id!r}"
        )
        texts: list[str] = []
        for snap in docs:
            where = f"stream {stream!r} of run {run_id!r}: chunks document {snap.id} in Firestore"
            doc = snap.to_dict()
            items = json_loads(doc.get("ch", ""), where)
            if not isinstance(items, list) or not all(isinstance(c, str) for c in items):
                raise CorruptLogError(f"{where} is not a list of chunks")
            texts += items[max(0, start - int(doc["first"])) :]
        return texts

    async def list_streams(self, run_id: str) -> list[StreamInfo]:
        docs = await self._query(
            self._run_ref(run_id).collection("streams"), f"list the streams of run {run_id!r}"
        )
        return sorted(
            (StreamInfo(snap.id, int(snap.get("n"))) for snap in docs), key=lambda i: i.name
        )

    # -- Workers -------------------------------------------------------------------------
    async def heartbeat(self, worker_id: str, until: float) -> None:
        with translate(f"write the heartbeat of worker {worker_id!r} to Firestore"):
            await self._worker_ref(worker_id).set({"until": until})
        self.writes += 1

    async def expiry(self, worker_id: str) -> float | None:
        with translate(f"read the heartbeat of worker {worker_id!r} from Firestore"):
            snap = await self._worker_ref(worker_id).get()
        self.reads += 1
        return float(snap.get("until")) if snap.exists else None

    async def expired(self, before: float, limit: int) -> list[str]:
        from google.cloud.firestore_v1.base_query import FieldFilter

        query = self.client.collection("workers").where(filter=FieldFilter("until", "<", before))
        docs = await self._query(query.order_by("until").limit(limit), "find stopped workers")
        return [snap.id for snap in docs]

    async def forget(self, worker_id: str) -> None:
        with translate(f"remove worker {worker_id!r} from Firestore"):
            await self._worker_ref(worker_id).delete()
        self.writes += 1
