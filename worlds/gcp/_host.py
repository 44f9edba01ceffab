"""The Cloud Run service: one ASGI app (Starlette), a host of the engine.

    uvicorn worldflow.worlds.gcp.app:app --host 0.0.0.0 --port $PORT

Routes:

- ``POST /_worldflow/tasks`` (internal): Cloud Tasks delivers a message. The
  route hands it to the engine as a :class:`~worldflow.world.Delivery` and does
  what the :class:`~worldflow.world.Disposition` says: 200 to acknowledge;
  otherwise the task must come again ``after`` seconds from now, which is a
  503 when that is soon (Cloud Tasks retries it with the queue's backoff), or,
  on the real clock, a copy of the task scheduled for exactly then and a 200
  (Cloud Tasks' backoff grows to minutes, and a 503 counts against the queue's
  retry budget). A message the engine gives up on (``Disposition.dead``) is kept
  in the World's dead letters (:mod:`._dead_letters`) and answered 200, so that
  Cloud Tasks forgets it. Authenticated: Cloud Tasks' OIDC token, or the shared secret
  (emulators); neither configured, every call is refused.
- ``/webhooks/{token}`` (public: the token is the capability): the engine's
  webhook intake (:func:`worldflow.world.webhook_app`), body capped.
- ``GET /healthz``.

In production the app's lifespan serves the World from ``WORLDFLOW_GCP_*``
(:func:`worldflow.world.serve`); served inside a process that already has an
engine (``listen=``, :mod:`._server`), the routes use that one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from worldflow.world import (
    WEBHOOK_PREFIX,
    Delivery,
    Disposition,
    Engine,
    Outgoing,
    current_engine,
    load_settings,
    serve,
    webhook_app,
)

from ._auth import check_bearer
from ._logs import current_run
from ._queue import TASK_ROUTE, TaskQueue, decode_task
from ._settings import GcpSettings
from ._world import GcpWorld

__all__ = ["RETRY_BY_STATUS", "app", "create_app"]

log = logging.getLogger("worldflow.gcp")

#: A task to come again within this many seconds is answered 503 (Cloud Tasks retries it);
#: later than that, on the real clock, a copy is scheduled for then and this one answered.
RETRY_BY_STATUS = 5.0


def _world_of(engine: Engine) -> GcpWorld:
    world = engine.world
    if not isinstance(world, GcpWorld):
        raise RuntimeError(f"the GCP service's engine serves {world!r}, not a GCP world")
    return world


async def _engine(request: Request) -> Engine | Response:
    """The engine to hand work to: the loop's serving one (never a new one made here: a
    request that comes while the process stops is refused, and comes again)."""
    try:
        engine = await current_engine(create=False)
    except RuntimeError:
        return JSONResponse({"error": "this process is not serving"}, status_code=503)
    queue = request.app.state.queue
    if queue is not None and (queue.closing or _world_of(engine).tasks is not queue):
        return JSONResponse({"error": "this process is stopping"}, status_code=503)
    return engine


async def _tasks(request: Request) -> Response:
    engine = await _engine(request)
    if isinstance(engine, Response):
        return engine
    world = _world_of(engine)
    settings = world.settings
    status, reason = await check_bearer(settings, request.headers.get("authorization"))
    if status:
        log.warning("worldflow: refused a call to %s: %s", TASK_ROUTE, reason)
        return JSONResponse({"error": reason}, status_code=status)
    retries = request.headers.get("x-cloudtasks-taskretrycount", "0")
    try:  # read once authenticated: Cloud Tasks sends at most 1 MB
        body = await request.body()
        delivery = decode_task(body, int(retries) if retries.isdigit() else 0)
    except ClientDisconnect:
        return Response(status_code=400)  # nobody hears it; nothing was delivered
    except ValueError as exc:
        return JSONResponse({"error": str(exc)}, status_code=400)
    token = current_run.set(delivery.message.run_id)
    try:
        if engine.lease_until < time.time() + world.heartbeat:
            # The heartbeat loop fell behind (Cloud Run throttles an idle instance's CPU):
            # prove this worker alive before it takes work.
            await engine.heartbeat()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + settings.drain_timeout
        disposition = await engine.deliver(delivery, deadline=deadline)
        if disposition.ack:
            log.info(
                "worldflow: %s message for run %s applied",
                delivery.message.kind,
                delivery.message.run_id,
            )
            return JSONResponse({"ok": True})
        if disposition.dead and world.dead_letters is not None:
            # Kept in Firestore first: should that fail, the 500 has the task come again.
            # (The engine has logged why, as an error.)
            await world.dead_letters.bury(delivery, disposition.reason)
            return JSONResponse({"ok": True, "dead_letter": True})
        return await _again(world, delivery, disposition, request)
    except Exception as exc:
        log.warning("worldflow: a task for run %s failed: %s", delivery.message.run_id, exc)
        return JSONResponse({"error": f"{type(exc).__name__}: {exc}"}, status_code=500)
    finally:
        current_run.reset(token)


async def _again(
    world: GcpWorld, delivery: Delivery, disposition: Disposition, request: Request
) -> Response:
    """The task must come again ``disposition.after`` seconds from now."""
    after = disposition.after
    log.info(
        "worldflow: %s message for run %s again in %.1fs: %s",
        delivery.message.kind,
        delivery.message.run_id,
        after,
        disposition.reason,
    )
    if after <= RETRY_BY_STATUS or not world.real_time:
        # Soon (or a test's virtual clock, which real delays say nothing about): let
        # Cloud Tasks retry it.
        retry = str(max(1, math.ceil(after)))
        return JSONResponse(
            {"error": disposition.reason}, status_code=503, headers={"Retry-After": retry}
        )
    # Later: a copy scheduled for then, named after this task and this delivery of it, so
    # that a second delivery of this one makes the same copy (Cloud Tasks keeps one). It
    # goes on counting attempts from this one (the engine's backoff grows with them).
    task = request.headers.get("x-cloudtasks-taskname", "")
    key = f"{delivery.message.id}:again:{task}:{delivery.attempt}"
    copy = Outgoing(delivery.message, world.clock.now() + after, key)
    await world.tasks.create(copy, after, key, delivered=delivery.attempt)
    return JSONResponse({"ok": True, "again_in": after, "reason": disposition.reason})


class _Webhooks:
    """The engine's webhook intake (an ASGI app, so that it reads the body itself and
    drops a request whose client leaves early), capped at the World's ``max_webhook_bytes``."""

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        engine = await _engine(Request(scope))
        if isinstance(engine, Response):
            await engine(scope, receive, send)
            return
        intake = webhook_app(max_body=engine.world.max_webhook_bytes)
        await intake(scope, receive, send)


async def _healthz(request: Request) -> Response:
    return JSONResponse({"ok": True})


def create_app(queue: TaskQueue | None = None) -> Starlette:
    """The service's ASGI app. Its lifespan serves the World configured by ``WORLDFLOW_GCP_*``
    (and imports ``WORLDFLOW_MODULES``); without its lifespan, it uses the engine already
    running on the loop, the one whose ``queue`` serves it (``listen=``)."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        from . import _logs

        _logs.install()
        settings = GcpSettings.from_mapping(load_settings("gcp"))
        # Cloud Run gives a stopping instance 10 s after SIGTERM: steps still running
        # get 8 of them to record their results; what is cut short runs again. The World
        # is made by name, so that the settings every World shares apply to it too
        # (WORLDFLOW_RETENTION, WORLDFLOW_MAX_DELIVERIES).
        async with serve("gcp", grace=min(8.0, settings.drain_timeout)):
            yield

    app = Starlette(
        routes=[
            Route(TASK_ROUTE, _tasks, methods=["POST"]),
            Route("/healthz", _healthz, methods=["GET"]),
            Route(WEBHOOK_PREFIX + "{token:path}", _Webhooks()),
        ],
        lifespan=lifespan,
    )
    app.state.queue = queue
    return app


app = create_app()
