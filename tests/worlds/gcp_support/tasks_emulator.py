"""Runs PyPI's gcloud-tasks-emulator with the fixes the tests need (its own venv runs this).

    .venv-gcloud-tasks/bin/python tasks_emulator.py PORT

What is patched, and why (docs/gcp.md, "Emulator quirks"):

- it binds every interface (``[::]``): bound to 127.0.0.1 only;
- it posts tasks with no timeout, so a hung handler would stop the queue for
  good: a 60 s timeout, after which the task is retried like a failure;
- it sweeps each queue every 0.1 s: 0.05 s, so a test waits less for a task.

It still dispatches one task at a time per queue, retries a failed task at
the next sweep forever, ignores task names (no de-duplication) and answers
UNKNOWN for a queue it does not have; the GCP world copes with all of that.
"""

from __future__ import annotations

import logging
import sys
import time
from urllib import request

import grpc
from gcloud_tasks_emulator import server


def _bind_loopback(self: server.APIThread) -> None:
    self._httpd = grpc.server(server.futures.ThreadPoolExecutor(max_workers=4))
    server.add_CloudTasksServicer_to_server(server.Greeter(self._state), self._httpd)
    self._httpd.add_insecure_port(f"127.0.0.1:{self._port}")
    self._httpd.start()
    while self._is_running.is_set():
        time.sleep(server._LOOP_SLEEP_TIME)


_urlopen = request.urlopen


def _urlopen_with_timeout(req: request.Request, *args: object, **kwargs: object) -> object:
    kwargs.setdefault("timeout", 60)
    return _urlopen(req, *args, **kwargs)  # type: ignore[arg-type]


def main() -> None:
    port = int(sys.argv[1])
    server.APIThread.run = _bind_loopback  # type: ignore[method-assign]
    server.request.urlopen = _urlopen_with_timeout  # type: ignore[assignment]
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
