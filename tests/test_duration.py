"""Durations: every accepted form, every rejected one, and the short display form."""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

import worldflow as wf
from worldflow._duration import (
    LATEST_WAKEUP,
    MAX_DURATION,
    check_wakeup,
    format_duration,
    parse_duration,
)

FORMS = 'use a number of seconds, a timedelta, or a string such as "500ms", "10s", "5m", "2h", "3d", "1w"'


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        # units
        ("500ms", 0.5),
        ("10s", 10.0),
        ("5m", 300.0),
        ("2h", 7200.0),
        ("3d", 259200.0),
        ("1w", 604800.0),
        ("0s", 0.0),
        ("0ms", 0.0),
        # decimals
        ("1.5s", 1.5),
        ("0.5m", 30.0),
        (".25h", 900.0),
        ("2.5ms", 0.0025),
        # compounds, with or without spaces
        ("1h30m", 5400.0),
        ("1h 30m", 5400.0),
        ("1d 2h 3m 4s 5ms", 93784.005),
        ("1w1d", 691200.0),
        ("5m500ms", 300.5),
        ("10 s", 10.0),
        ("1h  30m", 5400.0),
        # whitespace around
        ("  10s  ", 10.0),
        ("\t5m\n", 300.0),
        # plain number strings are seconds
        ("90", 90.0),
        ("0", 0.0),
        ("1.25", 1.25),
        (" 7 ", 7.0),
        # numbers
        (0, 0.0),
        (30, 30.0),
        (1.5, 1.5),
        (-0.0, 0.0),
        (10**6, 1e6),
        # timedeltas
        (timedelta(0), 0.0),
        (timedelta(minutes=5), 300.0),
        (timedelta(days=1, microseconds=1), 86400.000001),
        # up to 1000 years
        (MAX_DURATION, MAX_DURATION),
        ("52000w", 52000 * 604800.0),
        (timedelta(days=365_000), 365_000 * 86400.0),
    ],
    ids=repr,
)
def test_accepted(value: object, seconds: float) -> None:
    result = parse_duration(value)
    assert type(result) is float
    assert result == pytest.approx(seconds, rel=1e-12, abs=1e-12)
    assert math.copysign(1, result) == 1  # never -0.0


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        # strings
        ("3x", None),
        ("", "it is empty"),
        ("   ", "it is empty"),
        ("-5s", None),
        ("-5", None),
        ("s", None),
        ("5 5s", None),
        ("5 m s", None),
        ("1h30", None),
        ("10S", None),
        ("5min", None),
        ("1.s", None),
        ("1..5s", None),
        ("1e3", None),
        ("nan", None),
        ("inf", None),
        ("1,5s", None),
        ("ten seconds", None),
        ("9" * 400, "it is not finite"),
        ("9" * 400 + "w", "it is not finite"),
        # numbers
        (-1, "it is negative"),
        (-0.001, "it is negative"),
        (math.nan, "it is not finite"),
        (math.inf, "it is not finite"),
        (-math.inf, "it is negative"),
        (10**400, "it is too large"),
        (1e300, "it is longer than 1000 years, the longest accepted"),
        (10**20, "it is longer than 1000 years, the longest accepted"),
        (MAX_DURATION * 1.0001, "it is longer than 1000 years, the longest accepted"),
        ("100000w", "it is longer than 1000 years, the longest accepted"),
        ("9" * 300, "it is longer than 1000 years, the longest accepted"),
        (timedelta.max, "it is longer than 1000 years, the longest accepted"),
        (True, "a bool is not a duration"),
        (False, "a bool is not a duration"),
        # timedeltas
        (timedelta(seconds=-1), "it is negative"),
        # other types
        (None, "a NoneType is not a duration"),
        (Decimal("1"), "a decimal.Decimal is not a duration"),
        (b"10s", "a bytes is not a duration"),
        ([10], "a list is not a duration"),
    ],
    ids=repr,
)
def test_rejected(value: object, reason: str | None) -> None:
    with pytest.raises(ValueError) as info:
        parse_duration(value, what="sleep")
    message = str(info.value)
    assert message.startswith(f"invalid duration {value!r} for sleep")
    assert message.endswith(f": {FORMS}")
    if reason is not None:
        assert f"({reason})" in message


def test_message_for_the_brief_example() -> None:
    with pytest.raises(ValueError) as info:
        parse_duration("3x", what="sleep")
    assert str(info.value) == f"invalid duration '3x' for sleep: {FORMS}"


