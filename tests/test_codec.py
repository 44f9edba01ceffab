"""The JSON codec: exact round trips, the encoded format, errors and safety."""

from __future__ import annotations

import dataclasses
import enum
import json
import math
import os
import socket
import subprocess
import sys
import textwrap
import threading
import types
import uuid
from collections import OrderedDict
from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta, timezone, tzinfo
from decimal import Decimal
from pathlib import Path
from typing import Any, ClassVar
from zoneinfo import ZoneInfo

import pytest

from worldflow import _codec
from worldflow import _json as wf_json
from worldflow._codec import (
    decode,
    dumps,
    encode,
    loads,
    to_display,
)
from worldflow._errors import CorruptLogError, SerializationError

# ---------------------------------------------------------------- test types


class Color(enum.Enum):
    RED = "red"
    GREEN = (0, 255, 0)


class Priority(enum.IntEnum):
    LOW = 1
    HIGH = 2


class Mode(enum.StrEnum):
    FAST = "fast"


class Perm(enum.Flag):
    R = 4
    W = 2
    X = 1


@dataclasses.dataclass
class Item:
    sku: str
    price: Decimal
    qty: int = 1


@dataclasses.dataclass
class Order:
    id: int
    items: list[Item]
    tags: frozenset[str] = frozenset()
    placed: datetime | None = None
    color: Color = Color.RED


@dataclasses.dataclass(frozen=True, slots=True)
class Point:
    x: float
    y: float


@dataclasses.dataclass(kw_only=True)
class KwOnly:
    a: int
    b: tuple[int, ...] = ()


@dataclasses.dataclass
class WithInitFalse:
    name: str
    counter: int = dataclasses.field(default=0, init=False)
    derived: str = dataclasses.field(init=False)
    never_set: int = dataclasses.field(init=False)
    kind: ClassVar[str] = "class variable, not a field"

    def __post_init__(self) -> None:
        self.derived = self.name.upper()


@dataclasses.dataclass(frozen=True)
class FrozenInitFalse:
    a: int
    b: int = dataclasses.field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "b", self.a * 10)


@dataclasses.dataclass
class NeedsInitVar:
    a: int
    scale: dataclasses.InitVar[int]

    def __post_init__(self, scale: int) -> None:
        self.a *= scale


@dataclasses.dataclass
class Doubler:
    """__post_init__ is not idempotent: decoding must not double twice."""

    n: int

    def __post_init__(self) -> None:
        self.n *= 2


@dataclasses.dataclass(init=False)
class OwnInit:
    a: int
    b: str

    def __init__(self, text: str) -> None:
        self.a, self.b = len(text), text


# --------------------------------------------------------------- comparisons


def assert_same(a: Any, b: Any, where: str = "value") -> None:
    """``a == b`` with the same types all the way down (and nan, -0.0, tzinfo exact)."""
    assert type(a) is type(b), f"{where}: {type(a)} is not {type(b)}"
    if isinstance(a, float):
        if math.isnan(a):
            assert math.isnan(b), where
        else:
            assert a == b and math.copysign(1, a) == math.copysign(1, b), where
    elif isinstance(a, Decimal):
        assert str(a) == str(b), where
    elif isinstance(a, (datetime, time)):
        assert a == b and a.fold == b.fold, where
        assert a.tzinfo == b.tzinfo and type(a.tzinfo) is type(b.tzinfo), where
        if a.tzinfo is not None:
            assert a.tzname() == b.tzname() and a.utcoffset() == b.utcoffset(), where
            if isinstance(a.tzinfo, ZoneInfo):
                assert a.tzinfo is b.tzinfo, where
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same(x, y, f"{where}[{i}]")
    elif isinstance(a, dict):
        assert len(a) == len(b), where
        for (ka, va), (kb, vb) in zip(a.items(), b.items(), strict=True):
            assert_same(ka, kb, f"{where} key {ka!r}")
            assert_same(va, vb, f"{where}[{ka!r}]")
    elif isinstance(a, (set, frozenset)):
        assert a == b, where
        assert sorted(map(repr, a)) == sorted(map(repr, b)), where
    elif dataclasses.is_dataclass(a) and not isinstance(a, type):
        for f in dataclasses.fields(a):
            missing = object()
            assert_same(
                getattr(a, f.name, missing), getattr(b, f.name, missing), f"{where}.{f.name}"
            )
    elif isinstance(a, enum.Enum):
        assert a is b, where
    else:
        assert a == b, where


def roundtrip(value: Any) -> Any:
    tree = encode(value)
    json.dumps(tree, allow_nan=False)  # the tree is plain JSON
    assert_same(decode(tree), value)
    text = dumps(value)
    back = loads(text)
    assert_same(back, value)
    assert_same(loads(text.encode()), value)
    return back


# ------------------------------------------------------------------ round trip

PARIS = ZoneInfo("Europe/Paris")
NEW_YORK = ZoneInfo("America/New_York")

