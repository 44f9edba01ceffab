"""The two pages of the UI: the runs list and one run (timeline, steps, hooks, log).

Each function returns the ``<main>`` of a page as a string; :mod:`._app`
wraps it in the shell. Every value from a run goes through :func:`~._html.h`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from urllib.parse import quote

from worldflow._inspect import RunDetail, StepInfo, WaitInfo, display
from worldflow._world import Event, RunPage

from ._html import duration, h, pre, qs, run_url, status_badge, when
from ._timeline import Row, Timeline, layout

__all__ = ["STATUSES", "events_table", "run_body", "runs_body", "schedules_body", "step_body"]

STATUSES = ("pending", "running", "completed", "failed", "cancelled")
# Past these, a run page leaves each step's details and the event log out and
# its script fetches them when opened: a 1,000-step run's page stays small.
INLINE_STEPS = 100
INLINE_EVENTS = 300
# Past this many rows the timeline draws its grid lines only on the axis.
GRID_ROWS = 100


# -- the runs page -------------------------------------------------------------------


def runs_body(
    page: RunPage,
    *,
    status: str | None,
    workflow: str | None,
    cursor: str | None,
    limit: int,
    now: float,
    tag: str | None = None,
) -> str:
    options = "".join(
        f'<option value="{s}"{" selected" if s == status else ""}>{s}</option>' for s in STATUSES
    )
    names = sorted({r.workflow for r in page.runs} | ({workflow} if workflow else set()))
    datalist = "".join(f'<option value="{h(n)}">' for n in names)
    rows = "".join(
        _run_row(r.id, r.workflow, r.status, r.created_at, r.updated_at if r.done else None, now)
        for r in page.runs
    )
    if not rows:
        rows = (
            '<tr class="empty"><td colspan="5">No runs'
            + (" match these filters" if status or workflow or tag else "")
            + "</td></tr>"
        )
    query = qs(
        status=status,
        workflow=workflow,
        tag=tag,
        cursor=cursor,
        limit=str(limit) if limit != 50 else None,
    )
    pager = []
    if cursor:
        pager.append(
            f'<a href="/{h(qs(status=status, workflow=workflow, tag=tag))}">← first page</a>'
        )
    if page.cursor:
        nxt = qs(
            status=status,
            workflow=workflow,
            tag=tag,
            cursor=page.cursor,
            limit=str(limit) if limit != 50 else None,
        )
        pager.append(f'<a rel="next" id="next-page" href="/{h(nxt)}">next page →</a>')
    return f"""
<div class="runs-head"><h1>Runs</h1><form class="go" method="get" action="/go"><input name="id" id="go-id" placeholder="go to run id…" autocomplete="off" spellcheck="false"></form></div>
<form class="filters" method="get" action="/">
  <label>Status <select name="status" id="filter-status"><option value="">any</option>{options}</select></label>
  <label>Workflow <input name="workflow" id="filter-workflow" list="workflows" value="{h(workflow or "")}" placeholder="any" autocomplete="off"></label>
  <datalist id="workflows">{datalist}</datalist>
  <label>Tag <input name="tag" id="filter-tag" value="{h(tag or "")}" placeholder="key=value" autocomplete="off"></label>
  <button type="submit">Filter</button>
  {'<a href="/">clear</a>' if status or workflow or tag else ""}
  <label class="live"><input type="checkbox" id="live" checked> live</label>
