"""What reads a log, fed arbitrary data: only worldflow's errors, no imports, no hangs.

A log is written by other processes and other versions, and anyone with write
access to the store can put anything in it. Hypothesis generates JSON-like
trees (with ``$t`` tags, class paths and zone keys, random or pointed at
modules that import on attribute access), and each reader must return or
raise one of its documented errors, import nothing, and finish quickly.

The default run is short (200 examples per test); set
``WORLDFLOW_HOSTILE_EXAMPLES`` for a longer hunt, e.g. 20000.
"""

from __future__ import annotations

import concurrent.futures  # noqa: F401  (its __getattr__ imports .process and multiprocessing)
import dataclasses
import enum
import json
import math
import os
import sys
import types
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID

import pytest

hypothesis = pytest.importorskip("hypothesis")

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from worldflow._codec import (  # noqa: E402
    MAX_DEPTH,
    decode,
    dumps,
    encode,
    loads,
    parse_json,
    to_display,
)
from worldflow._duration import (  # noqa: E402
    LATEST_WAKEUP,
    MAX_DURATION,
    check_wakeup,
    parse_duration,
)
from worldflow._errors import CorruptLogError, SerializationError  # noqa: E402
from worldflow._failures import rebuild_error  # noqa: E402

with suppress(ImportError):  # its __getattr__ imports pydantic.main for BaseModel
    import pydantic  # noqa: F401

EXAMPLES = int(os.environ.get("WORLDFLOW_HOSTILE_EXAMPLES", "200"))

hostile = settings(
    max_examples=EXAMPLES,
    deadline=None,  # a loaded CI machine is not a hang; pytest-timeout catches those
    database=None,  # no .hypothesis/ folder in the working tree
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


# ------------------------------------------------------------ test classes


class Mood(enum.Enum):
    CALM = "calm"
    LOUD = 2


@dataclasses.dataclass
class Parcel:
    weight: int
    label: str = ""


@dataclasses.dataclass
class Picky:
    n: int

    def __post_init__(self) -> None:
        if self.n != 1:
            raise ValueError("n must be 1")


# A module whose __getattr__ would run for any name it does not define: the
# readers must never reach it (a real one imports there, as pydantic does).
LAZY = "wf_hostile_lazy"
lazy_calls: list[str] = []


@pytest.fixture(autouse=True, scope="module")
def lazy_module() -> Iterator[None]:
    module = types.ModuleType(LAZY)
    module.__dict__["__getattr__"] = lambda name: lazy_calls.append(name)
    sys.modules[LAZY] = module
    yield
    del sys.modules[LAZY]


# -------------------------------------------------------------- strategies

TAGS = [
    "int",
    "float",
    "dict",
    "tuple",
    "set",
    "frozenset",
    "datetime",
    "date",
    "time",
    "timedelta",
    "decimal",
    "uuid",
    "bytes",
    "bytearray",
    "enum",
    "dataclass",
    "model",
    "custom",
]

# Class paths: ours, ordinary ones, and names that a module's __getattr__ would
# produce by importing (concurrent.futures, pydantic), or that are not classes.
CLASS_PATHS = [
    f"{__name__}:Mood",
    f"{__name__}:Parcel",
    f"{__name__}:Picky",
    f"{__name__}:Parcel.weight",
    "concurrent.futures:ProcessPoolExecutor",
    "concurrent.futures:ThreadPoolExecutor",
    "pydantic:BaseModel",
    "pydantic:RootModel",
    "json:dumps",
    "collections:OrderedDict",
    "enum:Enum",
    "decimal:Decimal",
    "builtins:int",
    "os:path",
    "sys:modules",
    "wf_no_such_module:Thing",
    f"{LAZY}:Thing",
    f"{LAZY}:Thing.Inner",
    "xml.dom.minidom:Node",
    ":",
    "no_colon",
]

ZONES = ["UTC", "Europe/Paris", "Mars/Olympus", "../etc/passwd", "", "leapseconds", "zone.tab"]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(2**200), max_value=2**200),
    st.floats(),  # NaN and infinities: a store reading with plain json.loads hands them over
    st.text(max_size=20),
)

hex_text = st.one_of(
    st.integers().map(lambda n: format(n, "x")), st.text("0123456789abcdefxX_- ", max_size=12)
)
iso_text = st.one_of(
    st.datetimes().map(datetime.isoformat),
    st.dates().map(date.isoformat),
    st.times().map(lambda t: t.isoformat()),
    st.text(max_size=30),
)


