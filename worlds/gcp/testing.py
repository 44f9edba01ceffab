"""Helpers to test against Google's protocols on localhost: the emulators, a world factory,
the Cloud Run service as a process of its own.

Used by worldflow's own tests and usable in a project's tests::

    em = emulators()                      # Firestore, Cloud Tasks, Cloud Storage
    with world_factory(em, wf.VirtualClock()) as make_world:
        ...                               # a conformance suite's make_world

What runs where (each path can be set by an environment variable):

- Firestore: Google's emulator jar, ``java -cp JAR ...`` (``WORLDFLOW_FIRESTORE_EMULATOR_JAR``;
  default gcloud's component);
- Cloud Tasks: PyPI's ``gcloud-tasks-emulator``, which pins an old protobuf, so it
  runs with a Python of its own (``WORLDFLOW_GCLOUD_TASKS_PYTHON``; default
  ``.venv-gcloud-tasks/bin/python`` in the working directory or a parent),
  patched by ``_tasks_emulator.py``;
- Cloud Storage: PyPI's ``gcp-storage-emulator`` (the ``gcp-dev`` extra), in memory.

Each test gets a Firestore project and a Cloud Tasks queue of its own
(:func:`settings_for_test`), so nothing leaks between tests without a reset.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from worldflow.world import Clock

from ._settings import GcpSettings
from ._setup import delete_queue, ensure_queue
from ._world import GcpWorld

__all__ = [
    "BUCKET",
    "SECRET",
    "EmulatorMissing",
    "Emulators",
    "Service",
    "emulators",
    "free_port",
    "service_env",
    "settings_for_test",
    "world_factory",
]

BUCKET = "worldflow-test"
#: The shared secret of the tasks the test worlds send (and their services accept).
SECRET = "test-secret-" + uuid.uuid4().hex
DEFAULT_JAR = (
    "/usr/lib/google-cloud-sdk/platform/cloud-firestore-emulator/cloud-firestore-emulator.jar"
)


class EmulatorMissing(RuntimeError):
    """An emulator is not installed here; the message says which and how to get it."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def firestore_jar() -> Path:
    return Path(os.environ.get("WORLDFLOW_FIRESTORE_EMULATOR_JAR") or DEFAULT_JAR)


def tasks_python() -> Path | None:
    """The Python that has gcloud-tasks-emulator, or None if none is found."""
    configured = os.environ.get("WORLDFLOW_GCLOUD_TASKS_PYTHON")
    if configured:
        return Path(configured)
    here = Path.cwd().resolve()
    for folder in (here, *here.parents):
        candidate = folder / ".venv-gcloud-tasks" / "bin" / "python"
        if candidate.exists():
            return candidate
    return None


def _wait(probe: Callable[[], bool], process: subprocess.Popen[bytes], what: str, t: float) -> None:
    deadline = time.monotonic() + t
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the {what} exited with code {process.returncode} at start")
        with contextlib.suppress(OSError):
            if probe():
                return
        time.sleep(0.05)
    raise RuntimeError(f"the {what} did not start within {t}s")


def _answers(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=1):
        return True


def _listens(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), 0.5):
        return True


class Emulators:
    """The three emulators on free ports of 127.0.0.1, and the processes to stop."""

    def __init__(self) -> None:
        self.processes: list[subprocess.Popen[bytes]] = []
        self.firestore_port = free_port()
        self.tasks_port = free_port()
        self.storage_port = free_port()

    @staticmethod
    def missing() -> str | None:
        """Why the emulators cannot start here, or None."""
        if not firestore_jar().exists():
            return (
                f"the Firestore emulator jar is not at {firestore_jar()} (gcloud's "
                "cloud-firestore-emulator component; or set WORLDFLOW_FIRESTORE_EMULATOR_JAR)"
            )
        if tasks_python() is None:
            return (
                "no Python with gcloud-tasks-emulator: make .venv-gcloud-tasks "
                "(scripts/_gcp.sh) or set WORLDFLOW_GCLOUD_TASKS_PYTHON"
            )
        return None

    def start(self) -> Emulators:
        reason = self.missing()
        if reason is not None:
            raise EmulatorMissing(reason)
        try:
            self._start_firestore()
            self._start_tasks()
            self._start_storage()
        except BaseException:
            self.stop()
            raise
        os.environ["FIRESTORE_EMULATOR_HOST"] = self.firestore_host
        os.environ["STORAGE_EMULATOR_HOST"] = self.storage_url
        return self

    @property
    def firestore_host(self) -> str:
        return f"127.0.0.1:{self.firestore_port}"

    @property
    def tasks_endpoint(self) -> str:
        return f"127.0.0.1:{self.tasks_port}"

    @property
    def storage_url(self) -> str:
        return f"http://127.0.0.1:{self.storage_port}"

    def env(self) -> dict[str, str]:
        """What points the Google clients of another process at these emulators."""
        return {
            "FIRESTORE_EMULATOR_HOST": self.firestore_host,
            "STORAGE_EMULATOR_HOST": self.storage_url,
        }

    def _spawn(self, args: list[str]) -> subprocess.Popen[bytes]:
        process = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL
        )
        self.processes.append(process)
        return process

    def _start_firestore(self) -> None:
        main = "com.google.cloud.datastore.emulator.firestore.CloudFirestore"
        args = ["java", "-cp", str(firestore_jar()), main, "--host", "127.0.0.1"]
        process = self._spawn([*args, "--port", str(self.firestore_port)])
        url = f"http://{self.firestore_host}/"
        _wait(lambda: _answers(url), process, "Firestore emulator", 60)

    def _start_tasks(self) -> None:
        python = tasks_python()
        assert python is not None
        launcher = Path(__file__).with_name("_tasks_emulator.py")
        process = self._spawn([str(python), str(launcher), str(self.tasks_port)])
        _wait(lambda: _listens(self.tasks_port), process, "Cloud Tasks emulator", 30)

    def _start_storage(self) -> None:
        args = [sys.executable, "-m", "gcp_storage_emulator", "start", "--host", "127.0.0.1"]
        args += ["--port", str(self.storage_port), "--in-memory", "--default-bucket", BUCKET, "-q"]
        process = self._spawn(args)
        _wait(lambda: _listens(self.storage_port), process, "Cloud Storage emulator", 30)

    def stop(self) -> None:
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.processes.clear()


