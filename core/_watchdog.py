"""The watchdog: workflow code that never awaits is stopped, not left to starve the worker.

Workflow code runs synchronously on the worker's event loop, in a *pass*
(:func:`run_pass` around ``WorkflowLoop.run_ready``). Code that does not
yield (``while True: pass``, a long computation, ``time.sleep``) would hold
that loop, and every run it serves, for as long as it likes. So one daemon
thread, started with the first pass, looks a few times per limit at which
pass each loop thread is in. A pass it sees running for the limit
(``WORLDFLOW_WORKFLOW_BLOCK_TIMEOUT`` seconds, 5 by default, or
:func:`set_block_timeout`) gets an exception injected into its thread with
``PyThreadState_SetAsyncExc``: the code raises at its next bytecode, the
pass ends, and the run fails with :class:`WorkflowBlocked`.

The injected exception is a ``BaseException``, so ``except Exception`` in
workflow code lets it through. Code that swallows it (a bare ``except:``)
and spins on gets it again after another interval (up to 1 s), and from
then on at every line of the workflow author's code that the pass runs
(never in the standard library's or worldflow's, which finish what they
do), which ends any ``try`` that swallows it: with ``sys.monitoring`` on
Python 3.12+; on 3.11 with a trace function, which the interpreter drops
each time it raises, so that code swallowing it in nested ``try`` blocks
without calling anything may outlast it. After three tries the watchdog
gives up on that pass and logs an error: that worker's loop stays stuck
until the code yields (the run fails then).

A blocking call into C (``time.sleep(100)``, a huge regex match) cannot be
interrupted: the exception lands when the call returns. Code stopped in a
debugger (pdb, debugpy) is not blocked: its time starts again when it goes on.

Why no injected exception reaches engine code:

* The pass marker is an attribute per loop thread (``active``: the pass's
  generation, 0 between passes), written by that thread and only sampled by
  the watchdog: a few attribute stores per pass.
* Injection is a handshake. The watchdog sets ``injecting``, checks that the
  same pass is still ``active``, records ``injected`` and injects, then
  clears ``injecting``. The loop thread clears ``active`` inside the guarded
  region; then, if an injection into the pass began, it waits for
  ``injecting`` to clear and discards an exception still pending
  (``PyThreadState_SetAsyncExc(tid, NULL)``). Once ``active`` is clear no
  new injection into the pass begins, so at most two can still arrive (one
  pending, one under way), and the settling is guarded against both.
* An asynchronous exception is raised only where the interpreter checks
  for one: at a call, a backward jump or a function's first instruction.
  The code of :func:`run_pass` has none of those where it is not guarded.
"""

from __future__ import annotations

import ctypes
import faulthandler
import functools
import logging
import os
import sys
import sysconfig
import tempfile
import threading
import time
import weakref
from collections.abc import Callable
from types import CodeType, FrameType
from typing import TYPE_CHECKING, Any

from ._errors import WorkflowBlocked

if TYPE_CHECKING:
    from ._instance import WorkflowInstance

__all__ = ["WorkflowBlocked", "block_timeout", "run_pass", "set_block_timeout"]

log = logging.getLogger("worldflow")

ENV = "WORLDFLOW_WORKFLOW_BLOCK_TIMEOUT"
DEFAULT = 5.0
_TRIES = 3  # injections into one pass before the watchdog gives up on it


class _Interrupt(BaseException):
    """Injected into a pass that has run too long; never leaves :func:`run_pass`."""

    def __init__(self, *args: object) -> None:
        super().__init__(*args)
        # Made in the blocked thread, where it is raised: keep the first (its
        # traceback shows where the code was) and, escalating, make every line raise.
        rec: _Record | None = getattr(_local, "rec", None)
        if rec is not None and rec.active and rec.injected == rec.active:
            if rec.interrupt is None:
                rec.interrupt = self
            if rec.escalate == rec.active:
                if _TOOL is None:
                    _trace_lines(rec, sys._getframe(1))
                else:
                    _watch_lines(rec, sys._getframe(1))


# -- the limit -------------------------------------------------------------------


def _parse(value: str | None) -> float | None:
    if value is None or not value.strip():
        return DEFAULT
    try:
        seconds = float(value)
    except ValueError:
        raise ValueError(
            f"{ENV}={value!r} is not a number of seconds (e.g. 5; 0 turns the check off)"
        ) from None
    if seconds != seconds or seconds < 0:
        raise ValueError(f"{ENV}={value!r}: the limit must be 0 (off) or a positive number")
    return seconds or None


_limit: float | None = _parse(os.environ.get(ENV))


def block_timeout() -> float | None:
    """Seconds workflow code may run without awaiting; None when not checked."""
    return _limit