ROUND_TRIP: dict[str, Any] = {
    "none": None,
    "true": True,
    "false": False,
    "zero": 0,
    "negative int": -17,
    "int64 max": 2**63 - 1,
    "int64 min": -(2**63),
    "int64 max + 1": 2**63,
    "int64 min - 1": -(2**63) - 1,
    "huge int": 7**20000,  # past Python's 4300-digit int/str limit
    "huge negative int": -(10**5000),
    "float": 1.5,
    "float zero": 0.0,
    "negative zero": -0.0,
    "float max": 1.7976931348623157e308,
    "float subnormal": 5e-324,
    "float repr": 0.1 + 0.2,
    "nan": math.nan,
    "inf": math.inf,
    "-inf": -math.inf,
    "empty str": "",
    "unicode str": 'héllo ✓ 🎉 "quoted" \\ \n\t\x00',
    "str that looks like a tag": "$t",
    "empty list": [],
    "list": [1, "a", None, True, 2.5],
    "nested list": [[1, [2, [3, []]]], [{"a": [None]}]],
    "empty dict": {},
    "dict": {"a": 1, "b": "two", "c": None, "d": False},
    "nested dict": {"a": {"b": {"c": [1, {"d": 2.0}]}}},
    "dict order kept": {"z": 1, "a": 2, "m": 3},
    "bools stay bools": [True, False, {"x": True}, (False,), {True}],
    "int keys": {1: "a", 2: "b"},
    "mixed keys": {None: 1, True: 2, 3: "three", 4.5: 4, "s": 5},
    "tuple keys": {(1, 2): "x", ("a", (None,)): "y"},
    "frozenset keys": {frozenset({1, 2}): "x"},
    "date keys": {date(2024, 1, 1): 1},
    "enum keys": {Priority.LOW: "low", Mode.FAST: "fast"},
    "dict with $t key": {"$t": "tuple", "v": [1, 2]},
    "nested dict with $t key": {"outer": {"$t": 1}, "list": [{"$t": None}]},
    "empty tuple": (),
    "tuple of one": (1,),
    "nested tuple": (1, (2, (3,)), [4, (5,)]),
    "empty set": set(),
    "set": {1, 2, 3},
    "set of mixed": {1, "a", None, (1, 2), 2.5},
    "frozenset": frozenset({"a", "b"}),
    "empty frozenset": frozenset(),
    "set of frozensets": {frozenset({1}), frozenset({2, 3})},
    "datetime naive": datetime(2024, 5, 1, 12, 30, 45, 123456),
    "datetime min": datetime.min,
    "datetime max": datetime.max,
    "datetime utc": datetime(2024, 5, 1, 12, 0, tzinfo=UTC),
    "datetime +05:30": datetime(2024, 5, 1, 12, 0, tzinfo=timezone(timedelta(hours=5, minutes=30))),
    "datetime named offset": datetime(2024, 5, 1, tzinfo=timezone(-timedelta(hours=3), "BRT")),
    "datetime named utc": datetime(2024, 5, 1, tzinfo=timezone(timedelta(0), "Z")),
    "datetime odd offset": datetime(
        2024, 5, 1, tzinfo=timezone(timedelta(hours=1, seconds=1, microseconds=5))
    ),
    "datetime zoneinfo": datetime(2024, 7, 1, 9, 0, tzinfo=PARIS),
    "datetime zoneinfo fold": datetime(2024, 11, 3, 1, 30, tzinfo=NEW_YORK, fold=1),
    "datetime zoneinfo gap": datetime(2024, 3, 10, 2, 30, tzinfo=NEW_YORK),
    "datetime naive fold": datetime(2024, 1, 1, fold=1),
    "date": date(2024, 2, 29),
    "date min": date.min,
    "time": time(23, 59, 59, 999999),
    "time utc": time(1, 2, tzinfo=UTC),
    "time offset": time(1, 2, tzinfo=timezone(timedelta(hours=-7))),
    "time named offset": time(1, 2, tzinfo=timezone(timedelta(hours=9), "JST")),
    "time zoneinfo": time(8, 0, tzinfo=PARIS),
    "time fold": time(1, 30, fold=1),
    "timedelta": timedelta(days=1, seconds=2, microseconds=3),
    "timedelta negative": timedelta(microseconds=-1),
    "timedelta max": timedelta.max,
    "timedelta min": timedelta.min,
    "decimal": Decimal("1.10"),
    "decimal negative zero": Decimal("-0"),
    "decimal exponent": Decimal("1.20E+5"),
    "decimal tiny": Decimal("1E-400"),
    "decimal long": Decimal("3.14159265358979323846264338327950288419716939937510"),
    "decimal nan": Decimal("NaN"),
    "decimal snan payload": Decimal("-sNaN12"),
    "decimal infinity": Decimal("-Infinity"),
    "uuid": uuid.UUID("12345678-1234-5678-1234-567812345678"),
    "bytes empty": b"",
    "bytes all": bytes(range(256)),
    "bytearray": bytearray(b"\x00abc\xff"),
    "enum": Color.RED,
    "enum tuple value": Color.GREEN,
    "int enum": Priority.HIGH,
    "str enum": Mode.FAST,
    "flag": Perm.R,
    "flag combination": Perm.R | Perm.W,
    "flag empty": Perm(0),
    "enums in containers": [Priority.LOW, (Mode.FAST,), {"c": Color.GREEN}, {Perm.X}],
    "dataclass": Item("sku-1", Decimal("9.99")),
    "nested dataclass": Order(
        7,
        [Item("a", Decimal("1.00"), 2), Item("b", Decimal("0.5"))],
        frozenset({"gift", "rush"}),
        datetime(2024, 1, 1, tzinfo=PARIS),
        Color.GREEN,
    ),
    "frozen slots dataclass": Point(1.0, -0.0),
    "kw_only dataclass": KwOnly(a=1, b=(2, 3)),
    "init=False fields": WithInitFalse("ada"),
    "frozen init=False": FrozenInitFalse(3),
    "required InitVar": NeedsInitVar(2, 5),
    "non-idempotent __post_init__": Doubler(21),
    "hand-written __init__": OwnInit("hello"),
    "everything nested": {
        "orders": [Order(1, [])],
        "at": (datetime(2024, 1, 1), date(2024, 1, 2)),
        "ids": {uuid.UUID(int=1), uuid.UUID(int=2)},
        "blob": {b"k": bytearray(b"v")},
        "money": [Decimal("1"), Decimal("NaN")],
    },
}


@pytest.mark.parametrize("value", list(ROUND_TRIP.values()), ids=list(ROUND_TRIP))
def test_round_trip_is_exact(value: Any) -> None:
    roundtrip(value)


def test_init_false_field_changed_after_init_round_trips() -> None:
    value = WithInitFalse("ada")
    value.counter = 5
    value.derived = "not what __post_init__ would compute"
    value.never_set = 3
    assert roundtrip(value).derived == "not what __post_init__ would compute"


def test_dataclass_rebuilt_without_running_post_init_twice() -> None:
    assert roundtrip(Doubler(21)).n == 42


def test_test_types_are_importable_by_name() -> None:
    # The codec finds classes through sys.modules; so must these tests' own.
    assert sys.modules[Item.__module__] is sys.modules[__name__]


# --------------------------------------------------------------------- format


