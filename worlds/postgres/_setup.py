"""``worldflow setup postgres``: create or migrate the schema, and print the settings.

Run it once per database and schema (it is idempotent), and again after
upgrading worldflow when the release notes say the schema changed: workers
refuse a schema older than their code (they never migrate behind the back of
workers that may still run the older release) and one newer than it.
"""

from __future__ import annotations

import dataclasses
import shlex

from ._schema import SCHEMA_VERSION, connect, migrate, read_version, stored_port
from ._settings import PostgresSettings, describe

__all__ = ["Report", "exports", "format_exports", "setup"]


@dataclasses.dataclass(frozen=True)
class Report:
    """What ``setup`` found and did."""

    before: int | None  # the schema's version before (None: it did not exist)
    after: int | None
    done: list[str]  # one line per thing done or checked, for people
    env: dict[str, str]  # the settings to export

    @property
    def ready(self) -> bool:
        return self.after == SCHEMA_VERSION


def exports(settings: PostgresSettings) -> dict[str, str]:
    """The environment a process needs to use this world."""
    env = {
        "WORLDFLOW_WORLD": "postgres",
        "WORLDFLOW_POSTGRES_URL": settings.url,
        "WORLDFLOW_POSTGRES_SCHEMA": settings.schema,
    }
    if settings.public_url:
        env["WORLDFLOW_PUBLIC_URL"] = settings.public_url
    return env


def setup(settings: PostgresSettings, *, check: bool = False) -> Report:
    """Create the schema if missing, migrate it if older, choose its webhook port; with
    ``check``, change nothing and only report."""
    where = f"schema {settings.schema!r} of {describe(settings.url)}"
    conn = connect(settings, f"connect to {describe(settings.url)} (WORLDFLOW_POSTGRES_URL)")
    done: list[str] = []
    try:
        before = read_version(conn, settings.schema)
        if check:
            after = before
            if before is None:
                done.append(f"{where}: missing (run without --check to create it)")
            elif before == SCHEMA_VERSION:
                done.append(f"{where}: version {before}, up to date")
            else:
                done.append(f"{where}: version {before}, this worldflow needs {SCHEMA_VERSION}")
        else:
            steps = migrate(conn, settings)
            after = read_version(conn, settings.schema)
            if before is None:
                done.append(f"{where}: created (version {after})")
            elif steps:
                done.append(f"{where}: migrated from version {before} to {after}")
            else:
                done.append(f"{where}: version {after}, up to date")
            if settings.serve_webhooks and settings.webhook_port is None and after is not None:
                port = stored_port(conn, settings.schema, choose=True)
                done.append(
                    f"webhooks: served on {settings.webhook_host}:{port} by the first worker "
                    "on a machine (stored in the schema; WORLDFLOW_POSTGRES_WEBHOOK_PORT sets it)"
                )
    finally:
        conn.close()
    return Report(before, after, done, exports(settings))


def format_exports(env: dict[str, str]) -> str:
    return "\n".join(f"export {k}={shlex.quote(v)}" for k, v in env.items())
