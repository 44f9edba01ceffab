"""The ASGI app: pages, the JSON API under ``/api/``, static files, and the POST guard.

Reading goes through the World's Storage protocol on a world opened
read-only (as ``worldflow runs`` does), so the UI works with any World and
imports none of the user's code. Actions (cancel, re-run, wake, resume a
hook) go through the public API on a client runtime, started on first use:
they only record a request or send a message; the workers do the rest.

There is no authentication (see docs/web.md): the server binds to 127.0.0.1
by default, refuses Host names other than the one it serves (DNS rebinding),
and accepts a POST only from its own pages: same Origin, and the
per-process token the page carries in a header a cross-site form cannot set.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

import worldflow as wf
from worldflow._api import client
from worldflow._backend import Backend as Reader
from worldflow._config import create_world
from worldflow._errors import HookNotFound, RunNotFound, SerializationError, WorldflowError
from worldflow._events import EventKind
from worldflow._inspect import RunDetail, inspect_run
from worldflow._world import RunInfo, RunPage

from ._documents import detail_doc, event_doc, page_doc, run_doc
from ._html import h, page
from ._pages import STATUSES, events_table, run_body, runs_body, schedules_body, step_body
from ._streams import parse_tags, stream_events, streams_section, tags_facts

__all__ = ["TOKEN_HEADER", "create_app"]

TOKEN_HEADER = "X-Worldflow-Token"
STATIC = Path(__file__).parent / "static"
MAX_BODY = 1 << 20
REOPEN_EVERY = 5.0  # seconds
_SECURITY_HEADERS = {
    # No inline script at all: a value that escaped escaping still cannot run.
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


class HttpError(Exception):
    """A request the UI refuses: ``status`` and a message that says why."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class Backend:
    """The app's access to the World: a read-only one for looking, a client
    runtime (on the server's loop, made on first use) for acting."""

    def __init__(self, world: str | None) -> None:
        self.world_name = world
        self.token = secrets.token_urlsafe(32)
        self._reader: Reader | None = None
        self._retired: Reader | None = None
        self._reopened = 0.0
        self._actions = contextlib.AsyncExitStack()
        self._acting = False
        self._lock = asyncio.Lock()

    @property
    def reader(self) -> Reader:
        if self._reader is None:
            self._reader = Reader(create_world(self.world_name, read_only=True))
        return self._reader

    async def reopen(self) -> None:
        """Open the reader again (at most every few seconds): a world opened
        read-only before anything ran may have been read as empty for good
        (the local world does not create its database). The old reader is
        closed at the next reopen, not now: a request may still be using it."""
        now = time.monotonic()
        if self._reader is None or now - self._reopened < REOPEN_EVERY:
            return
        self._reopened = now
        if self._retired is not None:
            await self._retired.world.close()
        self._retired, self._reader = self._reader, None

    async def act(self) -> None:
        """Make sure this loop has a client runtime for the public API's actions."""
        async with self._lock:
            if not self._acting:
                await self._actions.enter_async_context(client(self.world_name))
                self._acting = True

    async def close(self) -> None:
        await self._actions.aclose()
        for reader in (self._reader, self._retired):
            if reader is not None:
                await reader.world.close()
        self._reader = self._retired = None