def test_plain_json_encodes_as_itself() -> None:
    value = {"a": [1, 2.5, "x", None, True], "b": {"c": []}}
    assert encode(value) == value
    assert dumps(value) == json.dumps(value, separators=(",", ":"))
    assert dumps("é") == '"é"'  # ensure_ascii=False


def test_encode_and_decode_share_no_container() -> None:
    # The engine keeps trees in events: mutating a value afterwards (or the
    # value decoded from a tree) must not change what was recorded.
    value: dict[str, Any] = {"a": [1, [2]], "b": {"c": "d"}, "when": date(2024, 1, 1)}
    tree = encode(value)
    value["a"][1].append(3)
    value["b"]["c"] = "changed"
    assert tree == {"a": [1, [2]], "b": {"c": "d"}, "when": {"$t": "date", "v": "2024-01-01"}}
    back = decode(tree)
    back["a"][1].append(4)
    back["b"]["x"] = 1
    assert tree["a"] == [1, [2]]
    assert tree["b"] == {"c": "d"}


@pytest.mark.parametrize(
    ("value", "tree"),
    [
        (math.nan, {"$t": "float", "v": "nan"}),
        (-math.inf, {"$t": "float", "v": "-inf"}),
        (2**64, {"$t": "int", "v": "10000000000000000"}),
        ((1, "a"), {"$t": "tuple", "v": [1, "a"]}),
        ({3, 1, 2}, {"$t": "set", "v": [1, 2, 3]}),
        (frozenset({"b", "a"}), {"$t": "frozenset", "v": ["a", "b"]}),
        ({1: "a"}, {"$t": "dict", "v": [[1, "a"]]}),
        ({"$t": 1}, {"$t": "dict", "v": [["$t", 1]]}),
        (date(2024, 1, 2), {"$t": "date", "v": "2024-01-02"}),
        (
            datetime(2024, 7, 1, 9, tzinfo=PARIS),
            {"$t": "datetime", "v": "2024-07-01T09:00:00+02:00", "zone": "Europe/Paris"},
        ),
        (
            datetime(2024, 7, 1, tzinfo=timezone(timedelta(hours=9), "JST")),
            {"$t": "datetime", "v": "2024-07-01T00:00:00+09:00", "tzname": "JST"},
        ),
        (timedelta(days=-1, seconds=5), {"$t": "timedelta", "v": [-1, 5, 0]}),
        (Decimal("1.50"), {"$t": "decimal", "v": "1.50"}),
        (b"\x00\xff", {"$t": "bytes", "v": "AP8="}),
        (Priority.HIGH, {"$t": "enum", "c": f"{__name__}:Priority", "v": 2}),
        (
            Point(1.0, 2.0),
            {"$t": "dataclass", "c": f"{__name__}:Point", "v": {"x": 1.0, "y": 2.0}},
        ),
    ],
    ids=repr,
)
def test_encoded_format(value: Any, tree: Any) -> None:
    assert encode(value) == tree


def test_dict_with_tag_key_round_trips_even_if_it_looks_encoded() -> None:
    fake = {"$t": "tuple", "v": [1, 2]}
    assert encode(fake) == {"$t": "dict", "v": [["$t", "tuple"], ["v", [1, 2]]]}
    assert_same(loads(dumps(fake)), fake)
    assert_same(loads(dumps([fake, {"x": fake}])), [fake, {"x": fake}])


def test_sets_are_sorted_by_canonical_encoding() -> None:
    value = {(2, "b"), (1, "z"), (1, "a")}
    assert dumps(value) == dumps({(1, "a"), (1, "z"), (2, "b")})
    assert [x["v"] for x in encode(value)["v"]] == [[1, "a"], [1, "z"], [2, "b"]]


_HASHSEED_SCRIPT = """
import sys
from worldflow._codec import dumps
words = {f"word-{i}" for i in range(200)}
pairs = frozenset((f"k{i}", i % 7) for i in range(200))
print(dumps(words))
print(dumps(pairs))
print(dumps({"nested": [{frozenset(f"s{i}" for i in range(30))}]}))
print(list(words)[:10])  # raw iteration order: proves the seeds made a difference
"""


