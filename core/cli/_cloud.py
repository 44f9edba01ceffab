"""``worldflow setup WORLD`` and ``worldflow package WORLD``: a cloud world's resources
for development, and its deployment artifact.

Each cloud world provides the work in its own package (``worldflow.worlds.<name>``
modules ``_setup_cli`` and ``_package_cli``, each with ``add_arguments(parser)``
and ``run(args) -> int``), so the CLI imports no cloud SDK until one is asked for.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable
from typing import Any

from ._common import EXIT_USAGE, CliError

__all__ = ["add_cloud_commands"]

#: command -> (world -> what provides it: "module" or "module:attribute"; an object
#: with ``add_arguments(parser)`` and ``run(args) -> int``)
_PROVIDERS = {
    "setup": {
        "aws": "worldflow.worlds.aws._setup_cli",
        "gcp": "worldflow.worlds.gcp.cli:SETUP",
    },
    "package": {
        "aws": "worldflow.worlds.aws._package_cli",
        "gcp": "worldflow.worlds.gcp.cli:PACKAGE",
    },
}

_SUMMARIES = {
    "setup": (
        "create a cloud world's resources (development and tests) and print the settings",
        "Create what the world needs (for aws: the DynamoDB table, the SQS queue and its "
        "dead-letter queue, the S3 bucket; for gcp: the Cloud Tasks queue and the bucket) "
        "against the cloud or an emulator (aws: --endpoint-url or AWS_ENDPOINT_URL; gcp: the "
        "WORLDFLOW_GCP_* settings), then print the environment variables to export. "
        "Production uses infra/.",
    ),
    "package": (
        "build a cloud world's deployment artifact from a project, print how to deploy it",
        "Build what the cloud runs (for aws: a Lambda zip of the project's modules, "
        "worldflow and their dependencies; for gcp: the Cloud Run service's Dockerfile and "
        "requirements) and print the exact deployment commands.",
    ),
}


def _load(spec: str) -> Any:
    """The provider ``"module"`` or ``"module:attribute"`` names."""
    module, _, attribute = spec.partition(":")
    loaded = importlib.import_module(module)
    return getattr(loaded, attribute) if attribute else loaded


def _provider(command: str, world: str) -> Any:
    module = _PROVIDERS[command].get(world)
    if module is None:
        known = ", ".join(sorted(_PROVIDERS[command]))
        raise CliError(f"`worldflow {command}` knows the worlds {known}, not {world!r}", EXIT_USAGE)
    try:
        return _load(module)
    except ImportError as exc:
        raise CliError(
            f"`worldflow {command} {world}` needs {exc.name!r}: pip install 'worldflow[{world}]'"
        ) from exc


def add_cloud_commands(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    command: Callable[..., argparse.ArgumentParser],
) -> None:
    """Register ``setup`` and ``package`` (one sub-command per world under each)."""
    for name, providers in _PROVIDERS.items():
        summary, description = _SUMMARIES[name]
        parent = commands.add_parser(name, help=summary, description=description)
        worlds = parent.add_subparsers(title="worlds", metavar="WORLD", required=True)
        for world, module in providers.items():

            def handler(args: argparse.Namespace, _c: str = name, _w: str = world) -> int:
                return int(_provider(_c, _w).run(args))

            sub = command(worlds, world, handler, f"{summary} ({world})", description)
            # The world's module declares the arguments; it imports its SDK only in run().
            _load(module).add_arguments(sub)