def create_app(
    *,
    world: str | None = None,
    allowed_hosts: Sequence[str] | None = ("127.0.0.1", "localhost", "[::1]"),
    refresh: float = 2.0,
) -> Starlette:
    """The web UI as an ASGI app (``worldflow web`` serves it with uvicorn).

    ``world``: a world name (default: the configured one, as ``WORLDFLOW_WORLD``).
    ``allowed_hosts``: the Host names requests may carry (None: any; for a
    server bound to a public address behind your own auth). ``refresh``: how
    often (seconds) open pages poll for changes.
    """
    backend = Backend(world)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await backend.close()

    def get(handler: Callable[[Request, Backend], Awaitable[Response]]) -> Any:
        async def endpoint(request: Request) -> Response:
            try:
                return _secure(await handler(request, backend))
            except HttpError as exc:
                return _secure(_error_response(request, exc, backend))

        return endpoint

    def post(handler: Callable[[Request, Backend, Any], Awaitable[dict[str, Any]]]) -> Any:
        async def endpoint(request: Request) -> Response:
            try:
                _check_origin(request, backend.token)
                body = await _json_body(request)
                await backend.act()
                return _secure(JSONResponse(await handler(request, backend, body)))
            except HttpError as exc:
                return _secure(JSONResponse({"error": exc.message}, status_code=exc.status))
            except Exception as exc:  # shown in the page's message line, not swallowed
                status, message = _classify(exc)
                return _secure(JSONResponse({"error": message}, status_code=status))

        return endpoint

    routes = [
        Route("/", get(_runs_page)),
        Route("/go", get(_go)),
        Route("/runs/{run_id:path}/fragments/step/{position:int}", get(_step_fragment)),
        Route("/runs/{run_id:path}/fragments/events", get(_events_fragment)),
        Route("/runs/{run_id:path}", get(_run_page)),
        Route("/schedules", get(_schedules_page)),
        Route("/api/schedules", get(_api_schedules)),
        Route("/api/runs", get(_api_runs)),
        Route("/api/runs/{run_id:path}/events", get(_api_events)),
        Route("/api/runs/{run_id:path}/streams/{name}", get(_api_stream)),
        Route("/api/runs/{run_id:path}/cancel", post(_cancel), methods=["POST"]),
        Route("/api/runs/{run_id:path}/rerun", post(_rerun), methods=["POST"]),
        Route("/api/runs/{run_id:path}/wake", post(_wake), methods=["POST"]),
        Route("/api/runs/{run_id:path}", get(_api_run)),
        Route("/api/hooks/resume", post(_resume), methods=["POST"]),
        # follow_symlink: the dev install links each file into its package folder.
        Mount("/static", StaticFiles(directory=STATIC, follow_symlink=True), name="static"),
    ]
    middleware = []
    if allowed_hosts is not None:
        middleware.append(Middleware(TrustedHostMiddleware, allowed_hosts=list(allowed_hosts)))
    app = Starlette(routes=routes, middleware=middleware, lifespan=lifespan)
    app.state.backend = backend
    app.state.refresh = refresh
    return app


# -- reading -----------------------------------------------------------------------------


def _filters(request: Request) -> tuple[str | None, str | None, str | None, int]:
    q = request.query_params
    status = q.get("status") or None
    if status is not None and status not in STATUSES:
        raise HttpError(400, f"unknown status {status!r}; expected one of {', '.join(STATUSES)}")
    limit_text = q.get("limit") or "50"
    try:
        limit = int(limit_text)
    except ValueError:
        limit = 0
    if not 1 <= limit <= 500:
        raise HttpError(400, f"limit must be a whole number from 1 to 500, got {limit_text!r}")
    return status, q.get("workflow") or None, q.get("cursor") or None, limit


async def _list(
    request: Request, backend: Backend
) -> tuple[RunPage, str | None, str | None, str | None, int]:
    status, workflow, cursor, limit = _filters(request)
    try:
        tags = parse_tags(request.query_params.getlist("tag"))
    except ValueError as exc:
        raise HttpError(400, str(exc)) from None

    async def fetch() -> RunPage:
        try:
            return await backend.reader.list_runs(
                status=status, workflow=workflow, limit=limit, cursor=cursor, tags=tags
            )
        except ValueError as exc:  # a malformed cursor
            raise HttpError(400, str(exc)) from None
        except WorldflowError as exc:
            raise HttpError(502, f"the world could not list runs: {exc}") from None

    runs = await fetch()
    if not runs.runs and cursor is None and status is None and workflow is None and not tags:
        await backend.reopen()  # nothing yet, or a store opened before it existed
        runs = await fetch()
    return runs, status, workflow, cursor, limit


async def _info(request: Request, backend: Backend) -> RunInfo:
    run_id = request.path_params["run_id"]
    try:
        info = await backend.reader.get_run(run_id)
        if info is None:
            await backend.reopen()
            info = await backend.reader.get_run(run_id)
    except WorldflowError as exc:
        raise HttpError(502, f"the world could not read run {run_id!r}: {exc}") from None
    if info is None:
        raise HttpError(404, f"no run with id {run_id!r}")
    return info