_running: Emulators | None = None


def emulators() -> Emulators:
    """The emulators of this process: started at the first call, stopped at exit.
    :class:`EmulatorMissing` if one is not installed."""
    global _running
    if _running is None:
        running = Emulators().start()
        atexit.register(running.stop)
        _running = running
    return _running


def settings_for_test(em: Emulators, **overrides: Any) -> GcpSettings:
    """Settings of a world of its own (project, queue, a port for the app) over ``em``, with
    short heartbeats and leases; the app is served in the process (``listen``)."""
    tag = uuid.uuid4().hex[:10]
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    options: dict[str, Any] = {
        "project": f"wf-test-{tag}",
        "location": "europe-west1",
        "queue": f"q-{tag}",
        "service_url": url,
        "public_url": url,
        "bucket": BUCKET,
        "tasks_endpoint": em.tasks_endpoint,
        "shared_secret": SECRET,
        "listen": f"127.0.0.1:{port}",
        "heartbeat": 0.5,
        "lease": 2.0,
        "drain_timeout": 5.0,
    }
    options.update(overrides)
    return GcpSettings(**options)


@contextlib.contextmanager
def world_factory(
    em: Emulators, clock: Clock, **overrides: Any
) -> Iterator[Callable[[], GcpWorld]]:
    """A conformance suite's ``make_world``: new GcpWorlds over one project and queue (made
    here, the queue deleted afterwards), sharing ``clock``."""
    settings = settings_for_test(em, **overrides)
    asyncio.run(ensure_queue(settings))
    try:
        yield lambda: GcpWorld(settings, clock=clock)
    finally:
        asyncio.run(delete_queue(settings))


def service_env(settings: GcpSettings, em: Emulators | None = None) -> dict[str, str]:
    """The environment of a process on this world (a script, the CLI, the service): this
    process's, without its ``WORLDFLOW_*``, plus the settings as ``WORLDFLOW_GCP_*``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WORLDFLOW_")}
    if em is not None:
        env.update(em.env())
    values = {
        "PROJECT": settings.project,
        "LOCATION": settings.location,
        "QUEUE": settings.queue,
        "SERVICE_URL": settings.service_url,
        "BUCKET": settings.bucket,
        "TASKS_ENDPOINT": settings.tasks_endpoint,
        "SHARED_SECRET": settings.shared_secret,
        "HEARTBEAT": str(settings.heartbeat),
        "LEASE": str(settings.lease),
        "REQUEST_TIMEOUT": str(settings.request_timeout),
        "DRAIN_TIMEOUT": str(settings.drain_timeout),
    }
    env["WORLDFLOW_WORLD"] = "gcp"
    env.update({f"WORLDFLOW_GCP_{k}": v for k, v in values.items() if v})
    if settings.public_url:
        env["WORLDFLOW_PUBLIC_URL"] = settings.public_url
    return env


class Service:
    """The Cloud Run stand-in as a process of its own: ``uvicorn worldflow.worlds.gcp.app:app``
    on 127.0.0.1:``port``, serving ``modules``, until :meth:`stop` (or the ``with`` block ends).

    ``logs`` holds what it printed once it has stopped.
    """

    def __init__(
        self,
        settings: GcpSettings,
        port: int,
        modules: str,
        *,
        env: dict[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
    ) -> None:
        self.port = port
        self.logs = ""
        args = [sys.executable, "-m", "uvicorn", "worldflow.worlds.gcp.app:app"]
        args += ["--host", "127.0.0.1", "--port", str(port), "--no-access-log"]
        # A pipe nobody reads would fill and block the service: a file, closed by stop().
        self._out = tempfile.TemporaryFile()  # noqa: SIM115
        self.process = subprocess.Popen(
            args,
            cwd=cwd,
            env={**service_env(settings), "WORLDFLOW_MODULES": modules, **(env or {})},
            stdout=self._out,
            stderr=subprocess.STDOUT,
        )

    def wait_ready(self, timeout: float = 20.0) -> Service:
        url = f"http://127.0.0.1:{self.port}/healthz"
        try:
            _wait(lambda: _answers(url), self.process, "service", timeout)
        except RuntimeError as exc:
            self.stop()
            raise RuntimeError(f"{exc}:\n{self.logs}") from None
        return self

    @property
    def pid(self) -> int:
        return self.process.pid

    def kill(self) -> None:
        """``kill -9``: no draining, no goodbye."""
        self.process.kill()
        self.process.wait()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if not self._out.closed:
            self._out.seek(0)
            self.logs = self._out.read().decode(errors="replace")
            self._out.close()

    def __enter__(self) -> Service:
        return self.wait_ready()

    def __exit__(self, *exc: object) -> None:
        self.stop()