def set_block_timeout(seconds: float | None) -> None:
    """Set how long workflow code may run without awaiting before its run fails.

    ``0`` turns the check off; ``None`` goes back to ``WORLDFLOW_WORKFLOW_BLOCK_TIMEOUT``
    (5 seconds when unset). Applies to passes under way too.
    """
    global _limit
    if seconds is None:
        _limit = _parse(os.environ.get(ENV))
    elif seconds != seconds or seconds < 0:
        raise ValueError(f"the block timeout must be 0 (off) or a positive number, not {seconds!r}")
    else:
        _limit = float(seconds) or None


# -- the loop thread's side ----------------------------------------------------


class _Record:
    """One loop thread's passes, as the watchdog sees them."""

    __slots__ = (
        "active",
        "codes",
        "escalate",
        "files",
        "gen",
        "injected",
        "injecting",
        "instance",
        "interrupt",
        "next_at",
        "restore",
        "seen",
        "seen_at",
        "thread",
        "tid",
        "tracer",
        "tries",
    )

    def __init__(self) -> None:
        self.tid = threading.get_ident()
        self.thread = weakref.ref(threading.current_thread())
        self.gen = 0  # generations of this thread's passes
        self.active = 0  # the generation of the pass under way, 0 between passes
        self.instance: WorkflowInstance | None = None
        self.injecting = 0  # the watchdog is injecting into that pass
        self.injected = 0  # the last pass the watchdog injected into
        self.escalate = 0  # the pass in which every line raises again
        self.interrupt: _Interrupt | None = None  # the first one of the pass
        self.codes: list[CodeType] = []  # 3.12+: code objects watched line by line
        self.files: set[str] = set()  # 3.11: files whose lines raise
        self.tracer: Any = None  # 3.11: the trace and profile functions set
        self.restore: tuple[Any, Any] | None = None  # 3.11: those set before
        # the watchdog's own bookkeeping
        self.seen = 0
        self.seen_at = 0.0
        self.next_at = 0.0
        self.tries = 0


_local = threading.local()


def run_pass(instance: WorkflowInstance, body: Callable[[], object]) -> None:
    """Run ``body`` (workflow code) as one watched pass of ``instance``.

    If the watchdog stopped it, ``instance.blocked`` is set on return; no
    injected exception ever leaves this function. Any other exception of
    ``body`` propagates.
    """
    try:
        rec: _Record = _local.rec
    except AttributeError:
        rec = _register()
    if rec.active:  # a pass inside a pass: the outer one is watched already
        body()
        return
    rec.instance = instance
    gen = rec.gen = rec.gen + 1
    try:
        try:
            rec.active = gen
            body()
        finally:
            rec.active = 0  # from here on, no new injection into this pass begins
    except _Interrupt:
        pass
    except BaseException:
        if rec.injecting == gen or rec.injected == gen:
            try:
                _settle(rec, gen)
            except _Interrupt:
                try:
                    _settle(rec, gen)
                except _Interrupt:
                    _settle(rec, gen)
        rec.instance = None
        raise
    if rec.injecting == gen or rec.injected == gen:
        try:
            _settle(rec, gen)
        except _Interrupt:
            try:
                _settle(rec, gen)
            except _Interrupt:
                _settle(rec, gen)
    rec.instance = None


def _settle(rec: _Record, gen: int) -> None:
    """After an interrupted pass: let the watchdog finish, stop raising at every
    line, and discard an interrupt still pending. Idempotent: an interrupt
    arriving may cut it short, and it is then called again."""
    while rec.injecting == gen:
        time.sleep(0.0001)  # the watchdog is between its check and its injection
    if rec.restore is not None:
        trace, profile = rec.restore
        sys.setprofile(profile)
        sys.settrace(trace)
        rec.restore = rec.tracer = None
        rec.files = set()
    while rec.codes:
        _unwatch_lines(rec.codes.pop())
    instance = rec.instance
    interrupt = rec.interrupt
    blocked = None if instance is None else instance.blocked
    if blocked is not None and interrupt is not None and blocked.__traceback__ is None:
        blocked.__traceback__ = interrupt.__traceback__  # where the code was when stopped
    rec.interrupt = None
    if rec.injected == gen:
        _clear(rec.tid, None)


def _register() -> _Record:
    rec = _local.rec = _Record()
    with _lock:
        _records.append(rec)
        if not _started:
            _start()
    return rec


# -- raising again at every line, when the code swallowed the interrupt ----------


def _dirs(*names: str) -> tuple[str, ...]:
    paths = sysconfig.get_paths()
    return tuple({os.path.normcase(os.path.realpath(paths[n])) + os.sep for n in names})


