"""Serving the app inside this process (``listen=host:port``): the Cloud Run stand-in.

For tests and local development: uvicorn on the running loop, on a socket
bound here, so that a second World in the same process (a restart, a second
worker) finds the address taken and simply does not serve, as a second Cloud
Run instance behind one URL would not matter either. The app runs without
its lifespan: its routes hand work to this loop's engine (the one that
started the queue).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._queue import TaskQueue

__all__ = ["EmbeddedServer"]


class EmbeddedServer:
    def __init__(self, listen: str, queue: TaskQueue) -> None:
        host, _, port = listen.rpartition(":")
        self.host = host or "127.0.0.1"
        self.port = int(port)
        self.queue = queue
        self._server: Any = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> bool:
        """Serve; False when the address is taken (another World of the process serves it)."""
        import uvicorn

        from ._host import create_app

        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self.port))
        except OSError:
            sock.close()
            return False
        config = uvicorn.Config(
            create_app(self.queue),
            lifespan="off",
            log_config=None,
            access_log=False,
            timeout_graceful_shutdown=1,
        )
        self._server = uvicorn.Server(config)
        self._task = asyncio.get_running_loop().create_task(self._server.serve(sockets=[sock]))
        while not self._server.started:
            if self._task.done():
                self._task.result()
                return False
            await asyncio.sleep(0.005)
        return True

    async def close(self) -> None:
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(self._task, 5)
