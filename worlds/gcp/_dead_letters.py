"""Dead letters on GCP: a Firestore collection of the messages the engine gave up on.

A message whose handling failed ``World.max_deliveries`` times (a workflow no
deployed module defines, a bug that raises on every delivery) is written to
``dead_letters/{id}`` by the task route, which then answers 200 so that Cloud
Tasks forgets the task. A document holds the task's body as it was sent
(``body``, JSON text: the message, its ``not_before`` and ``key``), the
``reason`` of the last failure, the ``attempts`` (the delivery's attempt, from
``X-CloudTasks-TaskRetryCount`` plus the deliveries of the tasks it continues)
and ``at`` (wall-clock seconds), with ``run_id`` and ``kind`` for people.

:meth:`FirestoreDeadLetters.redrive` creates a new task per letter (a first
delivery), then deletes the document, in that order: a crash between leaves
the letter listed while its task is queued, and a second redrive sends it
again. The redriven task is named after the letter and its burial, so real
Cloud Tasks refuses that second copy (``ALREADY_EXISTS`` counts as sent);
where it does not (the emulator), the engine ignores a message it has applied.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from worldflow.world import (
    CorruptLogError,
    DeadLetter,
    Delivery,
    json_loads,
)

from ._errors import translate
from ._queue import TaskQueue, delivery_of, encode_task

if TYPE_CHECKING:
    from ._store import FirestoreStore

__all__ = ["COLLECTION", "FirestoreDeadLetters"]

#: The Firestore collection of dead letters.
COLLECTION = "dead_letters"
#: A reason longer than this is cut (a traceback's text): the document stays small.
MAX_REASON = 4000
_SAFE_ID = re.compile(r"[A-Za-z0-9_.\-]{1,200}")


def letter_id(message_id: str) -> str:
    """A dead letter's id: its message's id where Firestore takes it as a document id.
    A message buried twice (two copies of its task) is one letter."""
    if _SAFE_ID.fullmatch(message_id) and message_id not in (".", "..") and "__" not in message_id:
        return message_id
    return "m-" + hashlib.sha256(message_id.encode()).hexdigest()[:40]


class FirestoreDeadLetters:
    """DeadLetters over the store's Firestore client; a redrive creates tasks on ``queue``."""

    def __init__(self, store: FirestoreStore, queue: TaskQueue) -> None:
        self.store = store
        self.queue = queue

    def __repr__(self) -> str:
        return f"<FirestoreDeadLetters {self.store.project}/{COLLECTION}>"

    def _collection(self) -> Any:
        return self.store.client.collection(COLLECTION)

    async def bury(self, delivery: Delivery, reason: str) -> None:
        m = delivery.message
        if len(reason) > MAX_REASON:
            reason = reason[: MAX_REASON - 1] + "…"
        doc = {
            "run_id": m.run_id,
            "kind": m.kind,
            "message_id": m.id,
            "body": encode_task(delivery.outgoing).decode(),
            "reason": reason,
            "attempts": delivery.attempt,
            "at": time.time(),
        }
        with translate(f"keep a dead letter of run {m.run_id!r} in Firestore"):
            await self._collection().document(letter_id(m.id)).set(doc)
        self.store.writes += 1

    async def dead_letters(self, limit: int) -> list[DeadLetter]:
        query = self._collection().order_by("at").limit(limit)
        docs = await self.store._query(query, "list the dead letters")
        return [self._letter(snap.id, snap.to_dict()) for snap in docs]

    @staticmethod
    def _letter(doc_id: str, doc: dict[str, Any]) -> DeadLetter:
        where = f"dead letter {doc_id!r} in Firestore"
        try:
            out = delivery_of(json_loads(doc["body"], where)).outgoing
            return DeadLetter(
                doc_id, out, str(doc.get("reason", "")), int(doc["attempts"]), float(doc["at"])
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise CorruptLogError(f"{where} is not a dead letter: {exc}") from None

    async def redrive(self, ids: Sequence[str] | None = None) -> int:
        if ids is None:
            chosen = await self._all()
        else:
            chosen = []
            for doc_id in dict.fromkeys(ids):
                if not doc_id or "/" in doc_id:
                    continue  # not an id this collection could hold
                with translate(f"read dead letter {doc_id!r} from Firestore"):
                    snap = await self._collection().document(doc_id).get()
                self.store.reads += 1
                if snap.exists:
                    chosen.append(snap)
        for snap in chosen:
            letter = self._letter(snap.id, snap.to_dict())
            # A first delivery, named after this burial: a redrive redone after a crash
            # (before the delete below) makes the same task, which Cloud Tasks refuses.
            await self.queue.create(letter.message, 0.0, f"redrive:{letter.id}@{letter.at}")
            with translate(f"delete dead letter {letter.id!r} from Firestore"):
                await snap.reference.delete()
            self.store.writes += 1
        return len(chosen)

    async def _all(self) -> list[Any]:
        found: list[Any] = []
        query = self._collection().order_by("at")
        after = None
        while True:
            page = query.limit(200) if after is None else query.start_after(after).limit(200)
            docs = await self.store._query(page, "list the dead letters")
            found += docs
            if len(docs) < 200:
                return found
            after = docs[-1]
