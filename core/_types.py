"""Types of your own in recorded values: ``wf.register_type``.

The codec stores JSON-compatible values and the types docs/api.md lists. A
registered type is stored as what its ``encode`` returns (anything the codec
already stores) under its name, and rebuilt with its ``decode``. Every process
that writes or reads such a value registers the type (import the module that
does it, as for dataclasses); a value of a type no one registered here is a
clear error, never a guess.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["Adapter", "by_name", "by_type", "register_type"]

T = TypeVar("T")


@dataclasses.dataclass(frozen=True, slots=True)
class Adapter:
    cls: type
    name: str
    encode: Callable[[Any], Any]
    decode: Callable[[Any], Any]


by_type: dict[type, Adapter] = {}
by_name: dict[str, Adapter] = {}


def register_type(
    cls: type[T],
    *,
    encode: Callable[[T], Any],
    decode: Callable[[Any], T],
    name: str | None = None,
) -> None:
    """Let step arguments, results, workflow inputs and hook payloads hold ``cls``.

    ``encode`` turns a value into one the codec already stores (JSON values,
    tuples, dates, Decimals, dataclasses ...); ``decode`` turns that back.
    ``name`` is what the log records (default ``module.QualName``): give one
    if the class may move or be renamed.

    >>> wf.register_type(Money, encode=lambda m: (str(m.amount), m.currency),
    ...                  decode=lambda v: Money(Decimal(v[0]), v[1]))
    """
    if not isinstance(cls, type):
        raise TypeError(f"register_type() needs a class, got {cls!r}")
    if not (callable(encode) and callable(decode)):
        raise TypeError("register_type() needs callables for encode= and decode=")
    name = name or f"{cls.__module__}.{cls.__qualname__}"
    known = by_name.get(name)
    if known is not None and known.cls is not cls and known.cls.__qualname__ != cls.__qualname__:
        raise ValueError(
            f"the name {name!r} is already registered for {known.cls!r}; pass another name="
        )
    adapter = Adapter(cls, name, encode, decode)
    by_type[cls] = by_name[name] = adapter