</form>
<table class="runs" id="runs" data-api="/api/runs{h(query)}">
<thead><tr><th>Run</th><th>Workflow</th><th>Status</th><th>Started</th><th>Duration</th></tr></thead>
<tbody>{rows}</tbody>
</table>
<nav class="pager">{" ".join(pager)}</nav>
"""


def _run_row(
    run_id: str, workflow: str, status: str, created: float, ended: float | None, now: float
) -> str:
    return (
        f'<tr data-id="{h(run_id)}"><td class="id"><a href="{h(run_url(run_id))}">{h(run_id)}</a></td>'
        f'<td><a href="/{h(qs(workflow=workflow))}">{h(workflow)}</a></td>'
        f"<td>{status_badge(status)}</td><td>{when(created)}</td>"
        f'<td class="num">{duration(created, ended, now)}</td></tr>'
    )


# -- the run page ----------------------------------------------------------------------


def run_body(detail: RunDetail, now: float) -> str:
    info = detail.info
    api = "/api/runs/" + quote(info.id, safe="")
    parts = [
        f'<section class="run-head" id="run" data-api="{h(api)}" data-seq="{info.last_seq}" data-done="{int(info.done)}">',
        f"<h1>{h(info.id)} {status_badge(info.status)}</h1>",
        '<dl class="facts">',
        f'<dt>Workflow</dt><dd><a href="/{h(qs(workflow=info.workflow))}">{h(info.workflow)}</a></dd>',
        f"<dt>Created</dt><dd>{when(info.created_at)}</dd>",
        f"<dt>Ended</dt><dd>{when(detail.ended_at) or '—'}</dd>",
        f"<dt>Duration</dt><dd>{duration(info.created_at, detail.ended_at, now)}</dd>",
        f"<dt>Events</dt><dd>{info.last_seq}</dd>",
        *(
            [
                f'<dt>Parent</dt><dd><a href="{h(run_url(detail.parent))}">{h(detail.parent)}</a></dd>'
            ]
            if detail.parent is not None
            else []
        ),
        "</dl>",
        _actions(detail, api),
        "</section>",
    ]
    if detail.cancel_requested and not info.done:
        parts.append('<p class="note">Cancellation requested; the run stops at its next await.</p>')
    if detail.log_error:
        parts.append(
            f'<p class="problem">The log is corrupt from here on: {h(detail.log_error)}</p>'
        )
    parts.append(_timeline(layout(detail, now)))
    if detail.hooks_waiting:
        parts.append(_hooks(detail.hooks_waiting))
    if detail.sleeping:
        parts.append(_sleeps(detail.sleeping, api, now))
    io = ['<section class="io"><h2>Input</h2>' + pre(detail.input) + "</section>"]
    if info.status == "completed":
        io.append('<section class="io"><h2>Output</h2>' + pre(detail.output) + "</section>")
    if detail.error:
        io.append('<section class="io"><h2>Error</h2>' + _error(detail.error) + "</section>")
    parts.append('<div class="io-grid">' + "".join(io) + "</div>")
    if detail.children:
        parts.append(_children(detail))
    page_url = run_url(info.id)
    parts.append(_steps(detail.steps, now, page_url))
    parts.append(_events(detail.events, api, page_url))
    return "\n".join(parts)


def _children(detail: RunDetail) -> str:
    """The child runs, as this run's log knows them (each page shows its own children)."""
    rows = []
    for k in detail.children:
        note = " (detached)" if k.detached else ""
        rows.append(
            f'<tr><td class="num">{k.cid}</td><td><a href="{h(run_url(k.id))}">{h(k.id)}</a></td>'
            f"<td>{h(k.workflow)}{note}</td><td>{status_badge(k.status or 'running')}</td></tr>"
        )
    return (
        '<section class="children"><h2>Children</h2><table class="runs">'
        "<thead><tr><th>#</th><th>Run</th><th>Workflow</th><th>Status</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table></section>"
    )


def _actions(detail: RunDetail, api: str) -> str:
    buttons = []
    if not detail.info.done:
        buttons.append(
            f'<button class="action danger" data-url="{h(api)}/cancel" id="cancel">Cancel run</button>'
        )
    if detail.sleeping:
        buttons.append(
            f'<button class="action" data-url="{h(api)}/wake" id="wake-all">Wake sleeps now</button>'
        )
    buttons.append(
        f'<button class="action" data-url="{h(api)}/rerun" id="rerun">Re-run with same input</button>'
    )
    return '<div class="actions">' + "".join(buttons) + "</div>"


def _error(error: dict[str, object]) -> str:
    head = f"{error.get('type', 'Error')}: {error.get('message', '')}"
    out = f'<p class="error-line">{h(head)}</p>'
    trace = error.get("traceback")
    if trace:
        out += f'<details class="trace" open><summary>Traceback</summary><pre class="value">{h(trace)}</pre></details>'
    return out


