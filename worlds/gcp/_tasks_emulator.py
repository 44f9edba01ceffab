"""Runs PyPI's gcloud-tasks-emulator with the fixes tests need, as a script of its own venv.

    .venv-gcloud-tasks/bin/python path/to/_tasks_emulator.py PORT

Not imported by worldflow: :mod:`worldflow.worlds.gcp.testing` runs this file
with the emulator's Python (the emulator pins an old protobuf, so it lives in a
venv of its own). What is patched, and why (docs/gcp.md, "emulators' quirks"):

- it binds every interface (``[::]``): bound to 127.0.0.1 only;
- it posts tasks with no timeout, so a hung handler would stop the queue for
  good: the task's ``dispatch_deadline`` (60 s without one), after which the
  task is retried like a failure, as Cloud Tasks does;
- it sweeps each queue every 0.1 s: 0.05 s, so a test waits less for a task;
- it dispatches one task at a time per queue, so one request held open (a hook
  payload the engine keeps until the one numbered before it comes) stops the
  whole queue: tasks are dispatched concurrently, as Cloud Tasks does (up to
  ``CONCURRENCY`` at once, the queue's ``max_concurrent_dispatches``).

It still retries a failed task at the next sweep forever (no backoff),
ignores task names (no de-duplication) and answers UNKNOWN for a queue it
does not have; the GCP world copes with all of that.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any
from urllib import error, request

import grpc
from gcloud_tasks_emulator import server  # type: ignore[import-not-found]


def _bind_loopback(self: server.APIThread) -> None:
    self._httpd = grpc.server(server.futures.ThreadPoolExecutor(max_workers=4))
    server.add_CloudTasksServicer_to_server(server.Greeter(self._state), self._httpd)
    self._httpd.add_insecure_port(f"127.0.0.1:{self._port}")
    self._httpd.start()
    while self._is_running.is_set():
        time.sleep(server._LOOP_SLEEP_TIME)


_urlopen = request.urlopen

CONCURRENCY = 32
_lock = threading.Lock()
_deadline = threading.local()  # the dispatch deadline of the task this thread posts
_pool = ThreadPoolExecutor(CONCURRENCY)


def _due(task: Any) -> bool:
    when = task.schedule_time
    return not when or when < datetime.now(UTC)


def _process_queue_concurrently(self: server.Processor, queue: str) -> None:
    """Take the queue's due tasks off it and dispatch each on the pool; a task that fails
    goes back on the queue for the next sweep, as the emulator's own loop does."""
    state = self._state
    while self._is_running.is_set():
        if queue not in state._queues or queue not in state._queue_tasks:
            break
        if state.queue(queue).state == server.Queue.State.RUNNING:
            due: list[Any] = []
            wait: list[Any] = []
            with _lock:
                for task in state._queue_tasks[queue]:
                    (due if _due(task) else wait).append(task)
                state._queue_tasks[queue] = wait
            for task in due:
                _pool.submit(_dispatch, state, queue, task)
        time.sleep(server._LOOP_SLEEP_TIME)


def _dispatch(state: Any, queue: str, task: Any) -> None:
    task.dispatch_count += 1
    deadline = task.dispatch_deadline
    _deadline.seconds = deadline.total_seconds() if deadline else 60.0
    try:
        with server._make_task_request(queue, task, state._target_host, state._target_port) as r:
            status = r.status
    except error.HTTPError as exc:
        status = exc.code
    except Exception:
        status = 500
    if 400 <= status < 600:
        with _lock:
            if queue in state._queue_tasks:
                state._queue_tasks[queue].append(task)


def _urlopen_with_timeout(req: request.Request, *args: object, **kwargs: object) -> object:
    kwargs.setdefault("timeout", getattr(_deadline, "seconds", 60.0))
    return _urlopen(req, *args, **kwargs)  # type: ignore[call-overload]


def main() -> None:
    port = int(sys.argv[1])
    server.APIThread.run = _bind_loopback
    server.request.urlopen = _urlopen_with_timeout
    server.Processor._process_queue = _process_queue_concurrently
    server._LOOP_SLEEP_TIME = 0.05
    logging.basicConfig(level=logging.CRITICAL)
    emulator = server.create_server("127.0.0.1", port, "127.0.0.1", 80, [], -1)
    emulator._api._is_running.set()
    emulator.start()
    print("ready", flush=True)
    try:
        while True:
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        emulator.stop()


if __name__ == "__main__":
    main()