_STDLIB = _dirs("stdlib", "platstdlib")
_SITE = _dirs("purelib", "platlib")  # may lie inside the stdlib's folder
_WORLDFLOW = os.path.normcase(os.path.dirname(os.path.realpath(__file__))) + os.sep


@functools.lru_cache(maxsize=1024)
def _is_own_code(filename: str) -> bool:
    """Code of the workflow's author: neither worldflow's nor the standard library's."""
    if filename.startswith("<frozen"):
        return False
    path = os.path.normcase(os.path.realpath(filename))
    if path.startswith(_WORLDFLOW):
        return False
    return not path.startswith(_STDLIB) or path.startswith(_SITE)


def _own_frames(frame: FrameType | None) -> list[FrameType]:
    """The frames of the author's code in the pass, from ``frame`` outwards."""
    frames = []
    while frame is not None and frame.f_code is not _RUN_PASS_CODE:
        if _is_own_code(frame.f_code.co_filename):
            frames.append(frame)
        frame = frame.f_back
    return frames


_monitoring: Any = getattr(sys, "monitoring", None)  # Python 3.12+


def _claim_tool() -> int | None:
    if _monitoring is None:
        return None
    for tool in (4, 3):  # ids sys.monitoring leaves free (debuggers, coverage take the others)
        try:
            _monitoring.use_tool_id(tool, "worldflow watchdog")
        except ValueError:
            continue
        _monitoring.register_callback(tool, _monitoring.events.LINE, _on_line)
        return tool
    return None


def _on_line(code: CodeType, line: int) -> None:
    rec: _Record | None = getattr(_local, "rec", None)
    if rec is not None and rec.active and rec.active == rec.escalate:
        raise _Interrupt


def _watch_lines(rec: _Record, frame: FrameType | None) -> None:
    """3.12+, in the blocked thread: every line of the blocked pass's code raises."""
    assert _TOOL is not None
    with _lines_lock:
        for f in _own_frames(frame):
            code = f.f_code
            if code in rec.codes:
                continue
            count = _watched_codes.get(code, 0)
            if not count:
                _monitoring.set_local_events(_TOOL, code, _monitoring.events.LINE)
            _watched_codes[code] = count + 1
            rec.codes.append(code)


def _unwatch_lines(code: CodeType) -> None:
    with _lines_lock:
        count = _watched_codes.pop(code, 0) - 1
        if count > 0:
            _watched_codes[code] = count
        elif _TOOL is not None:
            _monitoring.set_local_events(_TOOL, code, 0)


def _trace_lines(rec: _Record, frame: FrameType | None) -> None:
    """3.11, in the blocked thread: a trace function raises at every line of the
    author's files. The interpreter unsets it each time it raises, so a profile
    function (which sees calls and returns) sets it again, as does each interrupt."""
    if rec.tracer is not None and sys.gettrace() is rec.tracer[0]:
        return  # raised by the trace function itself
    frames = _own_frames(frame)
    rec.files.update(f.f_code.co_filename for f in frames)
    if not rec.files:
        return
    if rec.tracer is None:
        gen, files = rec.active, rec.files

        def tracer(frame: FrameType, event: str, arg: object) -> Any:
            if event == "line" and rec.active == gen and frame.f_code.co_filename in files:
                raise _Interrupt
            return tracer

        def profiler(frame: FrameType, event: str, arg: object) -> None:
            if rec.active == gen and sys.gettrace() is not tracer:
                sys.settrace(tracer)
                for f in _own_frames(frame):
                    f.f_trace = tracer

        rec.restore = (sys.gettrace(), sys.getprofile())
        rec.tracer = (tracer, profiler)
    tracer, profiler = rec.tracer
    sys.setprofile(profiler)
    sys.settrace(tracer)
    for f in frames:
        f.f_trace = tracer


# -- the watchdog thread -------------------------------------------------------

_inject = ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.c_ulong, ctypes.py_object)(
    ("PyThreadState_SetAsyncExc", ctypes.pythonapi)
)
_clear = ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p)(
    ("PyThreadState_SetAsyncExc", ctypes.pythonapi)
)
_RUN_PASS_CODE = run_pass.__code__

_lock = threading.Lock()
_lines_lock = threading.Lock()
_records: list[_Record] = []
_watched_codes: dict[CodeType, int] = {}
_started = False
_prepared = False
_TOOL: int | None = None  # claimed the first time code swallows an interrupt
_tool_claimed = False


def _start() -> None:
    global _started, _prepared
    _started = True
    if not _prepared:  # once per process, even across forks
        _prepared = True
        _quiet_unraisable()
    threading.Thread(target=_watch, name="worldflow-watchdog", daemon=True).start()


def _claim_tool_once() -> None:
    global _TOOL, _tool_claimed
    if not _tool_claimed:
        _tool_claimed = True
        _TOOL = _claim_tool()


