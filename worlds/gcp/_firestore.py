"""Firestore storage: runs, their event logs, the hook index, worker heartbeats.

The data model (docs/gcp.md draws it):

- ``runs/{run_id}``: the projection (``workflow``, ``status``, ``created_at``,
  ``updated_at``, ``last_seq``, ``output``/``error`` as JSON text).
- ``runs/{run_id}/events/{after:012d}``: one document per append, holding the
  events numbered ``after + 1`` .. ``last`` as JSON text. Its id is the
  sequence number the append expected, so two writers appending at the same
  position collide on one document id: the write creates it with a
  precondition (``exists = false``) and the loser fails cleanly, writing
  nothing. Batches, not single events, keep a sequential step at one or two
  document writes.
- ``hooks/{sha256(token)}``: ``token``, ``run_id``, ``webhook``.
- ``workers/{worker_id}``: ``beat`` (wall-clock seconds), for leases.

Values are stored as JSON text, not as Firestore maps: Firestore has no
nested arrays, and text keeps the size of a document exact. An event whose
data would push a batch past ~900 KB goes to Cloud Storage and the log keeps
``{"blob": name}`` in its place.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import json
import secrets
from collections.abc import Sequence
from typing import Any

from worldflow._world import (
    Append,
    Event,
    HookInfo,
    Message,
    NewEvent,
    Outgoing,
    RunCreate,
    RunInfo,
    RunPage,
)

from ._blobs import BlobStore
from ._errors import translate

__all__ = ["FirestoreStore"]

# Firestore's limit is 1 MiB per document; leave room for the other fields.
BATCH_LIMIT = 900_000
TERMINAL = ("completed", "failed", "cancelled")


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def hook_doc_id(token: str) -> str:
    """Tokens may hold '/' or be long: the document id is a hash, the token a field."""
    return hashlib.sha256(token.encode()).hexdigest()


def _already_exists(exc: BaseException) -> bool:
    return type(exc).__name__ in ("AlreadyExists", "Conflict")


class FirestoreStore:
    """The Storage protocol over an ``AsyncClient``, created on the running loop."""

    def __init__(self, project: str, database: str, blobs: BlobStore) -> None:
        self.project = project
        self.database = database
        self.blobs = blobs
        self._client: Any = None
        # Billable operations, counted at the client (bench/bench_gcp.py).
        self.reads = 0
        self.writes = 0
        self.run_reads = 0  # get_run: what result() polls, apart from the engine's reads

    @property
    def client(self) -> Any:
        if self._client is None:
            from google.cloud import firestore

            with translate("create a Firestore client"):
                self._client = firestore.AsyncClient(project=self.project, database=self.database)
        return self._client

    def close(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            client.close()

    def _run_ref(self, run_id: str) -> Any:
        return self.client.collection("runs").document(run_id)

    def _batch_ref(self, run_id: str, after: int) -> Any:
        return self._run_ref(run_id).collection("events").document(f"{after:012d}")

    def _hook_ref(self, token: str) -> Any:
        return self.client.collection("hooks").document(hook_doc_id(token))

    # -- encoding a batch of events --------------------------------------------------
    async def _encode_batch(self, run_id: str, first: int, events: Sequence[NewEvent]) -> str:
        items: list[dict[str, Any]] = [{"kind": e.kind, "at": e.at, "data": e.data} for e in events]
        texts = [_dumps(item) for item in items]
        total = sum(len(t.encode()) for t in texts)
        if total > BATCH_LIMIT:
            # Largest first, until the rest fits in one document.
            for i in sorted(range(len(items)), key=lambda i: -len(texts[i])):
                if total <= BATCH_LIMIT:
                    break
                data = _dumps(items[i]["data"]).encode()
                name = f"runs/{run_id}/events/{first + i}-{secrets.token_hex(6)}.json"
                await self.blobs.put(name, data)
                items[i] = {"kind": items[i]["kind"], "at": items[i]["at"], "blob": name}
                new_text = _dumps(items[i])
                total += len(new_text.encode()) - len(texts[i].encode())
                texts[i] = new_text
        return "[" + ",".join(texts) + "]"

    async def _decode_batch(self, run_id: str, doc: dict[str, Any]) -> list[Event]:
        items = json.loads(doc["log"])
        first = int(doc["last"]) - len(items) + 1
        out = []
        for i, item in enumerate(items):
            data = item.get("data")
            if "blob" in item:
                data = json.loads(await self.blobs.get(item["blob"]))
            out.append(Event(run_id, first + i, item["kind"], data, float(item["at"])))
        return out

    async def _encode_value(self, run_id: str, what: str, value: Any) -> dict[str, Any]:
        """A run's output or error: inline JSON text, or a blob when too big."""
        text = _dumps(value)
        if len(text.encode()) <= BATCH_LIMIT // 2:
            return {what: text, f"{what}_blob": None}
        name = f"runs/{run_id}/{what}-{secrets.token_hex(6)}.json"
        await self.blobs.put(name, text.encode())
        return {what: None, f"{what}_blob": name}

    async def _decode_value(self, doc: dict[str, Any], what: str) -> Any:
        if doc.get(f"{what}_blob"):
            return json.loads(await self.blobs.get(doc[f"{what}_blob"]))
        text = doc.get(what)
        return None if text is None else json.loads(text)

    async def _info(self, run_id: str, doc: dict[str, Any]) -> RunInfo:
        return RunInfo(
            id=run_id,
            workflow=doc["workflow"],
            status=doc["status"],
            created_at=float(doc["created_at"]),
            updated_at=float(doc["updated_at"]),
            last_seq=int(doc.get("last_seq", 0)),
            output=await self._decode_value(doc, "output"),
            error=await self._decode_value(doc, "error"),
        )

    # -- Storage -------------------------------------------------------------------------
    async def create_run(self, create: RunCreate, now: float) -> tuple[RunInfo, bool]:
        doc = {
            "workflow": create.workflow,
            "status": "pending",
            "created_at": create.event.at,
            "updated_at": create.event.at,
            "last_seq": 1,
            "output": None,
            "error": None,
        }
        log = await self._encode_batch(create.run_id, 1, [create.event])
        batch = self.client.batch()
        batch.create(self._run_ref(create.run_id), doc)
        batch.create(self._batch_ref(create.run_id, 0), {"last": 1, "log": log})
        self.writes += 2
        try:
            with translate(f"create run {create.run_id!r} in Firestore"):
                await batch.commit()
        except Exception as exc:
            cause = exc.__cause__ if exc.__cause__ is not None else exc
            if not _already_exists(cause):
                raise
            info = await self.get_run(create.run_id)
            if info is None:  # pragma: no cover - a run is never deleted
                raise
            return info, False
        return await self._info(create.run_id, doc), True

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

    async def _run_update(self, a: Append) -> dict[str, Any] | None:
        if a.status is None:
            return None  # the run document changes only with its status: one write per step
        update: dict[str, Any] = {
            "status": a.status,
            "updated_at": a.events[-1].at if a.events else 0.0,
            "last_seq": a.last_seq,
        }
        if a.output is not None:
            update.update(await self._encode_value(a.run_id, "output", a.output))
        if a.error is not None:
            update.update(await self._encode_value(a.run_id, "error", a.error))
        return update

    async def _append_one(self, a: Append) -> bool:
        log = await self._encode_batch(a.run_id, a.expected_seq + 1, a.events)
        batch_doc: dict[str, Any] = {"last": a.last_seq, "log": log}
        if a.messages:
            # The outbox: sent once this write is durable, and again by a cold load
            # (world.read_events) if the process died before it could send them.
            batch_doc["out"] = _dumps(
                [
                    {
                        "message": dataclasses.asdict(m.message),
                        "not_before": m.not_before,
                        "key": m.key,
                    }
                    for m in a.messages
                ]
            )
        update = await self._run_update(a)
        if a.hooks_created or a.hooks_removed:
            return await self._append_with_hooks(a, batch_doc, update)
        batch = self.client.batch()
        batch.create(self._batch_ref(a.run_id, a.expected_seq), batch_doc)
        self.writes += 1
        if update is not None:
            batch.update(self._run_ref(a.run_id), update)
            self.writes += 1
        try:
            with translate(f"append to run {a.run_id!r} in Firestore"):
                await batch.commit()
        except Exception as exc:
            if _already_exists(exc.__cause__ or exc):
                return False
            raise
        return True

    async def _append_with_hooks(
        self, a: Append, batch_doc: dict[str, Any], update: dict[str, Any] | None
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
            transaction.create(batch_ref, batch_doc)
            writes = 1
            if update is not None:
                transaction.update(self._run_ref(a.run_id), update)
                writes += 1
            for h in a.hooks_created:
                if held[h.token] in (None, a.run_id):  # another run's token stays its own
                    data = {"token": h.token, "run_id": h.run_id, "webhook": h.webhook}
                    transaction.set(self._hook_ref(h.token), data)
                    writes += 1
            for token in a.hooks_removed:
                if held[token] == a.run_id:
                    transaction.delete(self._hook_ref(token))
                    writes += 1
            self.writes += writes
            return True

        with translate(f"append to run {a.run_id!r} (with hooks) in Firestore"):
            ok: bool = await txn(self.client.transaction())
        return ok

    async def read_events(self, run_id: str, after_seq: int = 0) -> list[Event]:
        events, _, _ = await self.read_log(run_id, after_seq)
        return events

    async def read_log(
        self, run_id: str, after_seq: int = 0
    ) -> tuple[list[Event], list[Outgoing], int | None]:
        """The events after ``after_seq``; the last batch's outbox if it is not marked
        sent, and that batch's position (for :meth:`mark_sent`)."""
        from google.cloud.firestore_v1.base_query import FieldFilter

        query = (
            self._run_ref(run_id)
            .collection("events")
            .where(filter=FieldFilter("last", ">", after_seq))
            .order_by("last")
        )
        events: list[Event] = []
        with translate(f"read the events of run {run_id!r} from Firestore"):
            docs = [snap async for snap in query.stream()]
        self.reads += max(1, len(docs))
        outbox: list[Outgoing] = []
        position: int | None = None
        for snap in docs:
            doc = snap.to_dict()
            events.extend(await self._decode_batch(run_id, doc))
            outbox, position = [], None
            if doc.get("out") and not doc.get("sent"):
                position = int(snap.id)
                for item in json.loads(doc["out"]):
                    m = item["message"]
                    message = Message(m["id"], m["run_id"], m["kind"], m.get("data") or {})
                    outbox.append(Outgoing(message, item["not_before"], item["key"]))
        return [e for e in events if e.seq > after_seq], outbox, position

    async def mark_sent(self, run_id: str, position: int) -> None:
        """The outbox of the batch at ``position`` is in Cloud Tasks: no load re-sends it."""
        with translate(f"mark the outbox of run {run_id!r} sent in Firestore"):
            await self._batch_ref(run_id, position).update({"sent": True})
        self.writes += 1

    async def get_run(self, run_id: str) -> RunInfo | None:
        with translate(f"read run {run_id!r} from Firestore"):
            snap = await self._run_ref(run_id).get()
        self.reads += 1
        self.run_reads += 1
        if not snap.exists:
            return None
        return await self._info(run_id, snap.to_dict())

    async def list_runs(
        self,
        *,
        status: str | None = None,
        workflow: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> RunPage:
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
                created_at, last_id = json.loads(base64.urlsafe_b64decode(cursor.encode()))
            except ValueError:
                raise ValueError(f"not a cursor of list_runs: {cursor!r}") from None
            query = query.start_after(
                {"created_at": created_at, "__name__": self._run_ref(str(last_id))}
            )
        with translate("list runs in Firestore"):
            docs = [snap async for snap in query.limit(limit + 1).stream()]
        self.reads += max(1, len(docs))
        runs = [await self._info(snap.id, snap.to_dict()) for snap in docs[:limit]]
        next_cursor = None
        if len(docs) > limit and runs:
            last = runs[-1]
            raw = json.dumps([last.created_at, last.id]).encode()
            next_cursor = base64.urlsafe_b64encode(raw).decode()
        return RunPage(runs, next_cursor)

    async def get_hook(self, token: str) -> HookInfo | None:
        with translate(f"read hook {token!r} from Firestore"):
            snap = await self._hook_ref(token).get()
        self.reads += 1
        if not snap.exists:
            return None
        doc = snap.to_dict()
        return HookInfo(doc["token"], doc["run_id"], bool(doc.get("webhook")))

    # -- worker heartbeats -------------------------------------------------------------------
    async def heartbeat(self, worker_id: str, beat: float) -> None:
        with translate(f"write the heartbeat of worker {worker_id!r} to Firestore"):
            await self.client.collection("workers").document(worker_id).set({"beat": beat})
        self.writes += 1

    async def last_beat(self, worker_id: str) -> float | None:
        with translate(f"read the heartbeat of worker {worker_id!r} from Firestore"):
            snap = await self.client.collection("workers").document(worker_id).get()
        self.reads += 1
        return float(snap.get("beat")) if snap.exists else None

    async def leave(self, worker_id: str) -> None:
        with translate(f"remove worker {worker_id!r} from Firestore"):
            await self.client.collection("workers").document(worker_id).delete()
        self.writes += 1
