"""The local world: SQLite on disk, queues and timers in this process.

Put together from its parts: :class:`~._store.Store` (runs, logs, hooks,
heartbeats and the messages table, in one SQLite database) and
:class:`~._queue.LocalQueue` (delivery from this process). Every process
that opens the same data directory is a worker; when one stops or is killed,
the others adopt its unfinished runs within the lease, and a run mid-step
resumes by running the step again (the lost attempt counts as an attempt).
Webhooks are answered on a local port, stable per data directory, by
whichever serving process binds it first.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

from worldflow.world import (
    Capabilities,
    Clock,
    SystemClock,
    World,
    new_worker_id,
    registered_workflows,
)

from ._queue import LocalQueue
from ._store import Store

__all__ = ["LocalWorld", "create_world"]


class LocalWorld(World):
    """Runs stored in SQLite under ``data_dir`` (``":memory:"`` for a private, in-memory one).

    >>> world = LocalWorld(".worldflow")
    >>> world = LocalWorld(":memory:", clock=wf.VirtualClock())   # tests

    ``read_only=True`` (for tools that only look): an absent database is read
    as empty and not created, and no webhook port is chosen.
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str] = ".worldflow",
        *,
        clock: Clock | None = None,
        heartbeat: float = 1.0,
        lease: float = 5.0,
        poll_interval: float = 0.05,
        public_url: str | None = None,
        webhook_port: int | None = None,
        max_webhook_bytes: int = 1 << 20,
        serve_webhooks: bool = True,
        read_only: bool = False,
    ) -> None:
        clock = clock or SystemClock()
        memory = str(data_dir) == ":memory:"
        self.data_dir = None if memory else Path(data_dir)
        worker_id = new_worker_id()
        path = ":memory:" if self.data_dir is None else str(self.data_dir / "worldflow.sqlite3")
        if read_only and not Path(path).exists():
            path = ":memory:"  # nothing has run here: read as empty, create nothing
        #: The SQLite file read and written; None when there is none (in memory, or
        #: opened read-only where no database exists yet).
        self.database = None if path == ":memory:" else Path(path)
        store = Store(path, worker_id, clock)
        queue = LocalQueue(store, clock, registered_workflows, poll_interval=poll_interval)
        listen: tuple[str, int] | None = None
        if public_url is None and not read_only:
            port = webhook_port or _stored_port(store)
            public_url = f"http://127.0.0.1:{port}"
            if serve_webhooks:
                listen = ("127.0.0.1", port)
        elif public_url is None:
            stored = store.get_meta("webhook_port")
            public_url = f"http://127.0.0.1:{stored}" if stored else None
        super().__init__(
            storage=store,
            queue=queue,
            workers=store,
            clock=clock,
            capabilities=Capabilities(
                transactional_messages=True, embedded=True, process_private=memory
            ),
            public_url=public_url.rstrip("/") if public_url else None,
            webhook_listen=listen,
            heartbeat=heartbeat,
            lease=lease,
            hold=float("inf"),  # the local queue never delivers early: timers are in-process
            max_webhook_bytes=max_webhook_bytes,
            name="local",
            worker_id=worker_id,
        )
        self.store = store

    def __repr__(self) -> str:
        return f"<LocalWorld {self.store.path!r}>"


def _stored_port(store: Store) -> int:
    """The data directory's webhook port: chosen once, kept (a tunnel forwards to it)."""
    stored = store.get_meta("webhook_port")
    if stored:
        return int(stored)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    store.set_meta("webhook_port", str(port))
    return port


def create_world(settings: dict[str, Any]) -> LocalWorld:
    """The factory behind ``WORLDFLOW_WORLD=local``."""
    return LocalWorld(
        settings.get("data_dir") or ".worldflow",
        public_url=settings.get("public_url"),
        lease=float(settings.get("lease", 5.0)),
        heartbeat=float(settings.get("heartbeat", 1.0)),
        webhook_port=int(settings["webhook_port"]) if settings.get("webhook_port") else None,
        read_only=settings.get("read_only") == "1",
    )
