"""google-api-core errors become worldflow's at the seam, chained and explained."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from worldflow.world import WorldError

__all__ = ["GcpError", "translate"]


class GcpError(WorldError):
    """A Google Cloud call of the GCP world failed (Firestore, Cloud Tasks, Cloud Storage)."""


def _is_google_error(exc: BaseException) -> bool:
    module = type(exc).__module__
    return module.startswith(("google.api_core", "google.auth", "grpc", "google.cloud"))


@contextlib.contextmanager
def translate(what: str) -> Iterator[None]:
    """Turn an error of a Google client raised inside the block into a :class:`GcpError`.

    ``what`` says what was being done ("append to run 'x' in Firestore"), so the
    message names the operation and the service's own words.
    """
    try:
        yield
    except WorldError:
        raise
    except Exception as exc:
        if not _is_google_error(exc):
            raise
        reason = getattr(exc, "message", None) or str(exc) or type(exc).__name__
        raise GcpError(f"could not {what}: {type(exc).__name__}: {reason}") from exc
