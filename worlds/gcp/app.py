"""The Cloud Run service: one ASGI app (Starlette) with the worldflow routes.

    uvicorn worldflow.worlds.gcp.app:app --host 0.0.0.0 --port $PORT

Routes:

- ``POST /_worldflow/tasks`` (internal): Cloud Tasks delivers a message (run
  resumption, a retry or timer, a hook payload, a cancellation). Steps run
  inside that request, inline, as the engine reaches them. The answer is 2xx
  only once the run is quiescent (no step of this process running, every
  batch committed); any failure answers non-2xx, so Cloud Tasks retries.
  Authenticated: Cloud Tasks' OIDC token, or the shared secret (emulators).
- ``/webhooks/{token}`` (public: the token is the capability): queues the
  request for the run's webhook; 404 for an unknown token, 413 past the size
  cap, 202 once it is queued.
- ``GET /healthz``.

``app`` reads its settings (``WORLDFLOW_GCP_*``, ``WORLDFLOW_MODULES``) when
the server starts it; ``create_app(world)`` serves a World built elsewhere
(tests and ``listen=`` serve the app inside the World's own process).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from worldflow import _api
from worldflow._codec import encode
from worldflow._hooks import WebhookRequest
from worldflow._world import Message, Outgoing

from ._auth import check_bearer
from ._logs import current_run
from ._tasks import TASK_ROUTE, decode_task
from ._world import WEBHOOK_PREFIX, GcpWorld

__all__ = ["app", "create_app"]

log = logging.getLogger("worldflow.gcp")

MAX_TASK_BYTES = 1 << 20  # Cloud Tasks' own limit on a task


class _TooLarge(Exception):
    pass


async def _read_capped(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _TooLarge(int(declared))
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _TooLarge(size)
        chunks.append(chunk)
    return b"".join(chunks)


def _runtime() -> Any:
    """This loop's runtime, to wait until the run a request touched is quiescent."""
    ready = _api._runtimes.get(asyncio.get_running_loop())
    return ready.result() if ready is not None and ready.done() else None


def create_app(world: GcpWorld | None = None) -> Starlette:
    """The service's ASGI app, over ``world`` or (None) the one configured at startup."""
    holder: dict[str, GcpWorld] = {}
    if world is not None:
        holder["world"] = world

    def current() -> GcpWorld:
        try:
            return holder["world"]
        except KeyError:
            raise RuntimeError("the worldflow app has not started (no lifespan ran)") from None

    async def tasks(request: Request) -> Response:
        w = current()
        status, reason = await check_bearer(w.settings, request.headers.get("authorization"))
        if status:
            log.warning("worldflow: refused a call to %s: %s", TASK_ROUTE, reason)
            return JSONResponse({"error": reason}, status_code=status)
        try:
            message, not_before, key = decode_task(await _read_capped(request, MAX_TASK_BYTES))
        except _TooLarge:
            return JSONResponse({"error": "task body too large"}, status_code=413)
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        token = current_run.set(message.run_id)
        task = request.headers.get("x-cloudtasks-taskname") or message.id
        try:
            return await _deliver(w, message, not_before, key, task)
        finally:
            current_run.reset(token)

    async def webhooks(request: Request) -> Response:
        w = current()
        token = str(request.path_params["token"])  # percent-decoded once, by the server
        try:
            body = await _read_capped(request, w.settings.max_webhook_bytes)
        except _TooLarge as exc:
            limit = w.settings.max_webhook_bytes
            return JSONResponse(
                {"error": f"body of {exc.args[0]} bytes is over the {limit} limit"},
                status_code=413,
            )
        hook = await w.get_hook(token)
        if hook is None or not hook.webhook:
            return JSONResponse({"error": "no live webhook has this token"}, status_code=404)
        webhook_request = WebhookRequest(
            method=request.method,
            headers={k.lower(): v for k, v in request.headers.items()},
            body=body,
            path=request.url.path,
            query=request.url.query,
        )
        message = Message(
            f"{w.worker_id}:{secrets.token_hex(8)}",
            hook.run_id,
            "hook",
            {"token": token, "payload": encode(webhook_request, where="a webhook request")},
        )
        await w.send([Outgoing(message)])
        log.info("worldflow: webhook call queued for run %s", hook.run_id)
        return JSONResponse({"ok": True, "run_id": hook.run_id}, status_code=202)

    async def healthz(request: Request) -> Response:
        return JSONResponse({"ok": True, "world": repr(holder.get("world"))})

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if "world" in holder:  # served by the World itself
            yield
            return
        from worldflow._config import load_settings

        from . import _logs
        from ._world import create_world

        _logs.install()
        built = create_world(load_settings("gcp"))
        # Cloud Run gives a stopping instance 10 s after SIGTERM: steps still running
        # get 8 of them to record their results; what is cut short runs again.
        async with _api.worker(built, grace=min(8.0, built.settings.drain_timeout)):
            holder["world"] = built
            yield

    return Starlette(
        routes=[
            Route(TASK_ROUTE, tasks, methods=["POST"]),
            Route(
                WEBHOOK_PREFIX + "{token:path}",
                webhooks,
                methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
            ),
            Route("/healthz", healthz, methods=["GET"]),
        ],
        lifespan=lifespan,
    )


async def _deliver(
    world: GcpWorld, message: Message, not_before: float | None, key: str | None, task: str
) -> Response:
    wait = world.undue(not_before)
    if wait > 0:
        if world.real_time:
            # Early (a sleep past Cloud Tasks' 30 days, or a clock skew): the next hop,
            # named after this task so that a redelivery of this one makes no second hop.
            await world.send([Outgoing(message, not_before, f"{key or message.id}#hop:{task}")])
            return JSONResponse({"ok": True, "rescheduled": True})
        # A virtual clock (tests): refuse, and the queue asks again.
        return JSONResponse(
            {"error": f"not due for {wait:.3f}s"}, status_code=503, headers={"Retry-After": "1"}
        )
    handler = world.handler
    if handler is None:
        return JSONResponse({"error": "this process is not serving runs"}, status_code=503)
    try:
        await handler(await world.restore(message))
    except Exception as exc:
        log.warning(
            "worldflow: message %s for run %s failed: %s", message.kind, message.run_id, exc
        )
        return JSONResponse({"error": f"{type(exc).__name__}: {exc}"}, status_code=500)
    runtime = _runtime()
    drain = world.settings.drain_timeout
    if runtime is not None and not await runtime.drain(drain, run_id=message.run_id):
        # Steps of the run still running: answering now could lose them with the
        # instance (other runs' steps belong to their own requests).
        return JSONResponse({"error": "the run is not quiescent yet"}, status_code=503)
    if runtime is not None and runtime.waits_on_others(message.run_id):
        # A step of the run is running on another worker, alive as far as its last
        # heartbeat says. Acknowledged, this task could be the last thing to bring
        # the run back should that worker be dead: let it come again, later.
        return JSONResponse(
            {"error": "a step of the run is running on another worker"},
            status_code=503,
            headers={"Retry-After": "5"},
        )
    log.info("worldflow: %s message for run %s applied", message.kind, message.run_id)
    return JSONResponse({"ok": True})


app = create_app()
