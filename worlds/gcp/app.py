"""The Cloud Run service's ASGI app: ``uvicorn worldflow.worlds.gcp.app:app`` (see ``_host``)."""

from ._host import app, create_app

__all__ = ["app", "create_app"]
