"""Errors recorded in the log and rebuilt from it: every builtin, user classes, old and bad logs."""

from __future__ import annotations

import asyncio
import builtins
import errno
import json
import sys
import types
from collections.abc import Iterator
from typing import Any

import pytest

import worldflow as wf
from worldflow._failures import describe_error, rebuild_error

# ------------------------------------------------------------------- helpers


def _raised(exc: BaseException) -> BaseException:
    """``exc`` with a traceback, as a step's failure has one."""
    try:
        raise exc
    except BaseException as caught:
        return caught


def _stored(exc: BaseException) -> dict[str, Any]:
    """What the log holds for ``exc``: its record, through strict JSON."""
    record = describe_error(_raised(exc))
    return json.loads(json.dumps(record, allow_nan=False))  # type: ignore[no-any-return]


def _round_trip(exc: BaseException) -> BaseException:
    return rebuild_error(_stored(exc), context="step 'shop.charge'")


def _shape(value: Any) -> Any:
    """Args compared by value, with exceptions (a group's members) as (type, str)."""
    if isinstance(value, BaseException):
        return (type(value), str(value))
    if isinstance(value, list | tuple):
        return [_shape(v) for v in value]
    return value


def _fields(exc: BaseException) -> dict[str, Any]:
    """The public C-level attributes of a builtin exception (errno, filename, name, ...)."""
    out = {}
    for base in type(exc).__mro__:
        if base.__module__ != "builtins":
            continue
        for name, d in vars(base).items():
            if name.startswith("_") or not isinstance(
                d, types.MemberDescriptorType | types.GetSetDescriptorType
            ):
                continue
            try:
                out[name] = _shape(getattr(exc, name))
            except AttributeError:
                continue
    return out


# ---------------------------------------------------------- every builtin


def _builtin_exceptions() -> list[type[BaseException]]:
    found = {
        v for v in vars(builtins).values() if isinstance(v, type) and issubclass(v, BaseException)
    }
    return sorted(found, key=lambda c: c.__name__)


def _sample(cls: type[BaseException]) -> BaseException:
    """An instance built the way Python or a library raises it, with everything set."""
    if issubclass(cls, UnicodeDecodeError):
        return cls("utf-8", b"\xff", 0, 1, "invalid start byte")
    if issubclass(cls, UnicodeEncodeError):
        return cls("ascii", "é", 0, 1, "ordinal not in range(128)")
    if issubclass(cls, UnicodeTranslateError):
        return cls("é", 0, 1, "no mapping")
    if issubclass(cls, BaseExceptionGroup):
        members: list[Any] = [ValueError("a"), KeyError("k"), ExceptionGroup("inner", [OSError()])]
        return cls(
            "several", [*members, KeyboardInterrupt()] if cls is BaseExceptionGroup else members
        )
    if issubclass(cls, BlockingIOError):
        return cls(errno.EAGAIN, "Resource temporarily unavailable", 512)
    if issubclass(cls, OSError):  # EIO: an errno that OSError() does not map to a subclass
        return cls(errno.EIO, "Input/output error", "in.txt", None, "out.txt")
    if issubclass(cls, SyntaxError):
        return cls("invalid syntax", ("job.py", 3, 5, "x = = 1\n", 3, 6))
    if issubclass(cls, ImportError):
        return cls("No module named 'shop'", name="shop", path="/srv/shop.py")
    if issubclass(cls, NameError):
        return cls("name 'total' is not defined", name="total")
    if issubclass(cls, AttributeError):
        return cls("'NoneType' object has no attribute 'id'", name="id", obj=None)
    return cls("user-7", 42)


# Not rebuilt as themselves (see core/_failures.py): raised into workflow code
# these would act as if the worker were exiting, or an asyncio future refuses them.
AS_STEP_FAILED = {
    BaseException,
    BaseExceptionGroup,
    GeneratorExit,
    KeyboardInterrupt,
    SystemExit,
    StopIteration,
}


@pytest.mark.parametrize("cls", _builtin_exceptions(), ids=lambda c: c.__name__)
def test_every_builtin_exception_comes_back_as_itself(cls: type[BaseException]) -> None:
    original = _sample(cls)
    rebuilt = _round_trip(original)
    if type(original) in AS_STEP_FAILED:
        assert type(rebuilt) is wf.StepFailed
        assert (rebuilt.error_type, rebuilt.message) == (cls.__name__, str(original))
        return
    assert type(rebuilt) is type(original)
    assert str(rebuilt) == str(original)
    assert _shape(rebuilt.args) == _shape(original.args)
    assert _fields(rebuilt) == _fields(original)
    # The engine hands it to the workflow through a future of its loop.
    loop = asyncio.new_event_loop()
    try:
        loop.create_future().set_exception(rebuilt)
    finally:
        loop.close()


