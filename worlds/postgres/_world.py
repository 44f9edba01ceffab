"""The postgres world, put together: one PostgreSQL database shared by any number of workers.

:class:`~._store.Store` is the Storage, the Workers (heartbeats) and the
durable half of the queue (the ``messages`` table, written in the append's
own transaction); :class:`~._queue.PostgresQueue` claims messages and hands
them to the engine. The engine does the rest: heartbeats, the adoption of a
dead worker's runs, webhook intake on the embedded server.

Building a World connects once (blocking, bounded by ``connect_timeout``):
the schema is created if it is missing, its version checked, and the webhook
port read from it, so that a wrong URL or a schema of another version is an
error here, not in the middle of a run.
"""

from __future__ import annotations

import importlib.util
from typing import Any

from worldflow.world import (
    Capabilities,
    Clock,
    SystemClock,
    World,
    new_worker_id,
    registered_workflows,
)

from ._queue import PostgresQueue
from ._schema import prepare
from ._settings import PostgresSettings, describe
from ._store import Store

__all__ = ["PostgresWorld", "create_world"]


class PostgresWorld(World):
    """Runs in a PostgreSQL schema, delivered by every process that serves it.

    >>> world = PostgresWorld("postgresql://app@db:5432/app")
    >>> world = PostgresWorld(url, schema="test_1", clock=wf.VirtualClock(), lease=1.0)

    The keyword options are the fields of :class:`PostgresSettings`.
    """

    def __init__(
        self,
        url: str | PostgresSettings,
        *,
        clock: Clock | None = None,
        **options: Any,
    ) -> None:
        settings = url if isinstance(url, PostgresSettings) else PostgresSettings(url, **options)
        if options and isinstance(url, PostgresSettings):
            raise TypeError("pass the options in the PostgresSettings, or a URL with options")
        clock = clock or SystemClock()
        want_port = settings.public_url is None or settings.serve_webhooks
        prepared = prepare(settings, want_port=want_port and settings.webhook_port is None)
        port = settings.webhook_port or prepared.webhook_port
        worker_id = new_worker_id()
        store = Store(settings, worker_id, clock)
        queue = PostgresQueue(
            store,
            clock,
            registered_workflows,
            poll_interval=settings.poll_interval,
            concurrency=settings.concurrency,
            lease=settings.lease,
        )
        public_url = settings.public_url
        if public_url is None and port is not None:
            public_url = f"http://127.0.0.1:{port}"
        listen = None
        if settings.serve_webhooks and port is not None and not settings.read_only:
            listen = (settings.webhook_host, port)
        super().__init__(
            storage=store,
            queue=queue,
            workers=store,
            clock=clock,
            capabilities=Capabilities(transactional_messages=True, embedded=True),
            public_url=public_url,
            webhook_listen=listen,
            heartbeat=settings.heartbeat,
            lease=settings.lease,
            max_webhook_bytes=settings.max_webhook_bytes,
            name="postgres",
            worker_id=worker_id,
        )
        self.settings = settings
        self.store = store
        self.schema_created = prepared.created

    def __repr__(self) -> str:
        return f"<PostgresWorld {describe(self.settings.url)} schema={self.settings.schema}>"


def create_world(settings: dict[str, Any]) -> PostgresWorld:
    """The factory behind ``WORLDFLOW_WORLD=postgres`` (settings: docs/postgres.md)."""
    for module in ("psycopg", "psycopg_pool"):
        try:
            found = importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:
            found = False
        if not found:
            raise ImportError(
                f"the 'postgres' world needs {module!r}; install it with: "
                "pip install 'worldflow[postgres]'",
                name=module,
            )
    return PostgresWorld(PostgresSettings.from_mapping(settings))