async def _detail(request: Request, backend: Backend) -> RunDetail:
    info = await _info(request, backend)
    try:
        return inspect_run(info, await backend.reader.read_events(info.id))
    except WorldflowError as exc:
        raise HttpError(502, f"the world could not read run {info.id!r}: {exc}") from None


async def _runs_page(request: Request, backend: Backend) -> Response:
    runs, status, workflow, cursor, limit = await _list(request, backend)
    body = runs_body(
        runs,
        status=status,
        workflow=workflow,
        cursor=cursor,
        limit=limit,
        now=time.time(),
        tag=request.query_params.get("tag") or None,
    )
    return HTMLResponse(page("Runs", body, token=backend.token, refresh=request.app.state.refresh))


async def _go(request: Request, backend: Backend) -> Response:
    """The runs page's "go to run" box: to the run's page (which says if there is none)."""
    run_id = request.query_params.get("id", "").strip()
    if not run_id:
        return RedirectResponse("/", status_code=303)
    return RedirectResponse("/runs/" + _quote(run_id), status_code=303)


async def _run_page(request: Request, backend: Backend) -> Response:
    detail = await _detail(request, backend)
    refresh = None if detail.info.done else request.app.state.refresh
    body = run_body(detail, time.time())
    try:
        streams = await backend.reader.world.stream_store().list_streams(detail.id)
    except (NotImplementedError, WorldflowError):
        streams = []  # the page shows the rest; the stream endpoint says why
    body += tags_facts(detail.info.tags) + streams_section(detail.id, streams, detail.info.done)
    return HTMLResponse(page(f"Run {detail.id}", body, token=backend.token, refresh=refresh))


async def _step_fragment(request: Request, backend: Backend) -> Response:
    """One step's details, for a big run's page, which loads them when opened."""
    detail = await _detail(request, backend)
    position = request.path_params["position"]
    step = next((s for s in detail.steps if s.position == position), None)
    if step is None:
        raise HttpError(404, f"run {detail.id!r} has no step at position {position}")
    return HTMLResponse(step_body(step, time.time()))


async def _events_fragment(request: Request, backend: Backend) -> Response:
    return HTMLResponse(events_table((await _detail(request, backend)).events))


_TICK = "worldflow.schedule_tick"
_PAUSE = "worldflow.schedule_pause"


async def _schedules(backend: Backend) -> list[dict[str, Any]]:
    """The schedules with a tick in flight (their next times), from the store alone: the
    ticks' ids name the workflow and the time (no module needs to be imported here)."""
    reader = backend.reader
    found: dict[str, dict[str, Any]] = {}
    paused: set[str] = set()
    for status in ("pending", "running"):
        ticks = await reader.list_runs(status=status, workflow=_TICK, limit=1000)
        for info in ticks.runs:
            name, _, when = info.id.removeprefix("worldflow.schedule:").rpartition("@")
            entry = found.setdefault(name, {"workflow": name, "next_at": when, "tick": info.id})
            if when < entry["next_at"]:
                entry.update(next_at=when, tick=info.id)
        pauses = await reader.list_runs(status=status, workflow=_PAUSE, limit=1000)
        for info in pauses.runs:
            paused.add(info.id.removeprefix("worldflow.schedule-paused:").rpartition(":")[0])
    for name in paused:
        found.setdefault(name, {"workflow": name, "next_at": None, "tick": None})
    return [
        {**entry, "paused": entry["workflow"] in paused}
        for entry in sorted(found.values(), key=lambda e: e["workflow"])
    ]


async def _schedules_page(request: Request, backend: Backend) -> Response:
    rows = await _schedules(backend)
    body = schedules_body(rows)
    return HTMLResponse(
        page("Schedules", body, token=backend.token, refresh=request.app.state.refresh)
    )


async def _api_schedules(request: Request, backend: Backend) -> Response:
    return JSONResponse({"schedules": await _schedules(backend)})


async def _api_runs(request: Request, backend: Backend) -> Response:
    runs = (await _list(request, backend))[0]
    return JSONResponse(page_doc(runs))


async def _api_run(request: Request, backend: Backend) -> Response:
    if request.query_params.get("summary"):  # what a run page polls: no log to read
        return JSONResponse(run_doc(await _info(request, backend)))
    return JSONResponse(detail_doc(await _detail(request, backend)))