def _payload(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """A ``v`` that is sometimes what the tag expects, sometimes anything at all."""
    return st.one_of(
        children,
        hex_text,
        iso_text,
        st.sampled_from(["nan", "inf", "-inf", "1.5", "AP8=", "@@@", "not-a-uuid"]),
        st.lists(st.integers(min_value=-(2**70), max_value=2**70), min_size=3, max_size=3),
        st.lists(st.lists(children, min_size=2, max_size=2), max_size=3),
        st.dictionaries(st.text(max_size=8), children, max_size=3),
    )


def _class_refs(children: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    """Tags that name a class, pointed at the paths above more often than chance would."""
    return st.fixed_dictionaries(
        {
            "$t": st.sampled_from(["enum", "dataclass", "model"]),
            "c": st.sampled_from(CLASS_PATHS),
            "v": st.one_of(children, st.dictionaries(st.sampled_from(["n", "weight"]), children)),
        }
    )


def _zoned(children: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {
            "$t": st.sampled_from(["datetime", "time"]),
            "v": iso_text,
            "zone": st.one_of(st.sampled_from(ZONES), st.text(max_size=12), children),
        }
    )


def _tagged(children: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    extras = st.fixed_dictionaries(
        {},
        optional={
            "c": st.one_of(st.sampled_from(CLASS_PATHS), children),
            "n": st.one_of(st.text(max_size=10), children),
            "zone": st.one_of(st.sampled_from(ZONES), children),
            "tzname": st.one_of(st.text(max_size=5), children),
            "fold": st.one_of(st.sampled_from([0, 1, 2, -1, True]), children),
            "set": st.one_of(st.lists(st.text(max_size=5), max_size=3), children),
        },
    )
    return st.builds(
        lambda tag, v, more: {"$t": tag, "v": v, **more} if v is not _MISSING else {"$t": tag},
        st.one_of(st.sampled_from(TAGS), st.text(max_size=8), scalars),
        st.one_of(_payload(children), st.just(_MISSING)),
        extras,
    )


_MISSING = object()

trees = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.text(max_size=8), children, max_size=4),
        _tagged(children),
        _class_refs(children),
        _zoned(children),
    ),
    max_leaves=30,
)


@st.composite
def deep_trees(draw: st.DrawFn) -> Any:
    """A chain of containers around the depth bound, mixing lists, dicts and tags."""
    depth = draw(st.integers(min_value=MAX_DEPTH - 3, max_value=3 * MAX_DEPTH))
    # A short pattern of kinds, repeated: drawing each level would make examples slow.
    kinds = draw(
        st.lists(
            st.sampled_from(["list", "dict", "tuple", "enum", "custom", "pairs"]),
            min_size=1,
            max_size=4,
        )
    )
    tree: Any = draw(scalars)
    for level in range(depth):
        kind = kinds[level % len(kinds)]
        if kind == "list":
            tree = [tree]
        elif kind == "dict":
            tree = {"k": tree}
        elif kind == "tuple":
            tree = {"$t": "tuple", "v": [tree]}
        elif kind == "enum":
            tree = {"$t": "enum", "c": "wf_no_such_module:E", "v": tree}
        elif kind == "custom":
            tree = {"$t": "custom", "n": "wf.nobody", "v": tree}
        else:
            tree = {"$t": "dict", "v": [["k", tree]]}
    return tree


any_tree = st.one_of(trees, deep_trees())


# ------------------------------------------------------------------ checks


@contextmanager
def imports_nothing() -> Iterator[None]:
    lazy_calls.clear()  # tools (inspect.getmodule) look up __file__ on every module
    before = set(sys.modules)
    yield
    added = set(sys.modules) - before
    assert not added, f"reading a log imported {sorted(added)}"
    assert not lazy_calls, f"reading a log called a module __getattr__ for {lazy_calls}"


def _read(read: Callable[[Any], Any], tree: Any, allowed: tuple[type[Exception], ...]) -> Any:
    with imports_nothing():
        try:
            return read(tree)
        except allowed:
            return None


@hostile
@given(any_tree)
def test_decode_raises_only_its_errors_and_imports_nothing(tree: Any) -> None:
    _read(decode, tree, (CorruptLogError, SerializationError))
    lenient = _read(lambda t: decode(t, unknown_classes="dict"), tree, (CorruptLogError,) * 2)
    del lenient


@hostile
@given(any_tree)
def test_lenient_decode_never_needs_the_classes(tree: Any) -> None:
    # unknown_classes="dict" turns a missing class into a dict; what is left is
    # corruption, or a class that is here but refuses the value.
    _read(lambda t: decode(t, unknown_classes="dict"), tree, (CorruptLogError, SerializationError))


@hostile
@given(any_tree)
def test_to_display_raises_only_corrupt_log_error_and_shows_plain_json(tree: Any) -> None:
    shown = _read(to_display, tree, (CorruptLogError,))
    json.dumps(shown, allow_nan=False)


