"""Cron expressions and their fire times in a time zone, daylight saving included.

Five fields, as crontab(5): minute (0-59), hour (0-23), day of month (1-31),
month (1-12 or JAN-DEC), day of week (0-7 or SUN-SAT; 0 and 7 are Sunday).
Each field takes ``*``, a number or name, ``a-b`` ranges, ``,`` lists and
``/step`` (``*/15``, ``8-18/2``). When both day fields are restricted, a day
matches if either does (as cron does). Shortcuts: ``@hourly``, ``@daily``
(``@midnight``), ``@weekly``, ``@monthly``, ``@yearly`` (``@annually``).

Times are wall-clock times in the schedule's zone (``zoneinfo``):

- **Spring forward** (a wall-clock time that does not exist that day, e.g.
  01:30 in London on the last Sunday of March): the fire happens at the
  first instant after the gap (02:00 local, 01:00 UTC), once.
- **Autumn repeat** (a wall-clock time that happens twice): the fire happens
  once, at the first of the two.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = ["Cron", "parse_cron", "zone"]

_MONTHS = {
    m: i + 1
    for i, m in enumerate(
        ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"]
    )
}
_DAYS = {d: i for i, d in enumerate(["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"])}
_SHORTCUTS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}


def zone(name: str) -> ZoneInfo:
    """The IANA time zone ``name`` ("Europe/London", "UTC"); a ValueError that says so."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(
            f"unknown time zone {name!r} (an IANA name such as 'Europe/London')"
        ) from exc


def _field(text: str, low: int, high: int, names: dict[str, int], what: str) -> frozenset[int]:
    values: set[int] = set()
    for part in text.split(","):
        body, _, step_text = part.partition("/")
        step = 1
        if step_text:
            if not step_text.isdigit() or int(step_text) < 1:
                raise ValueError(f"{what}: bad step {step_text!r} in {text!r}")
            step = int(step_text)
        if body == "*":
            start, end = low, high
        else:
            first, dash, last = body.partition("-")
            start = _value(first, low, high, names, what, text)
            end = (
                _value(last, low, high, names, what, text)
                if dash
                else (high if step_text else start)
            )
            if end < start:
                raise ValueError(f"{what}: range {body!r} runs backwards in {text!r}")
        values.update(range(start, end + 1, step))
    return frozenset(values)


def _value(token: str, low: int, high: int, names: dict[str, int], what: str, text: str) -> int:
    upper = token.upper()
    if upper in names:
        return names[upper]
    if not token.isascii() or not token.isdigit():
        raise ValueError(f"{what}: {token!r} is not a number or name in {text!r}")
    value = int(token)
    if not low <= value <= high:
        raise ValueError(f"{what}: {value} is outside {low}-{high} in {text!r}")
    return value


@dataclasses.dataclass(frozen=True)
class Cron:
    """A parsed cron expression (see the module docstring)."""

    text: str
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday
    any_day: bool
    any_weekday: bool

    def _day_matches(self, day: dt.date) -> bool:
        if day.month not in self.months:
            return False
        weekday = (day.weekday() + 1) % 7
        by_day = day.day in self.days
        by_weekday = weekday in self.weekdays
        if self.any_day or self.any_weekday:
            return by_day and by_weekday
        return by_day or by_weekday

    def next_after(self, after: dt.datetime, tz: dt.tzinfo) -> dt.datetime:
        """The first fire time strictly after ``after`` (aware), as an aware UTC datetime."""
        if after.tzinfo is None:
            raise ValueError("next_after needs an aware datetime")
        local = after.astimezone(tz)
        day = local.date()
        for _ in range(366 * 8 + 1):  # every day of 8 years: enough for Feb 29 on a weekday
            if self._day_matches(day):
                for hour in sorted(self.hours):
                    for minute in sorted(self.minutes):
                        fire = _instant(day, hour, minute, tz)
                        if fire > after:
                            return fire
            day += dt.timedelta(days=1)
        raise ValueError(f"cron {self.text!r} never fires")


def _instant(day: dt.date, hour: int, minute: int, tz: dt.tzinfo) -> dt.datetime:
    """The UTC instant of this wall-clock time: the first of two in an autumn repeat,
    the end of the gap for a time skipped in spring."""
    naive = dt.datetime.combine(day, dt.time(hour, minute))
    first = naive.replace(tzinfo=tz, fold=0).astimezone(dt.UTC)
    if first.astimezone(tz).replace(tzinfo=None) == naive:
        return first  # it exists (fold=0: the first of two in an autumn repeat)
    # Skipped: the two readings of the time fall on either side of the gap; the fire
    # is the gap's end, the first instant whose local time is past the skipped one.
    second = naive.replace(tzinfo=tz, fold=1).astimezone(dt.UTC)
    probe = min(first, second)
    while probe.astimezone(tz).replace(tzinfo=None) < naive:
        probe += dt.timedelta(minutes=1)
    return probe


def parse_cron(text: str) -> Cron:
    """Parse a cron expression; a ValueError that names the field and the problem."""
    if not isinstance(text, str):
        raise TypeError(f"a cron expression is a str, got {text!r}")
    expanded = _SHORTCUTS.get(text.strip().lower(), text)
    fields = expanded.split()
    if len(fields) != 5:
        raise ValueError(
            f"cron {text!r}: expected 5 fields (minute hour day month weekday), got {len(fields)}"
        )
    minute, hour, day, month, weekday = fields
    weekdays = _field(weekday, 0, 7, _DAYS, "day of week")
    return Cron(
        text=text,
        minutes=_field(minute, 0, 59, {}, "minute"),
        hours=_field(hour, 0, 23, {}, "hour"),
        days=_field(day, 1, 31, {}, "day of month"),
        months=_field(month, 1, 12, _MONTHS, "month"),
        weekdays=frozenset(7 % 7 if d == 7 else d for d in weekdays),
        any_day=day == "*",
        any_weekday=weekday == "*",
    )
