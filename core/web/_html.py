"""HTML building blocks: escaping, the page shell, times, durations and values.

Pages are plain strings. Everything that comes from a run (ids, names,
payloads, error messages, tokens) is user data and goes through :func:`h`
(or :func:`pre` / :func:`attr`) on its way into the page; the page's script
only ever sets ``textContent``. The response also carries a Content Security
Policy that allows no inline script, so a value that slipped through
unescaped still could not run.
"""

from __future__ import annotations

import datetime as dt
import html
import json
from typing import Any
from urllib.parse import quote, urlencode

from worldflow._duration import format_duration

__all__ = ["attr", "duration", "h", "page", "pre", "qs", "run_url", "status_badge", "when"]


def h(value: object) -> str:
    """``value`` as text safe inside an element or a quoted attribute."""
    return html.escape(str(value), quote=True)


attr = h


def pre(value: Any) -> str:
    """A displayed value as an indented JSON block."""
    text = value if isinstance(value, str) else json.dumps(value, indent=2, ensure_ascii=False)
    return f'<pre class="value">{h(text)}</pre>'


def run_url(run_id: str) -> str:
    return "/runs/" + quote(run_id, safe="")


def qs(**params: str | None) -> str:
    """A query string of the params that are set (``""`` when none is)."""
    kept = {k: v for k, v in params.items() if v}
    return "?" + urlencode(kept) if kept else ""


def when(ts: float | None) -> str:
    """A UTC time the page's script turns into the reader's local time."""
    if ts is None:
        return ""
    moment = dt.datetime.fromtimestamp(ts, dt.UTC)
    text = moment.strftime("%Y-%m-%d %H:%M:%S") + f".{moment.microsecond // 1000:03d}"
    iso = moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return f'<time datetime="{iso}">{text} UTC</time>'


def duration(start: float | None, end: float | None, now: float) -> str:
    """How long from ``start`` to ``end``; to ``now``, marked ongoing, when ``end`` is None."""
    if start is None:
        return ""
    if end is None:
        return h(format_duration(max(0.0, now - start))) + "…"
    return h(format_duration(max(0.0, end - start)))


def status_badge(status: str) -> str:
    return f'<span class="status status-{h(status.replace(" ", "-"))}">{h(status)}</span>'


def page(title: str, body: str, *, token: str, refresh: float | None = None) -> str:
    """The shell every page shares. ``token`` is the per-process secret the
    page's script sends with each POST (see the app's origin check)."""
    live = "" if refresh is None else f'<meta name="wf-refresh" content="{refresh:g}">'
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="wf-token" content="{h(token)}">
{live}
<title>{h(title)} · worldflow</title>
<link rel="stylesheet" href="/static/style.css">
<link rel="icon" href="data:,">
<script src="/static/app.js" defer></script>
</head>
<body>
<header class="top"><a class="brand" href="/">worldflow</a><span class="crumb">{h(title)}</span><a class="nav" href="/schedules">schedules</a></header>
<main>
{body}
</main>
<div id="toast" role="status" aria-live="polite"></div>
</body>
</html>
"""