@hostile
@given(st.one_of(st.text(max_size=60), st.binary(max_size=60), trees.map(json.dumps)))
def test_loads_and_parse_json_raise_only_their_errors(text: str | bytes) -> None:
    _read(parse_json, text, (CorruptLogError,))
    _read(loads, text, (CorruptLogError, SerializationError))


@hostile
@given(
    st.dictionaries(
        st.sampled_from(["type", "message", "traceback", "args", "attrs", "exceptions"]),
        st.one_of(
            trees,
            st.sampled_from(
                [
                    "KeyError",
                    "UnicodeDecodeError",
                    "OSError",
                    "ExceptionGroup",
                    "StopIteration",
                    "SystemExit",
                    "concurrent.futures.process.BrokenProcessPool",
                    "pydantic.ValidationError",
                    f"{__name__}.Parcel",
                ]
            ),
        ),
    )
)
def test_rebuild_error_always_gives_an_exception(error: dict[str, Any]) -> None:
    with imports_nothing():
        rebuilt = rebuild_error(error)
    assert isinstance(rebuilt, Exception)
    str(rebuilt)


# ------------------------------------------------- what is written reads back

values = st.recursive(
    st.one_of(
        scalars,
        st.binary(max_size=10),
        st.decimals(allow_nan=False),
        st.uuids(),
        st.datetimes(timezones=st.sampled_from([None, UTC])),
        st.dates(),
        st.timedeltas(),
        st.sampled_from(list(Mood)),
        st.builds(Parcel, st.integers(), st.text(max_size=5)),
    ),
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.tuples(children, children),
        st.dictionaries(st.text(max_size=6), children, max_size=4),
        st.dictionaries(st.integers(), children, max_size=3),
        st.frozensets(st.integers(), max_size=4),
    ),
    max_leaves=25,
)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and math.isnan(a):
        return isinstance(b, float) and math.isnan(b)
    if isinstance(a, Decimal) and a.is_nan():
        return isinstance(b, Decimal) and b.is_nan()
    if isinstance(a, list | tuple):
        return type(a) is type(b) and len(a) == len(b) and all(map(_same, a, b))
    if isinstance(a, dict):
        return type(b) is dict and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return type(a) is type(b) and bool(a == b)


@hostile
@given(values)
def test_whatever_encodes_reads_back_and_displays(value: Any) -> None:
    tree = encode(value)
    assert _same(decode(tree), value)
    assert _same(loads(dumps(value)), value)
    json.dumps(to_display(tree), allow_nan=False)


@hostile
@given(st.integers(min_value=1, max_value=3 * MAX_DEPTH), st.sampled_from([1, 2**80, math.nan]))
def test_nesting_is_refused_on_write_exactly_where_reading_would_refuse_it(
    depth: int, leaf: Any
) -> None:
    value: Any = leaf
    for i in range(depth):
        value = [value] if i % 2 else (value,)
    try:
        tree = encode(value)
    except SerializationError:
        assert depth > MAX_DEPTH
        return
    assert depth <= MAX_DEPTH
    decode(tree)
    to_display(tree)


# ----------------------------------------------------------------- durations


@hostile
@given(
    st.one_of(
        st.floats(),
        st.integers(),
        st.integers(min_value=-(10**400), max_value=10**400),
        st.text(max_size=15),
        st.text("0123456789.smhdw ", max_size=15),
        st.timedeltas(),
        st.booleans(),
        st.none(),
    )
)
def test_parse_duration_gives_a_bounded_float_or_a_value_error(value: Any) -> None:
    try:
        seconds = parse_duration(value, what="sleep")
    except ValueError as exc:
        assert "for sleep" in str(exc)
        return
    assert type(seconds) is float and 0.0 <= seconds <= MAX_DURATION
    datetime.fromtimestamp(datetime.now(UTC).timestamp() + seconds, UTC)  # a datetime holds it


@hostile
@given(st.one_of(st.floats(), st.integers(min_value=-(10**400), max_value=10**400), st.text()))
def test_check_wakeup_gives_a_time_a_datetime_holds_or_a_value_error(timestamp: Any) -> None:
    try:
        seconds = check_wakeup(timestamp, "wf.sleep(until=...)")
    except ValueError as exc:
        assert "wf.sleep(until=...)" in str(exc)
        return
    assert math.isfinite(seconds) and seconds <= LATEST_WAKEUP
    if seconds > -62e9:  # the past is fired at once; only times to come are shown
        datetime.fromtimestamp(seconds, UTC) + timedelta(days=1)


def test_the_classes_named_here_are_findable() -> None:
    # The strategies point at these: keep them resolvable, so the fuzz reaches user code.
    assert decode(encode([Mood.CALM, Parcel(1), UUID(int=1)])) == [
        Mood.CALM,
        Parcel(1),
        UUID(int=1),
    ]
