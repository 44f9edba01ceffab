"""psycopg's errors become worldflow's at the seam: a :class:`PostgresError` that says what
was being done, which setting points where, and what to do about it."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from worldflow.world import WorldError

from ._settings import describe

__all__ = ["PostgresError", "explain", "translate"]


class PostgresError(WorldError):
    """A call of the postgres world failed (the server, a permission, the schema)."""


def _is_psycopg_error(exc: BaseException) -> bool:
    return type(exc).__module__.startswith(("psycopg", "psycopg_pool"))


def explain(exc: BaseException, what: str, url: str, schema: str) -> PostgresError:
    """The error to raise for a psycopg (or pool) error met while doing ``what``."""
    import psycopg
    from psycopg import errors

    where = f"{describe(url)} (WORLDFLOW_POSTGRES_URL)"
    reason = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, errors.InsufficientPrivilege):
        hint = (
            f"the database user may not do this in schema {schema!r} of {where}: run "
            "`worldflow setup postgres` as the schema's owner, or GRANT USAGE ON SCHEMA "
            f"{schema} and SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {schema} "
            "to this user"
        )
    elif isinstance(exc, errors.UndefinedTable | errors.InvalidSchemaName):
        hint = (
            f"schema {schema!r} of {where} has no worldflow tables (was it dropped?): run "
            "`worldflow setup postgres`, or check WORLDFLOW_POSTGRES_SCHEMA"
        )
    elif isinstance(exc, errors.InvalidCatalogName) or (
        'database "' in reason and "does not exist" in reason
    ):
        hint = f"the database of {where} does not exist: create it (createdb) or fix the URL"
    elif isinstance(exc, errors.InvalidPassword | errors.InvalidAuthorizationSpecification) or any(
        words in reason
        for words in ("password authentication failed", "no pg_hba.conf entry", 'role "')
    ):
        hint = f"{where} refused the user or password: fix WORLDFLOW_POSTGRES_URL"
    elif isinstance(exc, psycopg.ProgrammingError) and "conninfo" in reason.lower():
        hint = "WORLDFLOW_POSTGRES_URL is not a valid libpq URL"
    elif isinstance(exc, psycopg.OperationalError) or type(exc).__name__ == "PoolTimeout":
        hint = (
            f"the PostgreSQL server at {where} could not be reached or answered in time: "
            "check that it runs and that the URL is right (WORLDFLOW_POSTGRES_CONNECT_TIMEOUT "
            "sets how long to wait)"
        )
    else:
        hint = f"in schema {schema!r} of {where}"
    return PostgresError(f"could not {what}: {type(exc).__name__}: {reason}; {hint}")


@contextlib.contextmanager
def translate(what: str, url: str, schema: str) -> Iterator[None]:
    """Turn a psycopg error raised inside the block into a :class:`PostgresError`."""
    try:
        yield
    except WorldError:
        raise
    except Exception as exc:
        if not _is_psycopg_error(exc):
            raise
        raise explain(exc, what, url, schema) from exc
