"""The GCP world: Cloud Run + Cloud Tasks + Firestore (``WORLDFLOW_WORLD=gcp``).

Runs and their event logs live in Firestore, messages travel as Cloud Tasks
HTTP tasks to the Cloud Run service (the ASGI app
``worldflow.worlds.gcp.app:app``), and values past Firestore's document
limit go to Cloud Storage. Needs ``pip install 'worldflow[gcp]'``; the user
guide is docs/gcp.md. Importing this package imports no Google client.
"""

from ._errors import GcpError
from ._settings import GcpSettings
from ._world import GcpWorld, create_world

__all__ = ["CLI_COMMANDS", "GcpError", "GcpSettings", "GcpWorld", "create_world"]

#: ``worldflow setup gcp`` and ``worldflow package gcp``.
CLI_COMMANDS = {
    "setup": "worldflow.worlds.gcp._cli:SETUP",
    "package": "worldflow.worlds.gcp._cli:PACKAGE",
}
