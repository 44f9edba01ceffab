"""The GCP emulators the tests start: Firestore, Cloud Tasks, Cloud Storage.

One set per test process, started on first use and stopped at exit:

- Firestore: Google's emulator jar (Java), skipped with the reason when the
  jar is absent; each test uses a project of its own, so nothing leaks
  between tests without a reset;
- Cloud Tasks: PyPI's gcloud-tasks-emulator, from a venv of its own
  (``.venv-gcloud-tasks``, made by ``scripts/_gcp.sh``: it pins an old
  protobuf), patched by ``tasks_emulator.py``; each test gets a queue of its
  own, deleted at the end;
- Cloud Storage: PyPI's gcp-storage-emulator, in memory.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
JAR = Path(
    os.environ.get(
        "WORLDFLOW_FIRESTORE_EMULATOR_JAR",
        "/usr/lib/google-cloud-sdk/platform/cloud-firestore-emulator/cloud-firestore-emulator.jar",
    )
)
TASKS_VENV = ROOT / ".venv-gcloud-tasks"
BUCKET = "worldflow-test"

__all__ = ["BUCKET", "Emulators", "emulators", "free_port"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_http(url: str, process: subprocess.Popen[bytes], what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the {what} exited with code {process.returncode} at start")
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"the {what} did not answer {url} within {timeout}s")


def _wait_port(port: int, process: subprocess.Popen[bytes], what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the {what} exited with code {process.returncode} at start")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.05)
    raise RuntimeError(f"the {what} did not listen on port {port} within {timeout}s")


class Emulators:
    """The three emulators' addresses, and the processes to stop."""

    def __init__(self) -> None:
        self.processes: list[subprocess.Popen[bytes]] = []
        self.firestore_port = free_port()
        self.tasks_port = free_port()
        self.storage_port = free_port()

    def start(self) -> None:
        try:
            self._start_firestore()
            self._start_tasks()
            self._start_storage()
        except BaseException:
            self.stop()
            raise
        os.environ["FIRESTORE_EMULATOR_HOST"] = self.firestore_host
        os.environ["STORAGE_EMULATOR_HOST"] = f"http://127.0.0.1:{self.storage_port}"

    @property
    def firestore_host(self) -> str:
        return f"127.0.0.1:{self.firestore_port}"

    @property
    def tasks_endpoint(self) -> str:
        return f"127.0.0.1:{self.tasks_port}"

    def _spawn(self, args: list[str]) -> subprocess.Popen[bytes]:
        process = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL
        )
        self.processes.append(process)
        return process

    def _start_firestore(self) -> None:
        process = self._spawn(
            [
                "java",
                "-cp",
                str(JAR),
                "com.google.cloud.datastore.emulator.firestore.CloudFirestore",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.firestore_port),
            ]
        )
        _wait_http(f"http://{self.firestore_host}/", process, "Firestore emulator", 60)

    def _start_tasks(self) -> None:
        python = TASKS_VENV / "bin" / "python"
        if not python.exists():
            subprocess.run(
                ["bash", str(ROOT / "scripts" / "_gcp.sh"), "--emulators-only"], check=True
            )
        launcher = Path(__file__).with_name("tasks_emulator.py")
        process = self._spawn([str(python), str(launcher), str(self.tasks_port)])
        _wait_port(self.tasks_port, process, "Cloud Tasks emulator", 30)

    def _start_storage(self) -> None:
        args = [sys.executable, "-m", "gcp_storage_emulator", "start", "--host", "127.0.0.1"]
        args += ["--port", str(self.storage_port), "--in-memory", "--default-bucket", BUCKET, "-q"]
        process = self._spawn(args)
        _wait_port(self.storage_port, process, "Cloud Storage emulator", 30)

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
    """The emulators of this test process (started at first call, stopped at exit)."""
    global _running
    if not JAR.exists():
        pytest.skip(f"the Firestore emulator jar is not installed at {JAR} (gcloud's component)")
    if _running is None:
        running = Emulators()
        running.start()
        atexit.register(running.stop)
        _running = running
    return _running
