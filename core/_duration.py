"""Durations: parse what users write ("5m", 30, a timedelta) into seconds, and format them."""

from __future__ import annotations

import math
import re
from datetime import timedelta

__all__ = ["format_duration", "parse_duration"]

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


def _invalid(value: object, what: str, reason: str = "") -> ValueError:
    for_what = "" if what == "duration" else f" for {what}"
    because = f" ({reason})" if reason else ""
    return ValueError(f"invalid duration {value!r}{for_what}{because}: {_FORMS}")


def parse_duration(value: object, *, what: str = "duration") -> float:
    """Return ``value`` as a number of seconds (a float >= 0).

    Accepts a number of seconds (int or float, not bool), a ``timedelta``,
    or a string: ``"90"`` (seconds), ``"500ms"``, ``"1.5s"``, ``"5m"``,
    ``"2h"``, ``"3d"``, ``"1w"`` and compounds such as ``"1h30m"`` or
    ``"1h 30m"``. Anything else, negative or not finite raises ``ValueError``
    naming ``what`` (e.g. ``"sleep"``).
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
    return seconds or 0.0  # -0.0 becomes 0.0


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
