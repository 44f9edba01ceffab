"""The GCP world's commands: ``worldflow setup gcp`` and ``worldflow package gcp``.

The package's ``CLI_COMMANDS`` names :data:`SETUP` and :data:`PACKAGE`
(:class:`worldflow.cli.WorldCommand` objects), so the command line imports a
cloud SDK only when one of these commands runs.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from worldflow.cli import EXIT_USAGE, CliError, write_json
from worldflow.packaging import PackagingError
from worldflow.world import load_settings

from ._package import REQUEST_TIMEOUT, plan
from ._settings import GcpSettings
from ._setup import format_exports, setup

__all__ = ["PACKAGE", "SETUP", "cli_package", "cli_setup"]


def cli_setup(args: argparse.Namespace) -> int:
    """Create the queue (and bucket) from the WORLDFLOW_GCP_* settings; print the exports."""
    settings = GcpSettings.from_mapping(load_settings("gcp"))
    done, env = setup(settings)
    if args.json:
        write_json({"done": done, "env": env})
        return 0
    for line in done:
        print(line, file=sys.stderr)
    print(format_exports(env))
    return 0


def cli_package(args: argparse.Namespace) -> int:
    """Write the service's build files; print the gcloud and terraform commands to deploy."""
    settings = GcpSettings.from_mapping(load_settings("gcp"))
    modules = [m.strip() for m in (args.modules or "").split(",") if m.strip()]
    try:
        result = plan(
            settings,
            modules,
            Path(args.out),
            request_timeout=args.request_timeout,
            check=not args.no_check,
        )
    except PackagingError as exc:
        raise CliError(f"package gcp: {exc}") from None
    if args.json:
        write_json(
            {
                "written": result.written,
                "kept": result.kept,
                "wheel": result.wheel,
                "commands": result.commands,
            }
        )
        return 0
    print(f"wrote {result.wheel}", file=sys.stderr)
    if not args.no_check:
        print(
            f"checked: the app and {', '.join(modules)} import from {args.out} alone",
            file=sys.stderr,
        )
    for path in result.written:
        print(f"wrote {path}", file=sys.stderr)
    for path in result.kept:
        print(f"kept {path} (already there)", file=sys.stderr)
    print("# then, from the worldflow checkout's folder (infra/gcp holds the Terraform):")
    print("\n".join(result.commands))
    return 0


class _Command:
    def __init__(
        self,
        help: str,
        run: Callable[[argparse.Namespace], int],
        add: Callable[[argparse.ArgumentParser], None],
    ) -> None:
        self.help = help
        self.description = help
        self.run = run
        self.add_arguments = add


def _package_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--modules", metavar="M[,M...]", help="the modules defining workflows")
    parser.add_argument("--out", default=".", metavar="DIR", help="where to write (default .)")
    parser.add_argument(
        "--request-timeout",
        type=int,
        default=REQUEST_TIMEOUT,
        metavar="S",
        help=f"Cloud Run's request timeout in seconds (default {REQUEST_TIMEOUT}, as "
        "infra/gcp/main.tf sets it): a step whose timeout is longer is refused",
    )
    parser.add_argument(
        "--no-check",
        action="store_true",
        help="do not import the app and the modules from the build context in a fresh Python",
    )


def _package(args: argparse.Namespace) -> int:
    try:
        return cli_package(args)
    except ValueError as exc:  # no modules, a bad setting: a usage error
        raise CliError(str(exc), EXIT_USAGE) from exc


#: What ``worldflow setup gcp`` and ``worldflow package gcp`` run.
SETUP = _Command(
    "create the Cloud Tasks queue (and bucket) from WORLDFLOW_GCP_*, print the exports",
    cli_setup,
    lambda parser: None,
)
PACKAGE = _Command(
    "write the Cloud Run service's build files, print the gcloud and terraform commands",
    _package,
    _package_arguments,
)
