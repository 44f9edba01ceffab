"""wf.register_type: types of the user's own in recorded values."""

from __future__ import annotations

import decimal
import sys
import types

import pytest

import worldflow as wf
from worldflow._codec import decode, encode, to_display


class Money:
    def __init__(self, amount: decimal.Decimal, currency: str) -> None:
        self.amount = amount
        self.currency = currency

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Money) and (other.amount, other.currency) == (
            self.amount,
            self.currency,
        )

    __hash__ = None  # type: ignore[assignment]


class Euros(Money):
    pass


wf.register_type(
    Money,
    name="test.money",
    encode=lambda m: (m.amount, m.currency),
    decode=lambda v: Money(*v),
)


def test_a_registered_type_round_trips_nested() -> None:
    value = {
        "total": Money(decimal.Decimal("9.99"), "EUR"),
        "lines": [Money(decimal.Decimal("1"), "EUR")],
    }
    tree = encode(value)
    assert tree["total"] == {
        "$t": "custom",
        "n": "test.money",
        "v": {"$t": "tuple", "v": [{"$t": "decimal", "v": "9.99"}, "EUR"]},
    }
    assert decode(tree) == value


def test_subclasses_use_the_registered_base() -> None:
    assert decode(encode(Euros(decimal.Decimal("2"), "EUR"))) == Money(decimal.Decimal("2"), "EUR")


def test_unregistered_name_is_a_clear_error_and_displays() -> None:
    tree = {"$t": "custom", "n": "nobody.registered", "v": [1, 2]}
    with pytest.raises(wf.SerializationError, match="no type is registered under that name"):
        decode(tree)
    assert decode(tree, unknown_classes="dict") == {
        "__type__": "nobody.registered",
        "value": [1, 2],
    }
    assert to_display(tree) == {"__type__": "nobody.registered", "value": [1, 2]}


def test_a_failing_encode_names_the_type() -> None:
    class Broken:
        pass

    def explode(value: Broken) -> object:
        raise RuntimeError("boom")

    wf.register_type(Broken, name="test.broken", encode=explode, decode=lambda v: Broken())
    with pytest.raises(
        TypeError, match=r"encode= registered for 'test.broken' failed: RuntimeError\('boom'\)"
    ):
        encode([Broken()], where="argument 1 of step 's'")


def test_bad_registrations() -> None:
    with pytest.raises(TypeError, match="needs a class"):
        wf.register_type(Money(decimal.Decimal(1), "x"), encode=str, decode=str)  # type: ignore[call-overload,arg-type]
    module = types.ModuleType("othermod")
    sys.modules["othermod"] = module
    try:
        exec("class Other: pass", module.__dict__)
        with pytest.raises(ValueError, match="already registered"):
            wf.register_type(module.Other, name="test.money", encode=str, decode=str)
    finally:
        del sys.modules["othermod"]
