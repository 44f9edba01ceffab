"""Learning at once that a local worker died: a lock the OS drops with its process.

A heartbeat says a worker was alive a moment ago; only its lease running out
says it died, five seconds later by default. On one machine the OS can say
more: each serving worker holds ``flock(LOCK_EX)`` on a file of its own,
``<database>.workers/<worker id>.lock``, for as long as its process lives. If
another process can take that lock, the worker's process is gone (killed,
crashed), and its heartbeat is void from then on.

What a free lock cannot tell is left to the lease: a worker without a lock file
(another version, a platform without ``fcntl``) and a worker whose process holds
its lock but does nothing (hung, stopped, or a forked child still holding the
inherited lock) are dead only once their lease runs out.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

try:
    import fcntl
except ImportError:  # not on Windows: every answer is "cannot tell"
    fcntl = None  # type: ignore[assignment]

__all__ = ["WorkerLocks"]


class WorkerLocks:
    """The lock files of the workers of one database (``directory`` is None: none)."""

    def __init__(self, directory: Path | None) -> None:
        self.directory = directory if fcntl is not None else None
        self._held: tuple[str, int] | None = None  # (worker id, fd) of this process's lock

    def _path(self, worker_id: str) -> Path:
        assert self.directory is not None
        if not worker_id or "/" in worker_id or worker_id.startswith("."):
            raise ValueError(f"not a worker id that names a lock file: {worker_id!r}")
        return self.directory / f"{worker_id}.lock"

    def hold(self, worker_id: str) -> None:
        """Take ``worker_id``'s lock (idempotent): before its first heartbeat is written,
        so that no heartbeat of a live worker is ever seen without its lock held."""
        if self.directory is None or (self._held is not None and self._held[0] == worker_id):
            return
        self.release()
        self.directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(self._path(worker_id), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            # Blocking: another process looking at it holds it for a few microseconds.
            fcntl.flock(fd, fcntl.LOCK_EX)
        except BaseException:
            os.close(fd)
            raise
        self._held = (worker_id, fd)

    def release(self) -> None:
        """Give the lock up and remove its file (a worker that ends cleanly)."""
        if self._held is None:
            return
        worker_id, fd = self._held
        self._held = None
        with contextlib.suppress(OSError):
            self._path(worker_id).unlink()
        os.close(fd)

    def alive(self, worker_id: str) -> bool | None:
        """False if ``worker_id``'s process is gone (its lock could be taken), True if
        a process holds its lock, None if this cannot be told (no lock file)."""
        if self.directory is None:
            return None
        if self._held is not None and self._held[0] == worker_id:
            return True
        try:
            fd = os.open(self._path(worker_id), os.O_RDWR)
        except (OSError, ValueError):
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        except OSError:
            return None
        finally:
            os.close(fd)  # releases the lock if it was taken
        return False

    def discard(self, worker_id: str) -> None:
        """Remove a dead worker's lock file."""
        if self.directory is not None:
            with contextlib.suppress(OSError, ValueError):
                self._path(worker_id).unlink()
