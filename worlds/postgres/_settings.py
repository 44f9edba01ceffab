"""The postgres world's settings: ``WORLDFLOW_POSTGRES_*`` or ``[tool.worldflow.postgres]``.

Every setting is named in the message of the error a bad value raises, so a
user knows which variable to fix. ``url`` is the only one required.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

__all__ = ["PostgresSettings", "describe", "redact"]

_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,47}")


def _setting(key: str) -> str:
    return f"WORLDFLOW_POSTGRES_{key.upper()}"


def redact(url: str) -> str:
    """The URL with its password replaced by ``***`` (for messages and logs)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable URL>"
    if parts.password is None:
        return url
    netloc = parts.netloc.rpartition("@")
    user = (parts.username or "") + ":***"
    return urlunsplit(parts._replace(netloc=f"{user}@{netloc[2]}"))


def describe(url: str) -> str:
    """``user@host:port/db`` of a URL, for messages (no password)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or "localhost"
        port = parts.port or 5432
    except ValueError:
        return redact(url)
    user = f"{parts.username}@" if parts.username else ""
    db = parts.path.lstrip("/") or parts.username or "postgres"
    return f"{user}{host}:{port}/{db}"


@dataclasses.dataclass(frozen=True)
class PostgresSettings:
    """What the postgres world is configured with (see docs/postgres.md).

    ``url``: a libpq URL, ``postgresql://user[:password]@host:5432/db``.
    ``schema``: the PostgreSQL schema holding worldflow's tables (two
    applications sharing one database use two schemas). ``pool_min``,
    ``pool_max``: connections each process keeps open (plus one that listens
    for notifications while it serves). ``connect_timeout``: seconds before
    an unreachable server is an error. ``heartbeat``, ``lease``: how often a
    serving process proves it is alive and how long a proof (and a claim on a
    message) holds. ``poll_interval``: how often a serving process looks at
    the messages table when no notification came. ``concurrency``: messages a
    process delivers at once. ``webhook_port``/``webhook_host``: where the
    embedded webhook server listens (``webhook_port = "off"``: nowhere).
    """

    url: str
    schema: str = "worldflow"
    pool_min: int = 1
    pool_max: int = 10
    connect_timeout: float = 5.0
    heartbeat: float = 2.0
    lease: float = 10.0
    poll_interval: float = 1.0
    concurrency: int = 200
    public_url: str | None = None
    webhook_host: str = "127.0.0.1"
    webhook_port: int | None = None
    serve_webhooks: bool = True
    max_webhook_bytes: int = 1 << 20
    read_only: bool = False

    def __post_init__(self) -> None:
        if not self.url:
            raise ValueError(
                "the postgres world needs a database: set WORLDFLOW_POSTGRES_URL="
                "postgresql://user@host:5432/db (or url under [tool.worldflow.postgres])"
            )
        if not self.url.startswith(("postgresql://", "postgres://")):
            raise ValueError(
                f"WORLDFLOW_POSTGRES_URL must be a postgresql:// URL, got {redact(self.url)!r} "
                "(e.g. postgresql://user@host:5432/db)"
            )
        if not _SCHEMA_NAME.fullmatch(self.schema):
            raise ValueError(
                f"WORLDFLOW_POSTGRES_SCHEMA must be a lower-case identifier of at most 48 "
                f"characters (letters, digits, _), got {self.schema!r}"
            )
        if not 1 <= self.pool_min <= self.pool_max:
            raise ValueError(
                "WORLDFLOW_POSTGRES_POOL_MIN and WORLDFLOW_POSTGRES_POOL_MAX must satisfy "
                f"1 <= pool_min <= pool_max, got {self.pool_min} and {self.pool_max}"
            )
        if self.lease <= self.heartbeat:
            raise ValueError(
                "WORLDFLOW_POSTGRES_LEASE must be longer than WORLDFLOW_POSTGRES_HEARTBEAT, "
                f"got lease {self.lease} and heartbeat {self.heartbeat}"
            )

    @property
    def channel(self) -> str:
        """The LISTEN/NOTIFY channel of this schema's messages."""
        return f"worldflow_{self.schema}"

    @classmethod
    def from_mapping(cls, settings: Mapping[str, Any]) -> PostgresSettings:
        """From ``load_settings("postgres")`` (lower-case keys), checking every value."""
        values: dict[str, Any] = {"url": str(settings.get("url") or "")}

        def number(key: str, kind: type[int] | type[float], minimum: float) -> None:
            raw = settings.get(key)
            if raw is None or raw == "":
                return
            try:
                value = kind(raw)
            except ValueError:
                what = "a whole number" if kind is int else "a number"
                raise ValueError(f"{_setting(key)} must be {what}, got {raw!r}") from None
            if value < minimum:
                raise ValueError(f"{_setting(key)} must be at least {minimum}, got {raw!r}")
            values[key] = value

        number("pool_min", int, 1)
        number("pool_max", int, 1)
        number("concurrency", int, 1)
        number("max_webhook_bytes", int, 1)
        for key in ("connect_timeout", "heartbeat", "lease", "poll_interval"):
            number(key, float, 0.01)
        if settings.get("schema"):
            values["schema"] = str(settings["schema"])
        if settings.get("webhook_host"):
            values["webhook_host"] = str(settings["webhook_host"])
        port = str(settings.get("webhook_port") or "").strip().lower()
        if port in ("off", "none", "no"):
            values["serve_webhooks"] = False
        elif port:
            if not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(
                    f"WORLDFLOW_POSTGRES_WEBHOOK_PORT must be a port (1-65535) or 'off', got {port!r}"
                )
            values["webhook_port"] = int(port)
        if settings.get("public_url"):
            values["public_url"] = str(settings["public_url"]).rstrip("/")
        values["read_only"] = settings.get("read_only") == "1"
        return cls(**values)