def _quiet_unraisable() -> None:
    """An interrupt that lands in a finalizer (``__del__``, a weakref callback) as a
    pass ends cannot propagate: the interpreter reports it to ``sys.unraisablehook``,
    which prints it. It stopped nothing; drop it quietly."""
    previous = sys.unraisablehook

    def hook(unraisable: Any) -> None:
        if not isinstance(unraisable.exc_value, _Interrupt):
            previous(unraisable)

    sys.unraisablehook = hook


def _after_fork() -> None:  # the child has no watchdog thread, and other loop threads
    global _lock, _lines_lock, _started
    _lock, _lines_lock = threading.Lock(), threading.Lock()
    _started = False
    _records.clear()
    for name in list(vars(_local)):
        delattr(_local, name)


os.register_at_fork(after_in_child=_after_fork)


def _gil() -> bool:
    enabled: Callable[[], bool] | None = getattr(sys, "_is_gil_enabled", None)
    return enabled is None or enabled()  # the handshake relies on the GIL


def _watch() -> None:
    """The watchdog thread: wakes a few times per limit; prints nothing, never ends."""
    while True:
        time.sleep(0.25 if _limit is None else min(max(_limit / 10, 0.002), 0.25))
        limit = _limit
        try:
            if limit is not None and _gil():
                _check_all(limit)
        except Exception:  # the watchdog must outlive anything (interpreter shutdown)
            pass


def _check_all(limit: float) -> None:
    with _lock:
        records = list(_records)
    now = time.monotonic()
    for rec in records:
        thread = rec.thread()
        if thread is None or not thread.is_alive():
            with _lock:
                if rec in _records:
                    _records.remove(rec)
            continue
        gen = rec.active
        if not gen:
            rec.seen = 0
        elif gen != rec.seen:
            rec.seen, rec.seen_at, rec.tries = gen, now, 0
        elif now >= (rec.seen_at + limit if rec.tries == 0 else rec.next_at):
            if _debugging(rec.tid):  # stopped at a breakpoint: not blocked, count afresh
                rec.seen_at, rec.tries = now, 0
            elif rec.tries < _TRIES:
                _interrupt(rec, gen, now - rec.seen_at, limit)
                rec.next_at = now + min(limit, 1.0)
            elif rec.tries == _TRIES:
                rec.tries += 1
                instance = rec.instance
                log.error(
                    "worldflow: %s has still not yielded after %.1f s and %d attempts to stop "
                    "it; this worker's event loop is stuck until it does",
                    "workflow code" if instance is None else _which(instance),
                    now - rec.seen_at,
                    _TRIES,
                )


def _debugging(tid: int) -> bool:
    """The thread is in a debugger (pdb and other bdb-based ones, debugpy/pydevd).

    Another thread's stack is read from faulthandler's dump, which walks the
    frames in C without letting go of the GIL, so the stack cannot change under
    it. Walking ``sys._current_frames()`` with ``f_back`` from here crashed
    CPython 3.11 (a frame popped by its thread between two steps of the walk).
    """
    with tempfile.TemporaryFile() as dump:
        faulthandler.dump_traceback(dump, all_threads=True)
        dump.seek(0)
        text = dump.read().decode("utf-8", "replace")
    header = f"thread 0x{tid:016x} "
    inside = False
    for line in text.splitlines():
        if not line.startswith("  "):  # a thread's header, or the blank line after it
            inside = header in line.lower()
            continue
        if inside and line.startswith('  File "'):
            name = line[8 : line.rfind('", line ')]
            if os.path.basename(name) == "bdb.py" or "pydevd" in name:
                return True
    return False


def _which(instance: WorkflowInstance) -> str:
    return f"workflow {instance.workflow.name!r} (run {instance.run_id!r})"


def _interrupt(rec: _Record, gen: int, elapsed: float, limit: float) -> None:
    instance = rec.instance
    error = None
    if instance is not None and instance.blocked is None:
        error = WorkflowBlocked(
            f"{_which(instance)}: workflow code must not block: it ran {elapsed:.1f} s "
            f"without awaiting (the limit is {limit:g} s, {ENV}); do blocking or long "
            "work in a @step"
        )
    escalate = rec.tries > 0  # the last one was swallowed
    if escalate:
        _claim_tool_once()
    rec.tries += 1
    rec.injecting = gen
    try:
        if rec.active == gen:  # still the same pass: the loop thread waits for us now
            rec.injected = gen
            if error is not None and instance is not None and instance.blocked is None:
                instance.blocked = error
            if escalate:
                rec.escalate = gen  # the interrupt, as it is raised, watches the lines
            _inject(rec.tid, _Interrupt)
    finally:
        rec.injecting = 0