def _fail(code: str) -> BaseException:
    try:
        exec(code, {})
    except BaseException as exc:
        return exc
    raise AssertionError(f"{code!r} did not raise")


@pytest.mark.parametrize(
    "code",
    [
        "b'\\xff'.decode()",
        "'é'.encode('ascii')",
        "{}['user-7']",
        "[][3]",
        "open('/nonexistent/worldflow/file')",
        "import wf_no_such_module",
        "compile('x = = 1', 'job.py', 'exec')",
        "int('3x')",
        "1 / 0",
        "None.id",
        "undefined_name",
        "raise ExceptionGroup('batch', [ValueError(1), TypeError('t')])",
    ],
)
def test_errors_python_raises_come_back_as_they_were(code: str) -> None:
    original = _fail(code)
    rebuilt = _round_trip(original)
    assert type(rebuilt) is type(original)
    assert str(rebuilt) == str(original)
    assert _shape(rebuilt.args) == _shape(original.args)
    assert _fields(rebuilt) == _fields(original)


def test_a_step_failing_to_decode_bytes_can_be_caught_as_a_value_error() -> None:
    rebuilt = _round_trip(_fail("b'\\xff'.decode()"))
    with pytest.raises(ValueError) as info:
        raise rebuilt
    assert isinstance(info.value, UnicodeDecodeError)
    assert info.value.object == b"\xff" and info.value.reason == "invalid start byte"


def test_key_error_keeps_its_key() -> None:
    rebuilt = _round_trip(KeyError("user-7"))
    assert rebuilt.args == ("user-7",)
    assert str(rebuilt) == "'user-7'"


def test_file_not_found_keeps_errno_and_filename() -> None:
    rebuilt = _round_trip(_fail("open('/nonexistent/worldflow/file')"))
    assert isinstance(rebuilt, FileNotFoundError)
    assert rebuilt.errno == errno.ENOENT
    assert rebuilt.filename == "/nonexistent/worldflow/file"
    assert rebuilt.strerror == "No such file or directory"


def test_recorded_traceback_is_a_note() -> None:
    rebuilt = _round_trip(ValueError("bad"))
    (note,) = rebuilt.__notes__
    assert note.startswith("step 'shop.charge' traceback:\nTraceback")


# ------------------------------------------------------ what falls back


def test_args_that_do_not_encode_fall_back_to_the_message() -> None:
    unencodable = object()
    record = _stored(ValueError(unencodable, 1))
    assert "args" not in record
    rebuilt = rebuild_error(record)
    assert type(rebuilt) is ValueError
    assert str(rebuilt) == str(ValueError(unencodable, 1))


def test_args_are_not_recorded_when_the_message_says_it_all() -> None:
    record = _stored(ValueError("card declined"))
    assert set(record) == {"type", "message", "traceback"}


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        # Written before args were recorded: rebuilt from the message, as then.
        ({"type": "KeyError", "message": "'user-7'"}, KeyError("'user-7'")),
        ({"type": "ValueError", "message": "bad"}, ValueError("bad")),
        ({"type": "FileNotFoundError", "message": "[Errno 2] x"}, FileNotFoundError("[Errno 2] x")),
        ({"type": "UnicodeDecodeError", "message": "m"}, wf.StepFailed("UnicodeDecodeError", "m")),
        ({"type": "ExceptionGroup", "message": "m"}, wf.StepFailed("ExceptionGroup", "m")),
        # Corrupt or unknown: never an error of its own.
        ({"type": "NoSuchError", "message": "m"}, wf.StepFailed("NoSuchError", "m")),
        ({"type": "int", "message": "m"}, wf.StepFailed("int", "m")),
        ({"type": "KeyError", "message": "m", "args": {"$t": "nope"}}, KeyError("m")),
        ({"type": "KeyError", "message": "m", "args": "k"}, KeyError("m")),
        (
            {"type": "KeyError", "message": "m", "args": [[1] * 3] * 2},
            KeyError([1, 1, 1], [1, 1, 1]),
        ),
        ({"type": "KeyError", "message": "m", "attrs": ["x"]}, KeyError("m")),
        ({"type": "OSError", "message": "m", "attrs": {"errno": "x"}}, OSError("m")),
        (
            {"type": "ValueError", "message": "m", "traceback": "tb", "attrs": {"__notes__": "x"}},
            ValueError("m"),
        ),
        ({"type": "ExceptionGroup", "message": "m", "args": ["g"], "exceptions": 3}, None),
        ({}, Exception("")),
        ({"type": None, "message": None}, wf.StepFailed("None", "None")),
    ],
    ids=repr,
)
def test_old_and_malformed_records(record: dict[str, Any], expected: BaseException | None) -> None:
    rebuilt = rebuild_error(record)
    if expected is None:
        expected = wf.StepFailed(str(record["type"]), str(record["message"]))
    assert type(rebuilt) is type(expected)
    assert str(rebuilt) == str(expected)


