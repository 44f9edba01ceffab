"""Durations: parse what users write ("5m", 30, a timedelta) into seconds, and format them.

Durations and wake-up times are bounded so that every time worldflow stores
is one a ``datetime`` can hold: a sleep of 1e300 seconds would be recorded,
and then no display of the run could show when it wakes up.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta

__all__ = ["LATEST_WAKEUP", "MAX_DURATION", "check_wakeup", "format_duration", "parse_duration"]

MAX_DURATION = 1000 * 365.25 * 86400
"""The longest duration accepted, in seconds: 1000 years.

Longer than any real wait, timeout or retry delay, and short enough that now
plus it is still far inside what a ``datetime`` holds (the year 9999).
"""

LATEST_WAKEUP = datetime(9999, 1, 1, tzinfo=UTC).timestamp()
"""The latest wake-up time accepted (POSIX seconds): 9999-01-01 UTC.

A year short of ``datetime.max``, so that showing it in any time zone, or
adding a lease or a grace period to it, still gives a valid ``datetime``.
"""

_FORMS = (
    'use a number of seconds, a timedelta, or a string such as "500ms", "10s", '
    '"5m", "2h", "3d", "1w"'
)

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_NUMBER = r"(?:\d+(?:\.\d+)?|\.\d+)"
# "ms" is listed before "m" so that "500ms" is not read as 500 minutes and an "s".
_PART = re.compile(rf"({_NUMBER})\s*(ms|s|m|h|d|w)\s*")
_COMPOUND = re.compile(rf"(?:{_NUMBER}\s*(?:ms|s|m|h|d|w)\s*)+")
_PLAIN = re.compile(_NUMBER)


def _quote(value: object) -> str:
    try:
        return repr(value)
    except ValueError:  # an int past the 4300-digit str() limit
        return f"<an int of {value.bit_length()} bits>" if isinstance(value, int) else "<?>"


def _invalid(value: object, what: str, reason: str = "") -> ValueError:
    for_what = "" if what == "duration" else f" for {what}"
    because = f" ({reason})" if reason else ""
    return ValueError(f"invalid duration {_quote(value)}{for_what}{because}: {_FORMS}")


def parse_duration(value: object, *, what: str = "duration") -> float:
    """Return ``value`` as a number of seconds (a float >= 0).

    Accepts a number of seconds (int or float, not bool), a ``timedelta``,
    or a string: ``"90"`` (seconds), ``"500ms"``, ``"1.5s"``, ``"5m"``,
    ``"2h"``, ``"3d"``, ``"1w"`` and compounds such as ``"1h30m"`` or
    ``"1h 30m"``. Anything else, negative, not finite or longer than
    :data:`MAX_DURATION` (1000 years) raises ``ValueError`` quoting the
    value and naming ``what`` (e.g. ``"sleep"``).
    """
    if isinstance(value, str):
        text = value.strip()
        if not text:
            raise _invalid(value, what, "it is empty")
        if _PLAIN.fullmatch(text):
            seconds = float(text)
        elif _COMPOUND.fullmatch(text):
            seconds = sum(float(n) * _UNITS[unit] for n, unit in _PART.findall(text))
        else:
            raise _invalid(value, what)
    elif isinstance(value, bool):
        # bool is an int, but True seconds is surely a mistake.
        raise _invalid(value, what, "a bool is not a duration")
    elif isinstance(value, int | float):
        try:
            seconds = float(value)
        except OverflowError:
            raise _invalid(value, what, "it is too large") from None
        if seconds < 0:
            raise _invalid(value, what, "it is negative")
    elif isinstance(value, timedelta):
        seconds = value.total_seconds()
        if seconds < 0:
            raise _invalid(value, what, "it is negative")
    else:
        cls = type(value)
        name = (
            cls.__qualname__
            if cls.__module__ == "builtins"
            else f"{cls.__module__}.{cls.__qualname__}"
        )
        raise _invalid(value, what, f"a {name} is not a duration")
    if not math.isfinite(seconds):
        raise _invalid(value, what, "it is not finite")
    if seconds > MAX_DURATION:
        raise _invalid(value, what, "it is longer than 1000 years, the longest accepted")
    return seconds or 0.0  # -0.0 becomes 0.0


def check_wakeup(timestamp: float, what: str = "a timer") -> float:
    """Return ``timestamp`` (POSIX seconds) as a float if a timer may be set for it.

    A time after :data:`LATEST_WAKEUP` (9999-01-01 UTC), or not a finite
    number, raises ``ValueError`` quoting it and naming ``what`` (e.g.
    ``"wf.sleep(until=...)"``). A time in the past is accepted: the engine
    fires it at once.

    >>> check_wakeup(until.timestamp(), "wf.sleep(until=...)")
    """
    if isinstance(timestamp, bool) or not isinstance(timestamp, int | float):
        raise ValueError(f"invalid wake-up time {_quote(timestamp)} for {what}: not a number")
    try:
        seconds = float(timestamp)
    except OverflowError:  # an int no float holds
        seconds = math.inf if timestamp > 0 else -math.inf
    if seconds > LATEST_WAKEUP:
        raise ValueError(
            f"invalid wake-up time {_quote(timestamp)} for {what} ({_as_date(seconds)}): "
            "worldflow schedules nothing after 9999-01-01 UTC"
        )
    if not math.isfinite(seconds):
        raise ValueError(f"invalid wake-up time {_quote(timestamp)} for {what}: it is not finite")
    return seconds


def _as_date(seconds: float) -> str:
    try:
        return datetime.fromtimestamp(seconds, UTC).isoformat()
    except (OverflowError, ValueError, OSError):
        return "after the year 9999"


def _short(x: float) -> str:
    # One decimal below 10 ("1.5s"), whole numbers above ("12s").
    if x < 9.95:
        text = f"{x:.1f}"
        return text[:-2] if text.endswith(".0") else text
    return str(round(x))


def format_duration(seconds: float) -> str:
    """Format seconds for a table: "850µs", "12ms", "1.5s", "2m 05s", "3h 04m", "3d 2h"."""
    if math.isnan(seconds):
        return "nan"
    if seconds < 0:
        return "-" + format_duration(-seconds)
    if math.isinf(seconds):
        return "inf"
    if seconds == 0:
        return "0s"
    # Each unit gives way to the next when rounding reaches it (999.7ms -> "1s").
    if seconds < 1e-3 and (text := _short(seconds * 1e6)) != "1000":
        return text + "µs"
    if seconds < 1 and (text := _short(seconds * 1e3)) != "1000":
        return text + "ms"
    if seconds < 60 and (text := _short(seconds)) != "60":
        return text + "s"
    total = round(seconds)
    if total < 3600:
        return f"{total // 60}m {total % 60:02d}s"
    total = round(seconds / 60)
    if total < 1440:
        return f"{total // 60}h {total % 60:02d}m"
    total = round(seconds / 3600)
    return f"{total // 24}d {total % 24}h"