async def _api_stream(request: Request, backend: Backend) -> Response:
    return await stream_events(request, backend.reader)


async def _api_events(request: Request, backend: Backend) -> Response:
    detail = await _detail(request, backend)
    return JSONResponse({"id": detail.id, "events": [event_doc(e) for e in detail.events]})


# -- acting -------------------------------------------------------------------------------


async def _cancel(request: Request, backend: Backend, body: Any) -> dict[str, Any]:
    run = wf.get_run(request.path_params["run_id"])
    info = await run.info()
    if info.done:
        return {"id": run.id, "status": info.status, EventKind.CANCEL_REQUESTED: False}
    await run.cancel()
    return {"id": run.id, "status": info.status, EventKind.CANCEL_REQUESTED: True}


async def _rerun(request: Request, backend: Backend, body: Any) -> dict[str, Any]:
    new = await wf.get_run(request.path_params["run_id"]).rerun()
    return {"id": new.id, "url": "/runs/" + _quote(new.id)}


async def _wake(request: Request, backend: Backend, body: Any) -> dict[str, Any]:
    position = body.get("position") if isinstance(body, dict) else None
    if position is not None and (not isinstance(position, int) or isinstance(position, bool)):
        raise HttpError(400, f"position must be a whole number, got {position!r}")
    run = wf.get_run(request.path_params["run_id"])
    await run.wake(position)
    return {"id": run.id, "woken": "all" if position is None else position}


async def _resume(request: Request, backend: Backend, body: Any) -> dict[str, Any]:
    if (
        not isinstance(body, dict)
        or not isinstance(body.get("token"), str)
        or "payload" not in body
    ):
        raise HttpError(400, 'expected a JSON object {"token": "...", "payload": <any JSON>}')
    run = await wf.resume_hook(body["token"], body["payload"])
    return {"token": body["token"], "run_id": run.id}


def _quote(run_id: str) -> str:
    return quote(run_id, safe="")


# -- the guard and the errors ------------------------------------------------------------


def _check_origin(request: Request, token: str) -> None:
    """Refuse a POST that did not come from one of this server's own pages."""
    own = f"{request.url.scheme}://{request.headers.get('host', '')}"
    origin = request.headers.get("origin")
    if origin is not None and origin != own:
        raise HttpError(403, f"cross-origin request refused: Origin {origin} is not {own}")
    if request.headers.get("sec-fetch-site") in ("cross-site", "same-site"):
        raise HttpError(403, "cross-site request refused (Sec-Fetch-Site)")
    sent = request.headers.get(TOKEN_HEADER.lower(), "")
    if not secrets.compare_digest(sent.encode(), token.encode()):
        raise HttpError(
            403,
            f"missing or wrong {TOKEN_HEADER} header: actions are accepted only from this "
            "server's pages (reload the page if the server restarted)",
        )


async def _json_body(request: Request) -> Any:
    raw = await request.body()
    if len(raw) > MAX_BODY:
        raise HttpError(
            413, f"the request body is {len(raw)} bytes; at most {MAX_BODY} are accepted"
        )
    if not raw.strip():
        return None
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise HttpError(400, f"the request body is not valid JSON: {exc}") from None


def _classify(exc: Exception) -> tuple[int, str]:
    if isinstance(exc, RunNotFound):
        return 404, f"no run with id {exc.run_id!r}"
    if isinstance(exc, HookNotFound):
        return 404, f"no live hook has the token {exc.token!r} (the run may have moved on)"
    if isinstance(exc, SerializationError | ValueError | TypeError):
        return 400, str(exc)
    if isinstance(exc, WorldflowError):
        return 502, f"the world refused: {exc}"
    return 500, f"{type(exc).__name__}: {exc}"


def _error_response(request: Request, exc: HttpError, backend: Backend) -> Response:
    if request.url.path.startswith("/api/"):
        return JSONResponse({"error": exc.message}, status_code=exc.status)
    body = f'<h1>{exc.status}</h1><p class="problem">{h(exc.message)}</p><p><a href="/">All runs</a></p>'
    return HTMLResponse(page(str(exc.status), body, token=backend.token), status_code=exc.status)


def _secure(response: Response) -> Response:
    response.headers.update(_SECURITY_HEADERS)
    return response
