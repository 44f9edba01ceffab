"""What a concurrency or rate limit says: ``wf.Limit``, ``wf.Queue`` and rate strings.

Pure values, checked when a workflow or step is defined, so that a bad limit
is an error at import, not a run that fails later. The limiters themselves
(logs in the World's storage) are :mod:`worldflow._limits_flow`.

>>> wf.Limit(1, key=lambda customer_id, **_: customer_id)
>>> wf.Queue("emails", concurrency=5)      # shared by every workflow that names it
>>> parse_rate("50/m")
Rate(count=50, period=60.0)
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable
from typing import Any

from ._duration import parse_duration

__all__ = [
    "LIMITER_WORKFLOW",
    "Limit",
    "Queue",
    "Rate",
    "StartWindow",
    "Throttle",
    "as_limit",
    "as_throttle",
    "limit_key",
    "parse_rate",
]

#: The workflow name of a limiter's log in the World's storage (never a run to list).
LIMITER_WORKFLOW = "worldflow.limiter"

#: A limit's count and a key's length are bounded: a limiter is one log, a key a label.
MAX_LIMIT = 100_000
MAX_KEY_CHARS = 256

_UNITS = {"s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "d": 86400.0}
_RATE = re.compile(r"\s*(\d+)\s*/\s*(\S.*?)\s*")


def _check_count(n: object, what: str) -> int:
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"{what} must be an int >= 1, got {n!r} ({type(n).__name__})")
    if not 1 <= n <= MAX_LIMIT:
        raise ValueError(f"{what} must be an int from 1 to {MAX_LIMIT}, got {n!r}")
    return n


def _check_key(key: object, what: str) -> Callable[..., object] | None:
    if key is not None and not callable(key):
        raise TypeError(f"{what} must be a function of the arguments, got {key!r}")
    return key


class Limit:
    """At most ``n`` at once: of a workflow's runs, or of a step's attempts, across
    every worker. With ``key`` (a function of the same arguments), at most ``n`` per
    key: ``wf.Limit(1, key=lambda customer_id, **_: customer_id)``.

    Runs beyond the limit wait as ``pending`` and start in the order they were
    started as slots free up.
    """

    __slots__ = ("key", "n", "name")

    def __init__(self, n: int, *, key: Callable[..., object] | None = None) -> None:
        self.n = _check_count(n, "a concurrency limit")
        self.key = _check_key(key, "a concurrency limit's key")
        self.name: str | None = None

    def __repr__(self) -> str:
        return f"Limit({self.n}{', key=...' if self.key else ''})"


class Queue(Limit):
    """A named concurrency limit that several workflows share: at most
    ``concurrency`` runs of all the workflows given ``concurrency=queue`` at once.

    >>> emails = wf.Queue("emails", concurrency=5)
    >>> @wf.workflow(concurrency=emails)
    ... async def welcome(user_id: str) -> None: ...
    """

    __slots__ = ()

    def __init__(
        self, name: str, *, concurrency: int, key: Callable[..., object] | None = None
    ) -> None:
        if not isinstance(name, str) or not name.strip() or len(name) > 200:
            raise ValueError(f"a wf.Queue needs a non-empty name (at most 200 chars), got {name!r}")
        super().__init__(concurrency, key=key)
        self.name = name

    def __repr__(self) -> str:
        return f"Queue({self.name!r}, concurrency={self.n})"


def as_limit(value: object, what: str) -> Limit | None:
    """``concurrency=`` of a decorator as a :class:`Limit` (an int is an overall limit)."""
    if value is None or isinstance(value, Limit):
        return value
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(
            f"{what}: concurrency must be an int or a wf.Limit / wf.Queue, got {value!r}"
        )
    try:
        return Limit(value)
    except ValueError as exc:
        raise ValueError(f"{what}: {exc}") from None


@dataclasses.dataclass(frozen=True, slots=True)
class Rate:
    """``count`` attempts per ``period`` seconds, spaced evenly: one every
    ``period / count`` seconds at most (so never more than ``count`` in any window
    of ``period``)."""

    count: int
    period: float

    @property
    def every(self) -> float:
        return self.period / self.count

    def __str__(self) -> str:
        return f"{self.count}/{self.period:g}s"


def parse_rate(value: object, *, what: str = "rate_limit") -> Rate:
    """``"50/m"``, ``"10/s"``, ``"1000/h"``, ``"5/d"`` or ``"3/10s"`` (a count over any
    duration); a :class:`Rate` as is. Anything else is a ``ValueError`` quoting it."""
    if isinstance(value, Rate):
        return value
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a string like '50/m' or '10/s', got {value!r}")
    m = _RATE.fullmatch(value)
    if m is None:
        raise ValueError(
            f"{what} {value!r} is not a rate: write COUNT/PERIOD, like '50/m', '10/s' or '3/10s'"
        )
    count = int(m.group(1))
    unit = m.group(2)
    if unit in _UNITS:
        period = _UNITS[unit]
    else:
        try:
            period = parse_duration(unit, what=f"the period of {what} {value!r}")
        except ValueError:
            raise ValueError(
                f"{what} {value!r}: unknown period {unit!r} (use s, m, h, d or a duration "
                "such as 10s)"
            ) from None
    if count < 1:
        raise ValueError(f"{what} {value!r} allows nothing: the count must be >= 1")
    if count > MAX_LIMIT:
        raise ValueError(f"{what} {value!r}: the count must be at most {MAX_LIMIT}")
    if not math.isfinite(period) or period <= 0:
        raise ValueError(f"{what} {value!r}: the period must be > 0")
    return Rate(count, period)


def limit_key(
    key: Callable[..., object] | None, args: tuple[Any, ...], kwargs: dict[str, Any], what: str
) -> str:
    """The key ``key(*args, **kwargs)`` gives, as a str; ``""`` without a key function.

    A key function that raises, or returns something that is not a str or an
    int, is an error naming ``what`` (the workflow's or step's limit)."""
    if key is None:
        return ""
    try:
        value = key(*args, **kwargs)
    except Exception as exc:
        raise ValueError(f"the key function of {what} raised {type(exc).__name__}: {exc}") from exc
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise TypeError(
            f"the key function of {what} must return a str or an int, got {value!r} "
            f"({type(value).__name__})"
        )
    text = str(value)
    if len(text) > MAX_KEY_CHARS:
        raise ValueError(
            f"the key of {what} is longer than {MAX_KEY_CHARS} chars: {text[:40]!r}..."
        )
    return text


class StartWindow:
    """A window and a key given to ``wf.start`` (the base of :class:`Throttle` and
    ``wf.Debounce``): checked here, once, with the subclass's name in each error."""

    __slots__ = ("key", "window")
    what = "a start window"

    def __init__(self, window: object, *, key: str | int = "") -> None:
        what = self.what
        self.window = parse_duration(window, what=f"{what}'s window")
        if self.window <= 0:
            raise ValueError(f"{what}'s window must be > 0, got {window!r}")
        if isinstance(key, bool) or not isinstance(key, str | int):
            raise TypeError(f"{what}'s key must be a str or an int, got {key!r}")
        self.key = str(key)
        if len(self.key) > MAX_KEY_CHARS:
            raise ValueError(f"{what}'s key is longer than {MAX_KEY_CHARS} chars")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.window:g}, key={self.key!r})"


class Throttle(StartWindow):
    """At most one new run per ``window`` (per ``key``) from ``wf.start``: a start within
    the window of the last run it made returns that run instead of making another.

    >>> run = await wf.start(sync_customer, cid, throttle=wf.Throttle("10s", key=cid))
    """

    __slots__ = ()
    what = "a throttle"


def as_throttle(value: object) -> Throttle | None:
    """``wf.start(throttle=...)``: a :class:`Throttle`, or a window (one key for all)."""
    if value is None or isinstance(value, Throttle):
        return value
    return Throttle(value)
