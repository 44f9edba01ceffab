"""The postgres world's command: ``worldflow setup postgres``.

The package's ``CLI_COMMANDS`` names :data:`SETUP` (a
:class:`worldflow.cli.WorldCommand`), so the command line imports psycopg only
when this command runs.
"""

from __future__ import annotations

import argparse
import sys

from worldflow.cli import EXIT_USAGE, CliError, write_json
from worldflow.world import load_settings

from ._settings import PostgresSettings
from ._setup import format_exports, setup

__all__ = ["SETUP"]


class _Setup:
    help = "create or migrate the postgres world's schema, print the settings to export"
    description = (
        "Create the postgres world's tables in WORLDFLOW_POSTGRES_SCHEMA (default worldflow) "
        "of the database at WORLDFLOW_POSTGRES_URL, or migrate them to this worldflow's "
        "version, then print the settings to export. Idempotent; safe while workers run."
    )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--url", help="the database (default: WORLDFLOW_POSTGRES_URL)")
        parser.add_argument("--schema", help="the schema (default: WORLDFLOW_POSTGRES_SCHEMA)")
        parser.add_argument(
            "--check",
            action="store_true",
            help="change nothing: report the schema's version, exit 1 unless it is ready",
        )

    def run(self, args: argparse.Namespace) -> int:
        raw = load_settings("postgres")
        if args.url:
            raw["url"] = args.url
        if args.schema:
            raw["schema"] = args.schema
        try:
            settings = PostgresSettings.from_mapping(raw)
        except ValueError as exc:
            raise CliError(str(exc), EXIT_USAGE) from exc
        report = setup(settings, check=args.check)
        if args.json:
            write_json(
                {
                    "schema": settings.schema,
                    "version_before": report.before,
                    "version": report.after,
                    "ready": report.ready,
                    "done": report.done,
                    "env": report.env,
                }
            )
        else:
            for line in report.done:
                print(line, file=sys.stderr)
            if report.ready:
                print(format_exports(report.env))
        return 0 if report.ready else 1


#: What ``worldflow setup postgres`` runs.
SETUP = _Setup()