def test_default_what_is_not_repeated() -> None:
    with pytest.raises(ValueError) as info:
        parse_duration("3x")
    assert str(info.value) == f"invalid duration '3x': {FORMS}"


def test_what_names_the_caller() -> None:
    with pytest.raises(ValueError, match=r"for retry_after of step 'shop\.charge'"):
        parse_duration(-1, what="retry_after of step 'shop.charge'")


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (0.00085, "850µs"),
        (0.000001, "1µs"),
        (0.0000015, "1.5µs"),
        (0.0009996, "1ms"),
        (0.0015, "1.5ms"),
        (0.012, "12ms"),
        (0.999, "999ms"),
        (0.9996, "1s"),
        (1, "1s"),
        (1.5, "1.5s"),
        (9.94, "9.9s"),
        (12, "12s"),
        (59.4, "59s"),
        (59.7, "1m 00s"),
        (60, "1m 00s"),
        (125, "2m 05s"),
        (3599, "59m 59s"),
        (3599.6, "1h 00m"),
        (3600, "1h 00m"),
        (3 * 3600 + 4 * 60, "3h 04m"),
        (86340, "23h 59m"),
        (86399, "1d 0h"),
        (86400, "1d 0h"),
        (3 * 86400 + 2 * 3600, "3d 2h"),
        (400 * 86400, "400d 0h"),
        (-1.5, "-1.5s"),
        (math.inf, "inf"),
        (math.nan, "nan"),
    ],
    ids=repr,
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


@pytest.mark.parametrize("text", ["500ms", "10s", "5m", "2h", "3d"])
def test_format_reads_back(text: str) -> None:
    seconds = parse_duration(text)
    shown = format_duration(seconds).replace(" 00s", "").replace(" 00m", "").replace(" 0h", "")
    assert parse_duration(shown) == seconds


# ------------------------------------------------------------ bounds on time


def test_a_huge_int_is_quoted_without_failing() -> None:
    # repr() of an int past 4300 digits raises ValueError itself.
    with pytest.raises(ValueError, match=r"invalid duration <an int of \d+ bits> for sleep"):
        parse_duration(10**5000, what="sleep")


def test_the_longest_duration_from_now_fits_a_datetime() -> None:
    latest = datetime.fromtimestamp(time.time() + MAX_DURATION, UTC)
    assert latest.timestamp() < LATEST_WAKEUP
    assert datetime.fromtimestamp(LATEST_WAKEUP, UTC) == datetime(9999, 1, 1, tzinfo=UTC)
    # What displays do with a wake-up time: local time, and a margin added.
    datetime.fromtimestamp(LATEST_WAKEUP).astimezone()
    datetime.fromtimestamp(LATEST_WAKEUP + 86400 * 30, UTC)


def test_sleep_past_any_datetime_is_refused_at_the_call() -> None:
    with pytest.raises(ValueError, match=r"invalid duration 1e\+300 for sleep .*1000 years"):
        wf.sleep(1e300)


@pytest.mark.parametrize(
    "timestamp",
    [0, 1.5, time.time(), -1e10, LATEST_WAKEUP, datetime.max.timestamp() - 2e9],
    ids=["zero", "fraction", "now", "1653", "latest", "near-max"],  # stable across processes
)
def test_check_wakeup_accepts_times_a_datetime_holds(timestamp: float) -> None:
    result = check_wakeup(timestamp, "wf.sleep(until=...)")
    assert type(result) is float and result == timestamp


@pytest.mark.parametrize(
    ("timestamp", "reason"),
    [
        (1e300, "(after the year 9999): worldflow schedules nothing after 9999-01-01 UTC"),
        (10**400, "(after the year 9999)"),
        (datetime.max.replace(tzinfo=UTC).timestamp(), "(after the year 9999)"),
        (LATEST_WAKEUP + 1, "(9999-01-01T00:00:01+00:00)"),
        (math.inf, "(after the year 9999)"),
        (-(10**400), ": it is not finite"),
        (-math.inf, ": it is not finite"),
        (math.nan, ": it is not finite"),
        ("2030-01-01", ": not a number"),
        (True, ": not a number"),
        (None, ": not a number"),
    ],
    ids=repr,
)
def test_check_wakeup_refuses_what_no_datetime_holds(timestamp: Any, reason: str) -> None:
    with pytest.raises(ValueError) as info:
        check_wakeup(timestamp, "wf.sleep(until=...)")
    message = str(info.value)
    assert message.startswith("invalid wake-up time ")
    assert " for wf.sleep(until=...)" in message
    assert reason in message
