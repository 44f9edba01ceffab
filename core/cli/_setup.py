"""``worldflow setup WORLD``: create what a cloud world needs, print the settings.

Each world does the work in its own package (``worldflow.worlds.<world>``'s
``cli_setup(args) -> int``); this module only finds it, so that the command
line needs no cloud SDK until a world is asked for.
"""

from __future__ import annotations

import argparse
import importlib
from typing import Any

from ._common import CliError

__all__ = ["SETUP_WORLDS", "run_package", "run_setup"]

SETUP_WORLDS = ("aws", "gcp")


def _world_cli(world: str, command: str) -> Any:
    try:
        module = importlib.import_module(f"worldflow.worlds.{world}.cli")
    except ImportError as exc:
        raise CliError(
            f"the {world!r} world needs {exc.name!r}: pip install 'worldflow[{world}]'"
        ) from exc
    handler = getattr(module, f"cli_{command}", None)
    if handler is None:
        raise CliError(f"the {world!r} world has no {command!r} command")
    return handler


def run_setup(args: argparse.Namespace) -> int:
    code: int = _world_cli(args.world, "setup")(args)
    return code


def run_package(args: argparse.Namespace) -> int:
    """``worldflow package WORLD``: the world's deployable build and the commands to deploy it."""
    try:
        code: int = _world_cli(args.world, "package")(args)
    except ValueError as exc:
        raise CliError(str(exc), code=2) from exc
    return code
