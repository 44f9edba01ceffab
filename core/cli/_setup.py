"""``worldflow setup WORLD``: create what a cloud world needs, print the settings.

Each world does the work in its own package (``worldflow.worlds.<world>``'s
``cli_setup(args) -> int``); this module only finds it, so that the command
line needs no cloud SDK until a world is asked for.
"""

from __future__ import annotations

import argparse
import importlib

from ._common import CliError

__all__ = ["SETUP_WORLDS", "run_setup"]

SETUP_WORLDS = ("aws", "gcp")


def run_setup(args: argparse.Namespace) -> int:
    try:
        module = importlib.import_module(f"worldflow.worlds.{args.world}.cli")
    except ImportError as exc:
        raise CliError(
            f"the {args.world!r} world needs {exc.name!r}: pip install 'worldflow[{args.world}]'"
        ) from exc
    code: int = module.cli_setup(args)
    return code
