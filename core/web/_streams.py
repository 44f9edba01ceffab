"""Streams and tags in the web UI: the Server-Sent Events endpoint, the run page's live
stream panels, and the runs page's tag filter.

``GET /api/runs/<id>/streams/<name>`` answers ``text/event-stream``: one ``chunk``
event per chunk (``id:`` its index, ``data:`` its display form as JSON), live
until the run ends, then one ``end`` event. ``?start=N`` or a ``Last-Event-ID``
header (what a browser's EventSource sends when it reconnects) resumes after
what the reader had. Values are shown in their display form: no module of the
user's is imported.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Mapping
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from worldflow._errors import WorldflowError
from worldflow._json import loads as json_loads
from worldflow._streams import READ_LIMIT, check_stream_name
from worldflow._tags import check_tags
from worldflow._world import TERMINAL, StreamInfo

from ._html import h

__all__ = ["parse_tags", "stream_events", "streams_section", "tags_facts"]

#: The longest wait between looks for new chunks.
MAX_POLL = 0.5


def parse_tags(values: list[str]) -> dict[str, str] | None:
    """``?tag=key=value`` (repeatable) as tags; a ValueError that says which is bad."""
    tags: dict[str, str] = {}
    for text in values:
        if not text:
            continue
        key, sep, value = text.partition("=")
        if not sep:
            raise ValueError(f"a tag filter is key=value, got {text!r}")
        tags[key.strip()] = value.strip()
    if not tags:
        return None
    try:
        return check_tags(tags, "tag filter")
    except TypeError as exc:  # not from a query string; kept for the type checker
        raise ValueError(str(exc)) from None


def tags_facts(tags: Mapping[str, str]) -> str:
    """A run's tags as links to the runs that share each."""
    if not tags:
        return ""
    links = " ".join(
        f'<a class="tag" href="/?tag={quote(f"{k}={v}", safe="")}">{h(k)}={h(v)}</a>'
        for k, v in sorted(tags.items())
    )
    return f'<p class="tags">Tags: {links}</p>'


def streams_section(run_id: str, streams: list[StreamInfo], done: bool) -> str:
    """A panel per stream, which the page's script fills live over SSE."""
    if not streams:
        return ""
    panels = []
    for info in streams:
        url = f"/api/runs/{quote(run_id, safe='')}/streams/{quote(info.name, safe='')}"
        panels.append(
            f'<details class="stream" open><summary>{h(info.name)} '
            f'<span class="count" data-count>{info.length}</span> chunks</summary>'
            f'<pre class="value stream-text" data-stream="{h(url)}"></pre></details>'
        )
    state = "" if done else " (live)"
    return f'<section class="streams"><h2>Streams{state}</h2>{"".join(panels)}</section>'


def _start(request: Request) -> int:
    last = request.headers.get("last-event-id")
    after = last is not None
    text = last if last is not None else (request.query_params.get("start") or "0")
    try:
        start = int(text)
    except ValueError:
        start = -1
    if start < 0:
        raise ValueError(f"start must be a whole number >= 0, got {text!r}")
    return start + 1 if after else start  # Last-Event-ID is the last index it had


async def stream_events(request: Request, reader: object) -> Response:
    """The SSE response (``reader``: the app's read-only Backend)."""
    from ._app import HttpError

    run_id = request.path_params["run_id"]
    name = request.path_params["name"]
    try:
        check_stream_name(name, "the stream name")
        start = _start(request)
    except (TypeError, ValueError) as exc:
        raise HttpError(400, str(exc)) from None
    try:
        info = await reader.get_run(run_id)  # type: ignore[attr-defined]
        store = reader.world.stream_store()  # type: ignore[attr-defined]
    except NotImplementedError as exc:
        raise HttpError(501, str(exc)) from None
    except WorldflowError as exc:
        raise HttpError(502, f"the world could not read run {run_id!r}: {exc}") from None
    if info is None:
        raise HttpError(404, f"no run with id {run_id!r}")

    async def events() -> AsyncIterator[str]:
        index = start
        delay = 0.05
        yield "retry: 1000\n\n"
        while True:
            try:
                current = await reader.get_run(run_id)  # type: ignore[attr-defined]
                ended = current is None or current.status in TERMINAL
                texts = await store.read_chunks(run_id, name, index, READ_LIMIT)
            except WorldflowError as exc:
                yield f"event: problem\ndata: {json.dumps(str(exc))}\n\n"
                return
            for text in texts:
                value = _display(text, index, name)
                yield f"id: {index}\nevent: chunk\ndata: {json.dumps(value)}\n\n"
                index += 1
            if texts:
                delay = 0.05
                continue
            if ended:
                yield f"event: end\ndata: {json.dumps({'next': index})}\n\n"
                return
            if await request.is_disconnected():
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_POLL)

    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(events(), media_type="text/event-stream", headers=headers)


def _display(text: str, index: int, name: str) -> object:
    from worldflow._codec import to_display

    try:
        return to_display(json_loads(text, f"chunk {index} of stream {name!r}"))
    except WorldflowError as exc:
        return f"<unreadable chunk: {exc}>"