def _timeline(tl: Timeline) -> str:
    grid = "".join(
        f'<line class="grid" x1="{p}%" x2="{p}%" y1="0" y2="100%"/>' for p, _ in tl.ticks
    )
    labels = "".join(
        f'<text x="{p}%" y="12" text-anchor="{"start" if p < 1 else ("end" if p > 99 else "middle")}">{h(t)}</text>'
        for p, t in tl.ticks
    )
    lane_grid = grid if len(tl.rows) <= GRID_ROWS else ""
    rows = "".join(_lane(row, lane_grid) for row in tl.rows)
    if not rows:
        rows = '<div class="lane-empty">No steps, sleeps or hooks yet.</div>'
    return f"""<section class="timeline" id="timeline">
<h2>Timeline</h2>
<div class="legend"><span class="key completed">attempt ok</span><span class="key retried">attempt failed, retried</span><span class="key failed">failed</span><span class="key running">running</span><span class="key backoff">retry delay</span><span class="key sleep">sleep</span><span class="key hook">hook wait</span></div>
<div class="waterfall">
<div class="wf-row axis"><div class="wf-label">{when(tl.start)}</div><svg class="lane" width="100%" height="16">{grid}{labels}</svg><div class="wf-note"></div></div>
{rows}
</div>
</section>"""


def _lane(row: Row, grid: str) -> str:
    shapes = []
    for bar in row.bars:
        y, height = (6, 4) if bar.kind in ("queued", "backoff") else (2, 12)
        shapes.append(
            f'<rect class="bar bar-{bar.kind}" x="{bar.left}%" width="{bar.width}%" y="{y}" height="{height}"><title>{h(bar.label)}</title></rect>'
        )
    for mark in row.marks:
        shapes.append(
            f'<rect class="mark" x="{mark.at}%" width="3" y="0" height="16"><title>{h(mark.label)}</title></rect>'
        )
    link = (
        f'<a href="#step-{row.position}">{h(row.label)}</a>' if row.kind == "step" else h(row.label)
    )
    return (
        f'<div class="wf-row kind-{row.kind}" data-position="{row.position}">'
        f'<div class="wf-label" title="{h(row.label)}"><span class="pos">#{row.position}</span> {link}</div>'
        f'<svg class="lane" width="100%" height="16">{grid}{"".join(shapes)}</svg>'
        f'<div class="wf-note">{status_badge(row.status)} {h(row.note)}</div></div>'
    )


def _hooks(hooks: tuple[WaitInfo, ...]) -> str:
    items = []
    for wait in hooks:
        token = wait.token or ""
        url = f'<p class="url">URL: <code>{h(wait.url)}</code></p>' if wait.url else ""
        items.append(
            f'<li class="hook" data-token="{h(token)}"><p>{h(wait.kind)} <code class="token">{h(token)}</code> '
            f"since {when(wait.started_at)} · {wait.received} received</p>{url}"
            f'<form class="resume" data-token="{h(token)}">'
            f'<label>Payload (JSON) <textarea name="payload" rows="3" spellcheck="false">{{}}</textarea></label>'
            '<button type="submit">Resume hook</button></form></li>'
        )
    return (
        '<section class="hooks" id="hooks"><h2>Waiting on hooks</h2><ul>'
        + "".join(items)
        + "</ul></section>"
    )


def _sleeps(sleeps: tuple[WaitInfo, ...], api: str, now: float) -> str:
    items = []
    for wait in sleeps:
        left = "" if wait.until is None else duration(now, wait.until, now)
        items.append(
            f"<li>sleep at position {wait.position} until {when(wait.until)} ({left} left) "
            f'<button class="action" data-url="{h(api)}/wake" data-body="{h(json.dumps({"position": wait.position}))}">Wake now</button></li>'
        )
    return (
        '<section class="sleeps" id="sleeps"><h2>Sleeping</h2><ul>'
        + "".join(items)
        + "</ul></section>"
    )


def _steps(steps: tuple[StepInfo, ...], now: float, page_url: str) -> str:
    if not steps:
        return '<section class="steps" id="steps"><h2>Steps</h2><p class="muted">No steps yet.</p></section>'
    lazy = len(steps) > INLINE_STEPS
    note = (
        f'<p class="muted">{len(steps)} steps: each one\'s details load when opened.</p>'
        if lazy
        else ""
    )
    return (
        '<section class="steps" id="steps"><h2>Steps</h2>'
        + note
        + "".join(_step(s, now, page_url if lazy else None) for s in steps)
        + "</section>"
    )


def _step(step: StepInfo, now: float, lazy_from: str | None) -> str:
    """A step's one-line summary, and its details inline, or (``lazy_from``, a
    run page's URL) fetched from that page's fragment route when opened."""
    if lazy_from is None:
        body, fragment = step_body(step, now), ""
    else:
        body = '<div class="fragment muted">loading…</div>'
        fragment = f' data-fragment="{h(lazy_from)}/fragments/step/{step.position}"'
    return (
        f'<details class="step" id="step-{step.position}"{fragment}><summary><span class="pos">#{step.position}</span> '
        f"<b>{h(step.name)}</b> {status_badge(step.status)} · {len(step.attempts)} attempt(s) · "
        f"{duration(step.started_at, step.ended_at, now)}</summary>{body}</details>"
    )


