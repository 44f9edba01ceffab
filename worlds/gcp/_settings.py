"""The GCP world's settings: ``WORLDFLOW_GCP_*`` and ``[tool.worldflow.gcp]``.

The names are those of docs/api.md, in lower case without the prefix
(``WORLDFLOW_GCP_PROJECT`` -> ``project``). A few more tune the world for
tests and for the Cloud Run service; docs/gcp.md lists them all.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

__all__ = ["CLOUD_RUN_DEFAULT_TIMEOUT", "DEFAULT_RUN_TTL", "MAX_DISPATCH_DEADLINE", "GcpSettings"]

# Cloud Tasks refuses a schedule_time more than 30 days ahead; stay a day under it
# (the engine re-sends a message that comes early: a hop).
MAX_TASK_DELAY = 29 * 86400.0
#: Cloud Run's request timeout when the service does not set one.
CLOUD_RUN_DEFAULT_TIMEOUT = 300.0
#: Cloud Tasks waits at most 30 minutes for an HTTP task's answer (its dispatch deadline).
MAX_DISPATCH_DEADLINE = 1800.0
#: ... and at least 15 seconds.
MIN_DISPATCH_DEADLINE = 15.0


#: How long a finished run's documents are kept by default: for good, as on every other
#: world (an expiry costs a write per events document when the run ends; opt in).
DEFAULT_RUN_TTL: float | None = None
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def _ttl(settings: Mapping[str, str]) -> float | None:
    """``run_ttl``: seconds, or a number with s/m/h/d; ``off`` (or 0, or unset) for never."""
    raw = (settings.get("run_ttl") or "").strip().lower()
    if not raw:
        return DEFAULT_RUN_TTL
    if raw in ("off", "never", "0"):
        return None
    number, unit = (raw[:-1], _UNITS[raw[-1]]) if raw[-1] in _UNITS else (raw, 1.0)
    try:
        seconds = float(number) * unit
    except ValueError:
        seconds = -1.0
    if not seconds > 0 or seconds == float("inf"):
        raise ValueError(
            "WORLDFLOW_GCP_RUN_TTL must be a duration such as 30d, 12h or 3600 (seconds), "
            f"or off; got {settings.get('run_ttl')!r}"
        )
    return seconds


def _url(settings: Mapping[str, str], key: str, variable: str) -> str | None:
    """An absolute http(s) URL without its trailing slash, or None when unset."""
    raw = (settings.get(key) or "").strip().rstrip("/")
    if not raw:
        return None
    scheme, _, rest = raw.partition("://")
    if scheme not in ("http", "https") or not rest or rest.startswith("/"):
        raise ValueError(
            f"{variable} must be an absolute http(s) URL such as "
            f"https://worldflow-123.us-central1.run.app, got {settings.get(key)!r}"
        )
    return raw


def _float(settings: Mapping[str, str], key: str, default: float) -> float:
    raw = settings.get(key)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise ValueError(
            f"WORLDFLOW_GCP_{key.upper()} must be a number of seconds, got {raw!r}"
        ) from None


@dataclasses.dataclass(frozen=True, slots=True)
class GcpSettings:
    """Where the GCP world keeps runs and sends tasks (see docs/gcp.md)."""

    project: str
    location: str = "us-central1"
    queue: str = "worldflow"
    service_url: str | None = None  # the Cloud Run URL tasks target
    bucket: str | None = None  # Cloud Storage bucket for payloads past Firestore's limit
    tasks_endpoint: str | None = None  # host:port of a Cloud Tasks emulator (plain gRPC)
    database: str = "(default)"
    oidc_audience: str | None = None
    shared_secret: str | None = None
    tasks_service_account: str | None = None  # the identity Cloud Tasks signs OIDC tokens as
    # Where the keys that sign OIDC tokens are published (Google's; tests serve their own).
    oidc_certs_url: str = "https://www.googleapis.com/oauth2/v1/certs"
    public_url: str | None = None
    listen: str | None = None  # "host:port": serve the app in this process (tests, dev)
    heartbeat: float = 10.0  # seconds between a worker's heartbeats
    lease: float = 30.0  # a worker silent this long is dead; its step attempts are lost
    # Cloud Run's request timeout (WORLDFLOW_GCP_REQUEST_TIMEOUT, set by Terraform from the
    # service's): the longest one step attempt may take there, and each task's dispatch
    # deadline, so that Cloud Tasks waits for the answer as long as Cloud Run lets it run.
    request_timeout: float = CLOUD_RUN_DEFAULT_TIMEOUT
    # How long a task request waits for its run's steps before answering: a minute under
    # the request timeout unless set.
    drain_timeout: float = CLOUD_RUN_DEFAULT_TIMEOUT - 60.0
    max_webhook_bytes: int = 1 << 20
    # A finished run's documents get ``expire_at`` = its end + this, which Firestore's TTL
    # policy (infra/gcp) deletes after; None: no expiry written.
    run_ttl: float | None = DEFAULT_RUN_TTL

    @classmethod
    def from_mapping(cls, settings: Mapping[str, str]) -> GcpSettings:
        project = settings.get("project") or ""
        if not project:
            raise ValueError(
                "the gcp world needs a project: set WORLDFLOW_GCP_PROJECT "
                "(or project under [tool.worldflow.gcp] in pyproject.toml)"
            )

        def text(key: str) -> str | None:
            return settings.get(key) or None

        request_timeout = _float(settings, "request_timeout", CLOUD_RUN_DEFAULT_TIMEOUT)
        if not MIN_DISPATCH_DEADLINE <= request_timeout <= MAX_DISPATCH_DEADLINE:
            raise ValueError(
                "WORLDFLOW_GCP_REQUEST_TIMEOUT must be from 15 to 1800 seconds (Cloud Tasks "
                f"waits that long at most for a task's answer), got {request_timeout:g}"
            )
        drain_timeout = _float(settings, "drain_timeout", max(request_timeout - 60.0, 5.0))
        if not 0 < drain_timeout < request_timeout:
            raise ValueError(
                f"WORLDFLOW_GCP_DRAIN_TIMEOUT ({drain_timeout:g} s) must be above 0 and under "
                f"WORLDFLOW_GCP_REQUEST_TIMEOUT ({request_timeout:g} s): a task request must "
                "answer before Cloud Run cuts it off"
            )

        return cls(
            project=project,
            location=settings.get("location") or _DEFAULTS["location"],
            queue=settings.get("queue") or _DEFAULTS["queue"],
            service_url=_url(settings, "service_url", "WORLDFLOW_GCP_SERVICE_URL"),
            bucket=text("bucket"),
            tasks_endpoint=text("tasks_endpoint"),
            database=settings.get("database") or _DEFAULTS["database"],
            oidc_audience=text("oidc_audience"),
            shared_secret=text("shared_secret"),
            tasks_service_account=text("tasks_service_account"),
            oidc_certs_url=settings.get("oidc_certs_url") or _DEFAULTS["oidc_certs_url"],
            public_url=_url(settings, "public_url", "WORLDFLOW_PUBLIC_URL"),
            listen=text("listen"),
            heartbeat=_float(settings, "heartbeat", _DEFAULTS["heartbeat"]),
            lease=_float(settings, "lease", _DEFAULTS["lease"]),
            request_timeout=request_timeout,
            drain_timeout=drain_timeout,
            run_ttl=_ttl(settings),
            max_webhook_bytes=int(
                _float(settings, "max_webhook_bytes", _DEFAULTS["max_webhook_bytes"])
            ),
        )

    @property
    def dispatch_deadline(self) -> float:
        """How long Cloud Tasks waits for a task's answer: the request timeout, within
        the 15 s to 30 min Cloud Tasks allows."""
        return min(max(self.request_timeout, MIN_DISPATCH_DEADLINE), MAX_DISPATCH_DEADLINE)

    @property
    def queue_path(self) -> str:
        return f"projects/{self.project}/locations/{self.location}/queues/{self.queue}"


_DEFAULTS: dict[str, Any] = {f.name: f.default for f in dataclasses.fields(GcpSettings)}
