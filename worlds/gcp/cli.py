"""The GCP world's commands: ``worldflow setup gcp``.

Kept out of the world's modules so that the command line imports a cloud
SDK only when one of these commands runs.
"""

from __future__ import annotations

import argparse

from worldflow._config import load_settings
from worldflow.cli._common import write_json

from ._settings import GcpSettings
from ._setup import format_exports, setup

__all__ = ["cli_setup"]


def cli_setup(args: argparse.Namespace) -> int:
    """Create the queue (and bucket) from the WORLDFLOW_GCP_* settings; print the exports."""
    import sys

    settings = GcpSettings.from_mapping(load_settings("gcp"))
    done, env = setup(settings)
    if args.json:
        write_json({"done": done, "env": env})
        return 0
    for line in done:
        print(line, file=sys.stderr)
    print(format_exports(env))
    return 0
