"""Typed hooks: ``approval = wf.define_hook(Approval)``.

A typed hook checks its payloads against a type (a pydantic model, a
dataclass, a ``TypedDict`` or a plain type such as ``int``):

>>> approval = wf.define_hook(Approval)
>>> # in a workflow
>>> decision = await approval.create(token=f"approve:{order_id}")   # an Approval
>>> # anywhere else
>>> await approval.resume(f"approve:{order_id}", {"approved": True, "by": "ana"})

- ``resume`` validates the payload first: one that does not fit raises
  ``wf.InvalidHookPayload`` (saying what and where) and never reaches the run.
  What is sent and recorded is the payload's plain JSON form (a model's
  ``model_dump(mode="json")``, a dataclass's fields), so the log never needs
  the class to be read.
- In the workflow, ``await hook`` gives the payload as the type (a model
  instance, a dataclass instance), made again from the recorded JSON on
  every replay. A payload that reached the hook without ``resume``'s check
  (an untyped ``wf.resume_hook``) and does not fit raises
  ``wf.InvalidHookPayload`` at that ``await``, the same on every replay.
- ``create_webhook()`` gives a webhook whose request body must be JSON of the
  type: the webhook intake answers 422 to a body that does not fit (where the
  process that receives it has imported the definition, e.g. through
  ``WORLDFLOW_MODULES``), and the workflow receives the typed value.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Generic, TypeVar, Union, get_args, get_origin

from ._errors import InvalidHookPayload
from ._hooks import Hook, Webhook, WebhookRequest, webhook_spec
from ._loop import current_instance

if TYPE_CHECKING:
    from ._api import Run

__all__ = ["HookType", "define_hook", "defined_hook"]

T = TypeVar("T")

if TYPE_CHECKING:

    class TypedWebhook(Hook[T]):
        """What a typed hook's ``create_webhook`` gives, as the type checker sees it: a
        webhook (it has a ``url``) whose ``await`` gives the typed value."""

        url: str


_DEFINED: dict[str, HookType[Any]] = {}


def defined_hook(name: str) -> HookType[Any] | None:
    """The typed hook defined in this process under ``name``, if any."""
    return _DEFINED.get(name)


class HookType(Generic[T]):
    """A hook definition with a payload type: see :func:`define_hook`."""

    def __init__(self, tp: type[T], name: str) -> None:
        self.type = tp
        self.name = name
        self._load, self._dump = _codec_for(tp)

    def __repr__(self) -> str:
        return f"<HookType {self.name!r} of {_type_name(self.type)}>"

    def validate(self, payload: Any) -> T:
        """The payload as the type; ``wf.InvalidHookPayload`` if it does not fit."""
        value: T = self._load(payload, f"the payload of hook type {self.name!r}")
        return value

    def dump(self, value: T) -> Any:
        """The plain JSON form of a valid value (what is sent and recorded)."""
        return self._dump(value)

    # -- inside a workflow --------------------------------------------------------------
    def create(self, token: str | None = None) -> Hook[T]:
        """Create the hook in the running workflow (as ``wf.create_hook``); ``await``
        gives payloads of the type."""
        instance = current_instance()
        if instance is None:
            raise RuntimeError(f"{self.name}.create() can only be called inside a workflow")
        hook: Hook[T] = instance.create_hook(token, webhook=False, spec={"schema": self.name})
        hook._convert = self._receive
        return hook

    def create_webhook(
        self,
        *,
        verify: dict[str, Any] | None = None,
        respond: tuple[int, dict[str, Any]] | None = None,
    ) -> TypedWebhook[T]:
        """Create a webhook (as ``wf.create_webhook``, with its ``verify`` and ``respond``)
        whose request body must be JSON of the type; ``await`` gives the typed value,
        not the request."""
        instance = current_instance()
        if instance is None:
            raise RuntimeError(f"{self.name}.create_webhook() can only be called inside a workflow")
        spec = webhook_spec(verify, respond, self.name)
        hook = instance.create_hook(None, webhook=True, spec=spec)
        assert isinstance(hook, Webhook)
        hook._convert = self._receive
        return typing.cast("TypedWebhook[T]", hook)

    def _receive(self, payload: Any) -> Any:
        if isinstance(payload, WebhookRequest):
            try:
                payload = payload.json()
            except ValueError as exc:
                raise InvalidHookPayload(str(exc)) from None
        return self.validate(payload)

    # -- outside ------------------------------------------------------------------------
    async def resume(self, token: str, payload: Any) -> Run[Any]:
        """Validate ``payload`` and deliver it to the hook with ``token`` (as
        ``wf.resume_hook``); ``wf.InvalidHookPayload`` and nothing sent if it does not fit."""
        from ._api import resume_hook

        value = self.validate(payload)
        return await resume_hook(token, self.dump(value))

    def resume_sync(self, token: str, payload: Any) -> Run[Any]:
        """:meth:`resume`, blocking (for code without an event loop)."""
        from ._sync import run_sync

        value = self.validate(payload)  # before anything runs: the error in this thread
        from ._api import resume_hook

        return run_sync(resume_hook(token, self.dump(value)))


def define_hook(tp: type[T], *, name: str | None = None) -> HookType[T]:
    """A hook with a payload type: a pydantic model, a dataclass, a ``TypedDict``, or a
    plain type (``int``, ``str``, ``list[str]`` ...). ``name`` (default: the type's
    module and name) is recorded with each hook, so that a webhook's intake finds
    the definition; define each at module level, once.

    >>> approval = wf.define_hook(Approval)
    >>> decision = await approval.create(token="approve:1")       # in a workflow
    >>> await approval.resume("approve:1", {"approved": True})    # anywhere else
    """
    name = name or f"{getattr(tp, '__module__', '?')}.{getattr(tp, '__qualname__', repr(tp))}"
    existing = _DEFINED.get(name)
    if existing is not None and existing.type is not tp:
        raise ValueError(f"a hook type named {name!r} is already defined (for another type)")
    hook_type = HookType(tp, name)
    _DEFINED[name] = hook_type
    return hook_type


# -- checking values against a type ----------------------------------------------------

Load = Callable[[Any, str], Any]


def _type_name(tp: Any) -> str:
    return getattr(tp, "__qualname__", None) or repr(tp)


def _codec_for(tp: Any) -> tuple[Load, Callable[[Any], Any]]:
    """How to make a value of ``tp`` from a payload, and its plain JSON form."""
    if isinstance(tp, type) and hasattr(tp, "model_validate") and hasattr(tp, "model_dump"):

        def load_model(payload: Any, where: str) -> Any:
            try:
                return tp.model_validate(payload)
            except ValueError as exc:  # pydantic's ValidationError
                raise InvalidHookPayload(f"{where}: {exc}") from None

        return load_model, lambda value: value.model_dump(mode="json")
    return (lambda p, where: _load(tp, p, where)), _plain  # dataclasses, TypedDicts, plain


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _load(tp: Any, value: Any, where: str) -> Any:
    """``value`` checked against ``tp`` (and made into it, for dataclasses)."""
    if tp is Any or tp is object:
        return value
    origin = get_origin(tp)
    if origin is typing.Literal:
        if value not in get_args(tp):
            raise InvalidHookPayload(
                f"{where}: expected one of {list(get_args(tp))}, got {value!r}"
            )
        return value
    if origin in (Union, types.UnionType):
        problems = []
        for option in get_args(tp):
            try:
                return _load(option, value, where)
            except InvalidHookPayload as exc:
                problems.append(str(exc))
        raise InvalidHookPayload(f"{where}: {value!r} fits none of {_type_name(tp)}")
    if origin in (list, tuple, set, frozenset) or tp in (list, tuple):
        if not isinstance(value, list | tuple):
            raise InvalidHookPayload(f"{where}: expected a list, got {_kind(value)}")
        (item,) = get_args(tp)[:1] or (Any,)
        return [_load(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise InvalidHookPayload(f"{where}: expected an object, got {_kind(value)}")
        args = get_args(tp)
        item = args[1] if len(args) == 2 else Any
        return {k: _load(item, v, f"{where}[{k!r}]") for k, v in value.items()}
    if tp is type(None) or tp is None:
        if value is not None:
            raise InvalidHookPayload(f"{where}: expected null, got {_kind(value)}")
        return None
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if isinstance(value, tp):
            return value
        fields = {f.name: f for f in dataclasses.fields(tp) if f.init}
        hints = typing.get_type_hints(tp)
        required = {
            n
            for n, f in fields.items()
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        }
        checked = _fields(value, hints, fields.keys(), required, where)
        return tp(**checked)
    if typing.is_typeddict(tp):
        hints = typing.get_type_hints(tp)
        return _fields(value, hints, hints.keys(), set(tp.__required_keys__), where)
    if isinstance(tp, type) and hasattr(tp, "model_validate"):
        try:
            return tp.model_validate(value)
        except ValueError as exc:
            raise InvalidHookPayload(f"{where}: {exc}") from None
    if tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        raise InvalidHookPayload(f"{where}: expected a number, got {_kind(value)}")
    if tp is int and isinstance(value, bool):
        raise InvalidHookPayload(f"{where}: expected an integer, got {_kind(value)}")
    if isinstance(tp, type):
        if not isinstance(value, tp):
            raise InvalidHookPayload(f"{where}: expected {_type_name(tp)}, got {_kind(value)}")
        return value
    return value  # an annotation this checker does not know: taken as it is


def _fields(
    value: Any, hints: dict[str, Any], names: Any, required: set[str], where: str
) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidHookPayload(f"{where}: expected an object, got {_kind(value)}")
    allowed = set(names)
    unknown = sorted(set(value) - allowed)
    missing = sorted(required - set(value))
    if unknown or missing:
        said = []
        if missing:
            said.append(f"missing {', '.join(repr(m) for m in missing)}")
        if unknown:
            said.append(f"unknown {', '.join(repr(u) for u in unknown)}")
        raise InvalidHookPayload(f"{where}: {'; '.join(said)}")
    return {k: _load(hints.get(k, Any), v, f"{where}.{k}") for k, v in value.items()}


def _kind(value: Any) -> str:
    return f"{type(value).__name__} {value!r}"[:80]