def step_body(step: StepInfo, now: float) -> str:
    """What an opened step shows: its id, input, output or error, and every attempt."""
    attempts = "".join(
        f"<tr><td>{a.number}</td><td>{when(a.started_at)}</td><td class='num'>{duration(a.started_at, a.ended_at, now)}</td>"
        f"<td>{status_badge(a.outcome)}</td><td><code>{h(a.worker or '')}</code></td>"
        f"<td>{h(_one_line(a.error))}</td></tr>"
        for a in step.attempts
    )
    body = [
        f'<p class="muted">step id <code>{h(step.id)}</code></p>',
        "<h3>Input</h3>",
        pre(step.input),
    ]
    if step.status == "completed":
        body += ["<h3>Output</h3>", pre(step.output)]
    if step.error:
        body += ["<h3>Error</h3>", _error(step.error)]
    if step.status == "retrying" and step.retry_at is not None:
        body.append(f"<p>Next attempt at {when(step.retry_at)}</p>")
    if attempts:
        body.append(
            '<h3>Attempts</h3><table class="attempts"><thead><tr><th>#</th><th>Started</th><th>Took</th>'
            f"<th>Outcome</th><th>Worker</th><th>Error</th></tr></thead><tbody>{attempts}</tbody></table>"
        )
    return '<div class="fragment">' + "".join(body) + "</div>"


def _one_line(error: dict[str, object] | None) -> str:
    if not error:
        return ""
    return f"{error.get('type', 'Error')}: {error.get('message', '')}"


def _events(events: tuple[Event, ...], api: str, page_url: str) -> str:
    if len(events) > INLINE_EVENTS:
        table, fragment = (
            '<div class="fragment muted">loading…</div>',
            f' data-fragment="{h(page_url)}/fragments/events"',
        )
    else:
        table, fragment = events_table(events), ""
    return (
        f'<section class="events" id="events"><details id="event-log"{fragment}><summary><h2>Event log ({len(events)})</h2></summary>'
        f'<p class="muted">As JSON: <a href="{h(api)}/events">{h(api)}/events</a></p>{table}'
        "</details></section>"
    )


def events_table(events: Sequence[Event]) -> str:
    """The raw log, one row per event (encoded values shown in display form)."""
    rows = "".join(
        f"<tr><td class='num'>{e.seq}</td><td>{when(e.at)}</td><td><code>{h(e.kind)}</code></td>"
        f"<td><pre class='value'>{h(json.dumps(display_data(e.data), ensure_ascii=False))}</pre></td></tr>"
        for e in events
    )
    return (
        '<div class="fragment"><table class="events"><thead><tr><th>Seq</th><th>At</th><th>Kind</th><th>Data</th></tr></thead>'
        f"<tbody>{rows}</tbody></table></div>"
    )


def display_data(data: dict[str, object]) -> dict[str, object]:
    """An event's data with its encoded values (input, output, payload) shown plainly."""
    return {k: display(v) if k in ("input", "output", "payload") else v for k, v in data.items()}


# -- the schedules page ---------------------------------------------------------------


def schedules_body(rows: Sequence[dict[str, object]]) -> str:
    """The schedules with a tick in flight: each workflow's next time, paused or not."""
    if not rows:
        return (
            '<h1>Schedules</h1><p class="empty">No schedule has a time coming: a serving '
            "process sets up the next time of each <code>@wf.schedule</code> it imports.</p>"
        )
    lines = []
    for row in rows:
        name = str(row["workflow"])
        next_at = row.get("next_at")
        state = "paused" if row.get("paused") else h(str(next_at).replace("T", " "))
        tick = row.get("tick")
        link = f'<a href="{run_url(str(tick))}">tick</a>' if tick else ""
        runs = f'<a href="/{qs(workflow=name)}">{h(name)}</a>'
        lines.append(f"<tr><td>{runs}</td><td>{state}</td><td>{link}</td></tr>")
    return (
        '<h1>Schedules</h1><table class="runs"><thead><tr><th>Workflow</th>'
        "<th>Next time (UTC)</th><th></th></tr></thead><tbody>"
        + "".join(lines)
        + "</tbody></table>"
    )