def test_a_record_that_is_not_a_dict_is_read_as_a_message() -> None:
    rebuilt = rebuild_error("boom")
    assert type(rebuilt) is Exception and str(rebuilt) == "boom"


def test_groups_nested_without_end_are_cut_short() -> None:
    record: dict[str, Any] = {"type": "ValueError", "message": "leaf"}
    for _ in range(10_000):
        record = {"type": "ExceptionGroup", "message": "g", "args": ["g"], "exceptions": [record]}
    rebuilt = rebuild_error(record)
    assert isinstance(rebuilt, Exception)


def test_an_exception_whose_str_fails_is_still_recorded() -> None:
    class Broken(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no")

    record = describe_error(_raised(Broken()), with_traceback=False)
    assert "str() failed" in record["message"]


# ---------------------------------------------------------- user classes


@pytest.fixture
def errors_module() -> Iterator[types.ModuleType]:
    """A module of user exception classes, made on the fly, removed afterwards."""
    name = "wf_test_user_errors"
    module = types.ModuleType(name)
    sys.modules[name] = module
    exec(
        "class OrderError(Exception):\n"
        "    pass\n"
        "class Declined(Exception):\n"
        "    def __init__(self, code, reason):\n"
        "        super().__init__(f'declined with code {code}: {reason}')\n"
        "        self.code = code\n"
        "        self.reason = reason\n"
        "class Shown(Exception):\n"
        "    def __init__(self, code):\n"
        "        super().__init__(code)\n"
        "        self.code = code\n"
        "    def __str__(self):\n"
        "        return f'code {self.code}'\n"
        "class StoreIOError(OSError):\n"
        "    def __init__(self, store, *args):\n"
        "        super().__init__(*args)\n"
        "        self.store = store\n"
        "class Batch(ExceptionGroup):\n"
        "    pass\n"
        "def __getattr__(name):\n"
        "    raise AssertionError(f'__getattr__({name!r}) was called')\n",
        module.__dict__,
    )
    yield module
    sys.modules.pop(name, None)


def test_user_errors_keep_args_and_attributes_without_init(errors_module: Any) -> None:
    m = errors_module
    for original in (
        m.OrderError("sold out", 42),
        m.Declined(51, "insufficient funds"),
        m.Shown(7),
        m.StoreIOError("s3", errno.EIO, "Input/output error", "key.json"),
        m.Batch("two", [ValueError("a"), KeyError("b")]),
    ):
        rebuilt = _round_trip(original)
        assert type(rebuilt) is type(original)
        assert str(rebuilt) == str(original)
        assert _shape(rebuilt.args) == _shape(original.args)
        assert {k: v for k, v in vars(rebuilt).items() if k != "__notes__"} == vars(original)
        assert _fields(rebuilt) == _fields(original)


def test_a_user_error_whose_class_is_not_here_is_a_step_failure(errors_module: Any) -> None:
    record = _stored(errors_module.OrderError("sold out", 42))
    del sys.modules["wf_test_user_errors"]
    rebuilt = rebuild_error(record)
    assert type(rebuilt) is wf.StepFailed
    assert rebuilt.error_type == "wf_test_user_errors.OrderError"


def test_finding_a_class_never_calls_module_getattr(errors_module: Any) -> None:
    # The fixture's module __getattr__ raises if it is called.
    for name in ("wf_test_user_errors.Lazy", "wf_test_user_errors.Lazy.Inner"):
        rebuilt = rebuild_error({"type": name, "message": "m"})
        assert type(rebuilt) is wf.StepFailed
