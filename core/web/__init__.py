"""The web UI: ``worldflow web``, or :func:`create_app` to serve it yourself.

Needs the ``web`` extra (Starlette and uvicorn): ``pip install 'worldflow[web]'``.
The core of worldflow never imports this package.

>>> import uvicorn
>>> from worldflow.web import create_app
>>> uvicorn.run(create_app(), host="127.0.0.1", port=8765)
"""

from __future__ import annotations

try:
    import starlette  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised in a subprocess by the tests
    raise ImportError(
        "the worldflow web UI needs Starlette and uvicorn: pip install 'worldflow[web]'"
    ) from exc

from ._app import TOKEN_HEADER, create_app

__all__ = ["TOKEN_HEADER", "create_app"]