def test_set_encoding_does_not_depend_on_hash_seed() -> None:
    import_root = Path(_codec.__file__).parent.parent  # not resolved: may be a link tree
    outputs = []
    for seed in ("0", "1", "2", "4242"):
        env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(import_root)}
        proc = subprocess.run(
            [sys.executable, "-c", _HASHSEED_SCRIPT],
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        outputs.append(proc.stdout.splitlines())
    assert len({tuple(out[:3]) for out in outputs}) == 1, "set encoding varies with the seed"
    assert len({out[3] for out in outputs}) > 1, "the seeds did not change set order"
    assert outputs[0][0] == dumps({f"word-{i}" for i in range(200)})


# --------------------------------------------------------------- encode errors


class _Opaque:
    pass


class _FixedTz(tzinfo):
    def utcoffset(self, dt: datetime | None) -> timedelta:
        return timedelta(hours=1)

    def dst(self, dt: datetime | None) -> timedelta:
        return timedelta(0)

    def tzname(self, dt: datetime | None) -> str:
        return "FIXED"


@dataclasses.dataclass
class Charge:
    items: list[Any]


@dataclasses.dataclass
class Line:
    price: Any


WHERE = "argument 1 of step 'shop.charge'"


@pytest.mark.parametrize(
    ("value", "type_name", "path"),
    [
        (_Opaque(), f"{__name__}._Opaque", None),
        ({"items": [1, 2, {"price": _Opaque()}]}, "_Opaque", "['items'][2]['price']"),
        (Charge([1, 2, Line(_Opaque())]), "_Opaque", ".items[2].price"),
        ((1, (2, _Opaque())), "_Opaque", "[1][1]"),
        ({"s": {1, _Opaque()}}, "_Opaque", "['s']<set element>"),
        ({1: {"x": _Opaque()}}, "_Opaque", "[1]['x']"),
        ({_Opaque(): 1}, "_Opaque", "<dict key>"),
        ({"$t": [_Opaque()]}, "_Opaque", "['$t'][0]"),
        ([threading.Lock()], "_thread.lock", "[0]"),
        ({"f": lambda: None}, "function", "['f']"),
        ({"g": (n for n in range(3))}, "generator", "['g']"),
        ([OrderedDict(a=1)], "collections.OrderedDict", "[0]"),
        ([object], "type", "[0]"),
        ({"when": datetime(2024, 1, 1, tzinfo=_FixedTz())}, "_FixedTz", "['when'].tzinfo"),
        ([time(1, tzinfo=_FixedTz())], "_FixedTz", "[0].tzinfo"),
    ],
    ids=lambda x: x if isinstance(x, str) else None,
)
def test_unsupported_value_error_names_type_where_and_path(
    value: Any, type_name: str, path: str | None
) -> None:
    with pytest.raises(SerializationError) as info:
        encode(value, WHERE)
    message = str(info.value)
    assert type_name in message
    assert WHERE in message
    if path is None:
        assert " at " not in message.split(WHERE)[1]
    else:
        assert f" at {path};" in message
    assert "supported" in message
    with pytest.raises(SerializationError):
        dumps(value, WHERE)


def test_serialization_error_is_a_type_error_with_qualified_name() -> None:
    with socket.socket() as sock, pytest.raises(TypeError, match=r"socket\.socket"):
        dumps({"conn": sock}, "the result of step 'net.open'")


def test_unsupported_error_lists_supported_types() -> None:
    with pytest.raises(SerializationError, match="supported types are None, bool, int"):
        encode(_Opaque())


def test_default_where_is_value() -> None:
    with pytest.raises(SerializationError, match=r"^cannot serialize value: "):
        encode([_Opaque()])


def test_subclasses_of_builtins_are_not_silently_flattened() -> None:
    class Name(str):
        pass

    with pytest.raises(SerializationError, match="Name"):
        encode(Name("x"))


def test_local_classes_are_refused_at_encode_time() -> None:
    @dataclasses.dataclass
    class Local:
        a: int

    class LocalColor(enum.Enum):
        RED = 1

    for value in (Local(1), LocalColor.RED):
        with pytest.raises(SerializationError, match="defined inside a function"):
            encode({"x": value}, WHERE)


def test_zoneinfo_without_key_is_refused() -> None:
    tzfile = Path("/usr/share/zoneinfo/Europe/Paris")
    if not tzfile.exists():
        pytest.skip("no system tz database file")
    with tzfile.open("rb") as f:
        zone = ZoneInfo.from_file(f)
    with pytest.raises(SerializationError, match=r"zoneinfo\.ZoneInfo.*\.tzinfo"):
        encode(datetime(2024, 1, 1, tzinfo=zone))


def test_reference_cycle_is_a_serialization_error() -> None:
    loop: list[Any] = [1]
    loop.append(loop)
    with pytest.raises(SerializationError, match=f"{WHERE}.*reference cycle"):
        encode(loop, WHERE)


# --------------------------------------------------- class lookup, no imports


@pytest.fixture
def user_module() -> Iterator[types.ModuleType]:
    """A module made on the fly that holds user classes, removed afterwards."""
    name = "wf_test_user_models"
    module = types.ModuleType(name)
    sys.modules[name] = module
    exec(
        textwrap.dedent(
            """
            import dataclasses, enum

            class Status(enum.Enum):
                PAID = "paid"

            @dataclasses.dataclass
            class Invoice:
                number: int
                status: Status
                lines: tuple

            class Outer:
                @dataclasses.dataclass(frozen=True)
                class Inner:
                    a: int
            """
        ),
        module.__dict__,
    )
    yield module
    sys.modules.pop(name, None)


def test_nested_class_is_found_by_qualname(user_module: Any) -> None:
    roundtrip([user_module.Outer.Inner(1)])


def test_unresolvable_class_raises_naming_it(user_module: Any) -> None:
    text = dumps([user_module.Invoice(1, user_module.Status.PAID, (1, 2))])
    del sys.modules["wf_test_user_models"]
    with pytest.raises(SerializationError) as info:
        loads(text)
    message = str(info.value)
    assert "wf_test_user_models.Invoice" in message
    assert "import" in message


def test_unresolvable_enum_raises_naming_it(user_module: Any) -> None:
    text = dumps(user_module.Status.PAID)
    del sys.modules["wf_test_user_models"]
    with pytest.raises(SerializationError, match=r"wf_test_user_models\.Status.*import"):
        loads(text)


def test_unresolvable_classes_as_dicts(user_module: Any) -> None:
    value = {
        "invoice": user_module.Invoice(1, user_module.Status.PAID, (1, 2)),
        "inner": [user_module.Outer.Inner(5)],
    }
    text = dumps(value)
    del sys.modules["wf_test_user_models"]
    assert loads(text, unknown_classes="dict") == {
        "invoice": {
            "__class__": "wf_test_user_models.Invoice",
            "number": 1,
            "status": {"__class__": "wf_test_user_models.Status", "value": "paid"},
            "lines": (1, 2),
        },
        "inner": [{"__class__": "wf_test_user_models.Outer.Inner", "a": 5}],
    }


def test_class_found_again_once_its_module_is_back(user_module: Any) -> None:
    text = dumps(user_module.Invoice(1, user_module.Status.PAID, ()))
    del sys.modules["wf_test_user_models"]
    with pytest.raises(SerializationError):
        loads(text)
    sys.modules["wf_test_user_models"] = user_module
    assert loads(text) == user_module.Invoice(1, user_module.Status.PAID, ())


def test_class_missing_from_its_module(user_module: Any) -> None:
    text = dumps(user_module.Invoice(1, user_module.Status.PAID, ()))
    del user_module.Invoice
    with pytest.raises(SerializationError, match="has no attribute 'Invoice'"):
        loads(text)
    assert loads(text, unknown_classes="dict")["__class__"] == "wf_test_user_models.Invoice"


def test_dataclass_that_lost_a_field(user_module: Any) -> None:
    text = dumps(user_module.Invoice(1, user_module.Status.PAID, ()))
    exec(
        "@dataclasses.dataclass\nclass Invoice:\n    number: int\n    status: Status\n",
        user_module.__dict__,
    )
    with pytest.raises(SerializationError, match="no field lines"):
        loads(text)
    assert loads(text, unknown_classes="dict")["lines"] == ()


def test_enum_that_lost_a_member(user_module: Any) -> None:
    text = dumps(user_module.Status.PAID)
    exec("class Status(enum.Enum):\n    OPEN = 'open'\n", user_module.__dict__)
    with pytest.raises(SerializationError, match="no member with value 'paid'"):
        loads(text)
    assert loads(text, unknown_classes="dict") == {
        "__class__": "wf_test_user_models.Status",
        "value": "paid",
    }


@pytest.mark.parametrize("tag", ["enum", "dataclass", "model"])
@pytest.mark.parametrize("mode", ["error", "dict"])
def test_decode_never_imports(monkeypatch: pytest.MonkeyPatch, tag: str, mode: Any) -> None:
    for name in ("xml.dom.minidom", "wf_no_such_module"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    for path in ("xml.dom.minidom:Node", "wf_no_such_module:Thing"):
        tree: dict[str, Any] = {"$t": tag, "c": path, "v": 1 if tag == "enum" else {}}
        if mode == "error":
            with pytest.raises(SerializationError, match="not imported"):
                decode(tree)
        else:
            assert decode(tree, unknown_classes="dict")["__class__"] == path.replace(":", ".")
    assert "xml.dom.minidom" not in sys.modules
    assert "wf_no_such_module" not in sys.modules


def test_class_path_must_name_a_class_of_the_right_kind() -> None:
    with pytest.raises(SerializationError, match="is not a class"):
        decode({"$t": "dataclass", "c": "json:dumps", "v": {}})
    with pytest.raises(SerializationError, match="is not an Enum"):
        decode({"$t": "enum", "c": f"{__name__}:Item", "v": 1})
    with pytest.raises(SerializationError, match="is not a dataclass"):
        decode({"$t": "dataclass", "c": f"{__name__}:Color", "v": {}})
    with pytest.raises(SerializationError, match="is not a pydantic model"):
        decode({"$t": "model", "c": f"{__name__}:Item", "v": {}})


def test_unknown_classes_option_is_checked() -> None:
    with pytest.raises(ValueError, match="unknown_classes"):
        decode(1, unknown_classes="ignore")  # type: ignore[arg-type]


# -------------------------------------------------------------- corrupt trees


@pytest.mark.parametrize(
    ("tree", "fragment"),
    [
        ({"$t": "nope", "v": 1}, "unknown type tag 'nope'"),
        ({"$t": 3, "v": 1}, "unknown type tag 3"),
        ({"$t": "tuple"}, "has no 'v'"),
        ({"$t": "tuple", "v": {}}, "'v' to be a list"),
        ({"$t": "set", "v": [[1]]}, "unhashable"),
        ({"$t": "dict", "v": [[1]]}, "[key, value] pair"),
        ({"$t": "dict", "v": [[[1], 2]]}, "unhashable"),
        ({"$t": "int", "v": "xyz"}, "bad 'int'"),
        ({"$t": "float", "v": "1.0"}, "'nan', 'inf' or '-inf'"),
        ({"$t": "datetime", "v": "yesterday"}, "bad 'datetime'"),
        ({"$t": "datetime", "v": "2024-01-01", "zone": "Mars/Olympus"}, "Mars/Olympus"),
        ({"$t": "datetime", "v": "2024-01-01", "zone": 5}, "time zone key"),
        ({"$t": "datetime", "v": "2024-01-01", "tzname": "X"}, "bad 'tzname'"),
        ({"$t": "datetime", "v": "2024-01-01", "fold": 2}, "'fold' must be 0 or 1"),
        ({"$t": "date", "v": 20240101}, "'v' to be a str"),
        ({"$t": "time", "v": "25:00"}, "bad 'time'"),
        ({"$t": "timedelta", "v": [1, 2]}, "[days, seconds, microseconds]"),
        ({"$t": "decimal", "v": "one"}, "bad 'decimal'"),
        ({"$t": "uuid", "v": "not-a-uuid"}, "bad 'uuid'"),
        ({"$t": "bytes", "v": "@@@"}, "bad 'bytes'"),
        ({"$t": "enum", "c": "no_colon", "v": 1}, "'module:qualname'"),
        ({"$t": "dataclass", "c": 1, "v": {}}, "'c' to be a str"),
        ({"$t": "dataclass", "c": "m:C", "v": []}, "'v' to be a dict"),
        ((1, 2), "unexpected tuple"),
        ({"a": {1, 2}}, "unexpected set"),
        ({1: "a"}, "dict key 1 is not a str"),
    ],
    ids=repr,
)
def test_malformed_tree_is_corrupt(tree: Any, fragment: str) -> None:
    with pytest.raises(CorruptLogError) as info:
        decode(tree)
    assert fragment in str(info.value)


def test_corrupt_error_says_where_in_the_tree() -> None:
    tree = {"a": [1, {"$t": "tuple", "v": [0, {"$t": "bogus", "v": 1}]}]}
    with pytest.raises(CorruptLogError, match=r"at \['a'\]\[1\]\[1\]: unknown type tag 'bogus'"):
        decode(tree)


@pytest.mark.parametrize(
    "text",
    ["", "{", "[1,]", "{'a': 1}", "NaN", "[Infinity]", "-Infinity", "1 2", b"\xff\xfe", "nul"],
    ids=repr,
)
def test_invalid_json_is_corrupt(text: str | bytes) -> None:
    with pytest.raises(CorruptLogError, match="JSON"):
        loads(text)


def test_absurdly_deep_json_is_corrupt_not_a_crash() -> None:
    with pytest.raises(CorruptLogError):
        loads("[" * 100_000 + "]" * 100_000)


# -------------------------------------------------------------------- display


def test_to_display_is_plain_json_without_classes(user_module: Any) -> None:
    value = {
        "at": datetime(2024, 7, 1, 9, tzinfo=PARIS),
        "day": date(2024, 7, 1),
        "clock": time(9, 30),
        "wait": timedelta(days=1, hours=2, seconds=3),
        "blob": b"\x00\xff",
        "buf": bytearray(b"ab"),
        "money": Decimal("1.50"),
        "id": uuid.UUID(int=1),
        "pair": (1, 2),
        "tags": {"b", "a"},
        "frozen": frozenset({3}),
        "by_id": {1: "a", (1, 2): "b"},
        "escaped": {"$t": "x"},
        "nan": math.nan,
        "big": 2**70,
        "invoice": user_module.Invoice(1, user_module.Status.PAID, (Priority.LOW,)),
    }
    tree = encode(value)
    del sys.modules["wf_test_user_models"]
    shown = to_display(tree)
    json.dumps(shown, allow_nan=False)
    assert shown == {
        "at": "2024-07-01T09:00:00+02:00",
        "day": "2024-07-01",
        "clock": "09:30:00",
        "wait": "1 day, 2:00:03",
        "blob": "AP8=",
        "buf": "YWI=",
        "money": "1.50",
        "id": "00000000-0000-0000-0000-000000000001",
        "pair": [1, 2],
        "tags": ["a", "b"],
        "frozen": [3],
        "by_id": {"1": "a", "[1,2]": "b"},
        "escaped": {"$t": "x"},
        "nan": "nan",
        "big": 2**70,
        "invoice": {
            "__class__": "wf_test_user_models.Invoice",
            "number": 1,
            "status": {"__class__": "wf_test_user_models.Status", "value": "paid"},
            "lines": [{"__class__": f"{__name__}.Priority", "value": 1}],
        },
    }


def test_to_display_of_plain_json_is_itself() -> None:
    assert to_display({"a": [1, "x", None]}) == {"a": [1, "x", None]}


@pytest.mark.parametrize(
    "tree", [{"$t": "nope", "v": 1}, {"$t": "tuple", "v": 1}, (1,), {"$t": "dict", "v": [1]}]
)
def test_to_display_of_malformed_tree_is_corrupt(tree: Any) -> None:
    with pytest.raises(CorruptLogError):
        to_display(tree)


# ------------------------------------------------------------------- pydantic


def test_codec_does_not_import_pydantic() -> None:
    import_root = Path(_codec.__file__).parent.parent
    script = (
        "import sys\n"
        "from worldflow._codec import dumps, loads\n"
        "assert loads(dumps({'a': (1, {2})})) == {'a': (1, {2})}\n"
        "assert 'pydantic' not in sys.modules, 'pydantic was imported'\n"
    )
    subprocess.run(
        [sys.executable, "-c", script],
        env={**os.environ, "PYTHONPATH": str(import_root)},
        check=True,
        timeout=30,
    )


@pytest.fixture
def models() -> Iterator[types.ModuleType]:
    """Pydantic models in a module made on the fly (pydantic itself is optional)."""
    pytest.importorskip("pydantic")
    name = "wf_test_pydantic_models"
    module = types.ModuleType(name)
    sys.modules[name] = module
    exec(
        textwrap.dedent(
            f"""
            from datetime import datetime
            from decimal import Decimal
            import pydantic
            from {__name__} import Color, Item

            class Address(pydantic.BaseModel):
                city: str
                zip: str | None = None

            class Customer(pydantic.BaseModel):
                name: str
                address: Address
                since: datetime
                tags: frozenset[str] = frozenset()
                coords: tuple[float, float] = (0.0, 0.0)
                balance: Decimal = Decimal("0")
                color: Color = Color.RED
                item: Item | None = None

            class Frozen(pydantic.BaseModel):
                model_config = pydantic.ConfigDict(frozen=True)
                a: int

            class Aliased(pydantic.BaseModel):
                user_name: str = pydantic.Field(alias="userName")

            class Loose(pydantic.BaseModel):
                model_config = pydantic.ConfigDict(extra="allow")
                a: int

            class Shouting(pydantic.BaseModel):
                word: str

                @pydantic.field_validator("word")
                @classmethod
                def exclaim(cls, v: str) -> str:
                    return v + "!"

            class Ids(pydantic.RootModel[list[int]]):
                pass
            """
        ),
        module.__dict__,
    )
    yield module
    sys.modules.pop(name, None)


def test_pydantic_models_round_trip(models: Any) -> None:
    customer = models.Customer(
        name="Ada",
        address=models.Address(city="Paris"),
        since=datetime(2024, 1, 1, tzinfo=PARIS),
        tags=frozenset({"vip"}),
        coords=(1.5, -0.0),
        balance=Decimal("10.50"),
        color=Color.GREEN,
        item=Item("x", Decimal("1")),
    )
    back = roundtrip(customer)
    assert back == customer
    assert type(back.address) is models.Address
    assert_same(back.since, customer.since)
    assert_same(back.coords, customer.coords)
    assert_same(back.item, customer.item)
    assert back.model_dump(exclude_unset=True) == customer.model_dump(exclude_unset=True)
    assert encode(customer)["c"] == "wf_test_pydantic_models:Customer"


@pytest.mark.parametrize(
    "make",
    [
        lambda m: m.Frozen(a=1),
        lambda m: m.Aliased(userName="ada"),
        lambda m: m.Loose(a=1, extra_field=(1, 2)),
        lambda m: m.Shouting(word="hi"),
        lambda m: m.Ids([1, 2, 3]),
        lambda m: [m.Address(city="x"), {"k": m.Address(city="y", zip="1")}],
    ],
    ids=["frozen", "alias", "extra allowed", "validator not rerun", "root model", "in containers"],
)
def test_pydantic_model_variants_round_trip(models: Any, make: Any) -> None:
    value = make(models)
    back = loads(dumps(value))
    assert back == value
    if isinstance(value, models.Loose):
        assert back.model_extra == {"extra_field": (1, 2)}
    if isinstance(value, models.Shouting):
        assert back.word == "hi!"


def test_pydantic_fields_set_is_kept(models: Any) -> None:
    address = models.Address(city="Paris")
    back = loads(dumps(address))
    assert back.model_fields_set == {"city"}
    assert back.model_dump(exclude_unset=True) == {"city": "Paris"}


def test_pydantic_unsupported_field_names_the_field(models: Any) -> None:
    value = models.Loose(a=1, conn=_Opaque())
    with pytest.raises(SerializationError, match=r"_Opaque at \.conn"):
        encode(value, "the input")


def test_unresolvable_pydantic_model(models: Any) -> None:
    text = dumps([models.Address(city="Paris")])
    del sys.modules["wf_test_pydantic_models"]
    with pytest.raises(SerializationError, match=r"wf_test_pydantic_models\.Address"):
        loads(text)
    assert loads(text, unknown_classes="dict") == [
        {"__class__": "wf_test_pydantic_models.Address", "city": "Paris", "zip": None}
    ]


# ------------------------------------------------------------- hostile logs


def _run_isolated(script: str) -> None:
    """Run ``script`` in a fresh interpreter, where no other test imported anything."""
    subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        env={**os.environ, "PYTHONPATH": str(Path(_codec.__file__).parent.parent)},
        check=True,
        timeout=30,
    )


def test_decoding_hostile_trees_imports_nothing() -> None:
    # concurrent.futures and pydantic import submodules from their module
    # __getattr__; zoneinfo imports importlib.resources for a zone it lacks.
    _run_isolated(
        """
        import sys, concurrent.futures, pydantic
        from worldflow._codec import decode, to_display
        from worldflow._errors import CorruptLogError, SerializationError

        trees = [
            {"$t": tag, "c": path, "v": 1 if tag == "enum" else {}}
            for tag in ("enum", "dataclass", "model")
            for path in (
                "concurrent.futures:ProcessPoolExecutor",
                "concurrent.futures:ProcessPoolExecutor.Inner",
                "pydantic:BaseModel",
                "pydantic:RootModel",
            )
        ] + [
            {"$t": "datetime", "v": "2024-01-01T00:00:00", "zone": zone}
            for zone in ("Mars/Olympus", "Europe/Atlantis", "UTC2")
        ]
        before = set(sys.modules)
        for tree in trees:
            for call in (decode, lambda t: decode(t, unknown_classes="dict"), to_display):
                try:
                    call(tree)
                except (CorruptLogError, SerializationError):
                    pass
        added = sorted(set(sys.modules) - before)
        assert not added, f"decoding imported {added}"
        """
    )


def test_decode_reads_module_namespaces_without_attribute_hooks() -> None:
    touched: list[str] = []

    class Watched(types.ModuleType):
        def __getattribute__(self, name: str) -> Any:
            touched.append(name)
            return super().__getattribute__(name)

    module = Watched("wf_test_lazy_module")
    sys.modules[module.__name__] = module
    exec(
        "import dataclasses\n"
        "@dataclasses.dataclass\nclass Here:\n    a: int\n"
        "def __getattr__(name):\n    raise AssertionError(f'__getattr__({name!r}) was called')\n",
        module.__dict__,
    )
    touched.clear()
    try:
        assert decode({"$t": "dataclass", "c": "wf_test_lazy_module:Here", "v": {"a": 1}}).a == 1
        missing = {"$t": "dataclass", "c": "wf_test_lazy_module:Lazy.Inner", "v": {}}
        with pytest.raises(
            SerializationError,
            match=r"has no attribute 'Lazy\.Inner' .*does not call its __getattr__",
        ):
            decode(missing)
        assert decode(missing, unknown_classes="dict") == {
            "__class__": "wf_test_lazy_module.Lazy.Inner"
        }
    finally:
        del sys.modules["wf_test_lazy_module"]
    assert touched == []


def test_a_sys_modules_entry_that_is_not_a_module_is_not_searched(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class Trap:
        def __getattr__(self, name: str) -> Any:
            raise AssertionError(f"{name} was read")

    monkeypatch.setitem(sys.modules, "wf_test_not_a_module", Trap())
    with pytest.raises(SerializationError, match="is not a module"):
        decode({"$t": "enum", "c": "wf_test_not_a_module:E", "v": 1})


@pytest.mark.parametrize(
    "key",
    ["Mars/Olympus", "../zoneinfo/UTC", "/usr/share/zoneinfo/UTC", "Europe/./Paris", "a" * 300],
)
def test_unavailable_or_invalid_zone_is_corrupt(key: str) -> None:
    tree = {"$t": "datetime", "v": "2024-01-01T00:00:00", "zone": key}
    with pytest.raises(CorruptLogError, match="time zone"):
        decode(tree)


def test_zone_from_the_system_database_is_read() -> None:
    if not any(os.path.isfile(os.path.join(base, "Asia/Tokyo")) for base in _zoneinfo_path()):
        pytest.skip("no system tz database")
    tree = {"$t": "datetime", "v": "2024-01-01T09:00:00", "zone": "Asia/Tokyo"}
    assert decode(tree) == datetime(2024, 1, 1, tzinfo=UTC)


def _zoneinfo_path() -> tuple[str, ...]:
    import zoneinfo

    return tuple(zoneinfo.TZPATH)


@pytest.mark.parametrize(
    "tree",
    [
        {"$t": "int", "v": "zz"},
        {"$t": "int", "v": "0x1f"},
        {"$t": "int", "v": " 1f"},
        {"$t": "int", "v": "1_f"},
        {"$t": "timedelta", "v": [10**30, 0, 0]},
        {"$t": "timedelta", "v": [0, 0, 10**30]},
        {"$t": "dict", "v": [[{"$t": "int", "v": "q"}, 1]]},
        {"$t": "enum", "c": "m:E", "v": {"$t": "timedelta", "v": [2**64, 0, 0]}},
        {"$t": "custom", "n": "x", "v": {"$t": "int", "v": ""}},
        {"$t": "dataclass", "c": "m:C", "v": {"f": {"$t": "nope", "v": 0}}},
        {"$t": "tuple", "v": [1, {2: 3}]},
        {"$t": "tuple", "v": [1, {"$t": "int"}]},
    ],
    ids=repr,
)
def test_display_and_decode_raise_only_corrupt_log_error(tree: Any) -> None:
    with pytest.raises(CorruptLogError):
        to_display(tree)
    for mode in ("error", "dict"):
        with pytest.raises(CorruptLogError):
            decode(tree, unknown_classes=mode)  # type: ignore[arg-type]


def _nested_lists(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth - 1):
        value = [value]
    return value


@pytest.mark.parametrize("depth", [_codec.MAX_DEPTH + 2, 1000, 100_000])
def test_deep_nesting_is_refused_with_a_clear_error(depth: int) -> None:
    tree = _nested_lists(depth)
    for read in (decode, to_display):
        with pytest.raises(CorruptLogError, match=f"nested more than {_codec.MAX_DEPTH} levels"):
            read(tree)
    with pytest.raises(SerializationError, match=f"at most {_codec.MAX_DEPTH} deep"):
        encode(tree)


def _nested_tuples(depth: int, leaf: Any) -> Any:
    value = leaf
    for _ in range(depth):
        value = (value,)
    return value


@pytest.mark.parametrize("leaf", [1, 2**100, math.inf, Decimal("1.5"), datetime(2024, 1, 1)])
def test_deepest_encodable_value_reads_back_even_from_a_deep_stack(leaf: Any) -> None:
    value = _nested_tuples(_codec.MAX_DEPTH if type(leaf) in (int, float) else 99, leaf)
    tree = encode(value)
    with pytest.raises(SerializationError):
        encode((value,))

    def at_depth(n: int) -> Any:
        # The caller's stack may already be deep (the engine, pytest, a web app).
        return at_depth(n - 1) if n else (decode(tree), to_display(tree))

    decoded, shown = at_depth(300)
    assert decoded == value
    assert json.dumps(shown)


@pytest.mark.parametrize(
    "text", ["1e400", "[-1e400]", '{"a": {"b": 1e999}}', "[1" + "0" * 400 + ".0]"], ids=repr
)
def test_json_numbers_that_overflow_a_float_are_corrupt(text: str) -> None:
    with pytest.raises(CorruptLogError, match="does not fit a float"):
        loads(text)
    with pytest.raises(CorruptLogError, match="does not fit a float"):
        _codec.parse_json(text)


def test_parse_json_reads_stored_json_as_is() -> None:
    text = '{"at": 1715000000.25, "data": {"$t": "tuple", "v": [1]}, "n": null}'
    assert _codec.parse_json(text) == json.loads(text)
    assert _codec.parse_json(text.encode()) == json.loads(text)
    for bad in ("NaN", "[Infinity]", "{", b"\xff"):
        with pytest.raises(CorruptLogError, match="JSON"):
            _codec.parse_json(bad)


@pytest.mark.parametrize("tree", [math.inf, [-math.inf], {"a": math.nan}, [{"b": [math.nan]}]])
def test_untagged_non_finite_float_in_a_tree_is_corrupt(tree: Any) -> None:
    # What a store that parsed with plain json.loads hands over for 1e400 or NaN.
    with pytest.raises(CorruptLogError, match="untagged"):
        decode(tree)
    json.dumps(to_display(tree), allow_nan=False)  # shown as text, for people


def test_corrupt_error_messages_are_abridged() -> None:
    for tree in (
        {"$t": "int", "v": "z" * 1_000_000},
        {"$t": "tuple", "v": {"k" * 1_000_000: 1}},
        {"$t": "date", "v": list(range(100_000))},
        {"$t": "float", "v": "1" * 100_000},
    ):
        for read in (decode, to_display):
            with pytest.raises(CorruptLogError) as info:
                read(tree)
            assert len(str(info.value)) < 500


@pytest.mark.parametrize(
    "value", ["\ud800", ["ok", "x\udc80"], {"k": "\udfff"}, {"\ud800": 1}, ("a", {"b": ["\ud801"]})]
)
def test_text_with_a_lone_surrogate_is_refused_where_it_is_written(value: object) -> None:
    # UTF-8 cannot hold it: a store would fail on it at commit, long after the step.
    with pytest.raises(SerializationError, match="lone surrogate"):
        encode(value, "a step's output")
    assert encode(["é", {"ü": "日本"}], "fine") == ["é", {"ü": "日本"}]


# -- the JSON text every World stores (worldflow._json) -------------------------------


@pytest.mark.parametrize(
    "value",
    [
        {"cid": 1, "attempt": 2, "output": "x" * 10_000},
        {"input": [["x\x7f" * 5_000 + '"'], {"k": "y" * 600 + "\\"}], "out": "z" * 511},
        ["a" * 4_000 + "\n", "a" * 4_000 + "\x1f", "é" * 4_000, "\u2028" * 600],
        {"x" * 1_000: "a key long enough to take the quick path"},
        {"a": [1, -2.5e-300, None, True, False, 'é\n"\\\x7f\u2028\x00', {}], "b": []},
        [{"nested": [[{"k": 10**30}]]}],
        "a bare string \u2028 é",
        12.5,
        None,
    ],
)
def test_stored_json_is_what_json_encoder_writes(value: object) -> None:
    reference = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    assert wf_json.dumps(value) == reference.encode(value)
    assert wf_json.loads(wf_json.dumps(value), "test") == value


@pytest.mark.parametrize("value", [float("nan"), {"x": float("inf")}, [float("-inf")]])
def test_stored_json_refuses_nan_and_infinities(value: object) -> None:
    with pytest.raises(ValueError, match="not JSON compliant"):
        wf_json.dumps(value)


@pytest.mark.parametrize(
    "text",
    [
        "x" * 10_000,
        "x" * 5_000 + '"',
        "\\" + "y" * 600,
        "a" * 4_000 + "\n",
        "a" * 4_000 + "\x00",
        "a" * 4_000 + "\x1f",
        "\x7f" * 600,
        "é" * 600,
        "z" * 511,
        "short",
    ],
)
def test_the_stored_json_escaper_writes_what_json_does(text: str) -> None:
    assert wf_json._escaper[text] == json.encoder.encode_basestring(text)
    # and the encoder of stored JSON is the quick one (its probe agreed), using it
    assert wf_json.dumps is not wf_json._encoder.encode


def test_stored_json_remembers_a_bounded_number_of_strings() -> None:
    for i in range(wf_json.MEMO + 100):
        wf_json.dumps({f"key {i}": "v"})
    assert len(wf_json._escaper) <= wf_json.MEMO
    wf_json.dumps({"x" * 41: 1})
    assert "x" * 41 not in wf_json._escaper  # longer ones are escaped, not kept


def test_stored_json_refuses_what_json_cannot_hold() -> None:
    with pytest.raises(TypeError, match="not JSON serializable"):
        wf_json.dumps({"x": object()})
