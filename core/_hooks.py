"""Hooks and webhooks: a run pausing until something outside sends it data.

Inside a workflow, :func:`create_hook` and :func:`create_webhook` return
objects that are ``asyncio.Future`` s of the workflow's loop (so
``asyncio.wait`` takes them), resolved by the first payload. ``await hook``
gives the payloads one after another, and ``async for`` iterates over them in
arrival order; payloads that arrive before the workflow awaits them wait for
it, none is lost.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import json
from collections.abc import AsyncIterator, Callable, Generator
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar

from ._loop import current_instance

__all__ = [
    "SPEC_TOKEN_PREFIX",
    "Hook",
    "Webhook",
    "WebhookRequest",
    "create_hook",
    "create_webhook",
    "webhook_spec",
]

T = TypeVar("T")


if TYPE_CHECKING:
    _Future = asyncio.Future
else:
    # The pure-Python Future, so that asyncio.isfuture() can say no (below).
    _Future = asyncio.futures._PyFuture


@dataclasses.dataclass(frozen=True, slots=True)
class _Refused:
    """A payload its typed hook refused: the ``await`` that takes it raises ``error``."""

    error: BaseException


class Hook(_Future[T], Generic[T]):
    """A pause point resumed by token: ``await wf.resume_hook(hook.token, payload)``.

    A future of the workflow's loop that is done once the first payload has
    arrived (what ``asyncio.wait`` looks at). ``await hook`` and ``async for``
    take the payloads in order, one each time.
    """

    # asyncio.isfuture(hook) is False, so wait_for(), gather() and shield() *await*
    # the hook (taking the next payload) on every Python, instead of reading its
    # first result as 3.11's wait_for() would; asyncio.wait() only needs done()
    # and done-callbacks, which it still has.
    _asyncio_future_blocking = None  # type: ignore[assignment]

    token: str

    def __init__(self, token: str, *, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(loop=loop)
        self.token = token
        self._payloads: collections.deque[T | _Refused] = collections.deque()
        self._waiters: collections.deque[asyncio.Future[T]] = collections.deque()
        self._error: BaseException | None = None
        #: A typed hook's conversion of each payload (``wf.define_hook``).
        self._convert: Callable[[Any], Any] | None = None

    def _deliver(self, payload: Any) -> None:
        item: T | _Refused = payload
        if self._convert is not None:
            try:
                item = self._convert(payload)
            except Exception as exc:  # the payload does not fit: its await raises
                item = _Refused(exc)
        if not self.done():
            if isinstance(item, _Refused):
                self.set_exception(item.error)
                self.exception()  # the await that takes it raises; nothing to log
            else:
                self.set_result(item)
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                if isinstance(item, _Refused):
                    waiter.set_exception(item.error)
                else:
                    waiter.set_result(item)
                return
        self._payloads.append(item)

    def _fail(self, exc: BaseException) -> None:
        """The hook cannot receive anything (its token is taken): every await raises."""
        self._error = exc
        if not self.done():
            self.set_exception(exc)
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(exc)

    def next(self) -> asyncio.Future[T]:
        """A future for the next payload not yet taken (what ``await hook`` waits on)."""
        waiter: asyncio.Future[T] = self.get_loop().create_future()
        if self._error is not None and not self._payloads:
            waiter.set_exception(self._error)
        elif self._payloads:
            item = self._payloads.popleft()
            if isinstance(item, _Refused):
                waiter.set_exception(item.error)
            else:
                waiter.set_result(item)
        else:
            self._waiters.append(waiter)
        return waiter

    def __await__(self) -> Generator[Any, None, T]:
        return self.next().__await__()

    def __aiter__(self) -> AsyncIterator[T]:
        return self

    async def __anext__(self) -> T:
        return await self.next()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} token={self.token!r} pending={len(self._payloads)}>"


@dataclasses.dataclass(frozen=True)
class WebhookRequest:
    """The HTTP request that resumed a webhook."""

    method: str
    headers: dict[str, str]
    body: bytes
    path: str = ""
    query: str = ""
    #: Set when the webhook answers with its workflow (``respond="manual"``).
    id: str = ""

    async def respond(self, status: int, body: dict[str, Any] | None = None) -> None:
        """Answer this request from the workflow (its webhook was created with
        ``respond="manual"``): the HTTP caller, still waiting, gets ``status`` and the
        JSON object ``body``. A step of the run: recorded once, never sent twice."""
        if not self.id:
            raise RuntimeError(
                "request.respond(): this request's webhook answers by itself; create it "
                "with wf.create_webhook(respond='manual') to answer from the workflow"
            )
        from ._respond import check_response, respond_step

        status, body = check_response(status, body)
        await respond_step(self.id, status, body)

    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")

    def json(self) -> Any:
        """The body parsed as JSON; a ``ValueError`` that says so when it is not."""
        try:
            return json.loads(self.body)
        except ValueError as exc:
            preview = self.body[:80]
            raise ValueError(
                f"webhook body is not valid JSON ({exc}); it starts with {preview!r}"
            ) from None


class Webhook(Hook[WebhookRequest]):
    """A hook with its own URL: an outside service resumes it with an HTTP request."""

    url: str

    def __init__(self, token: str, url: str, *, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(token, loop=loop)
        self.url = url

    def __repr__(self) -> str:
        return f"<Webhook url={self.url!r}>"


def create_hook(token: str | None = None) -> Hook[Any]:
    """Create a hook in the running workflow; ``token`` defaults to a random, unguessable one.

    >>> hook = wf.create_hook(token=f"approve:{order_id}")
    >>> decision = await hook
    """
    instance = current_instance()
    if instance is None:
        raise RuntimeError("wf.create_hook() can only be called inside a workflow")
    return instance.create_hook(token, webhook=False)


def create_webhook(
    *,
    verify: dict[str, Any] | None = None,
    respond: tuple[int, dict[str, Any]] | Literal["manual"] | None = None,
    respond_timeout: float | str | None = None,
) -> Webhook:
    """Create a webhook in the running workflow: ``webhook.url`` resumes it over HTTP.

    >>> webhook = wf.create_webhook()
    >>> await notify_payments(webhook.url)
    >>> request = await webhook

    ``verify``: check each request's signature before it is recorded
    (``wf.signatures.stripe()``, ``.github()``, ``.slack()``, ``.hmac_sha256(...)``):
    a request with a missing, wrong or stale one gets 401 and never reaches the
    run. ``respond``: the status (2xx) and JSON object to answer an accepted
    request with, instead of ``202 {"ok": true, "run_id": ...}``; or ``"manual"``:
    the workflow answers each request with ``await request.respond(status, body)``
    while its caller waits, up to ``respond_timeout`` (10 s by default; then
    ``202 {"ok": true, "run_id": ..., "responded": false}``).
    """
    instance = current_instance()
    if instance is None:
        raise RuntimeError("wf.create_webhook() can only be called inside a workflow")
    spec = webhook_spec(verify, respond, respond_timeout=respond_timeout)
    hook = instance.create_hook(None, webhook=True, spec=spec)
    assert isinstance(hook, Webhook)
    return hook


#: The start of the token of a webhook with a spec (``.`` is not in a random token).
SPEC_TOKEN_PREFIX = "spec."


def webhook_spec(
    verify: dict[str, Any] | None = None,
    respond: tuple[int, dict[str, Any]] | Literal["manual"] | None = None,
    schema: str | None = None,
    *,
    respond_timeout: float | str | None = None,
) -> dict[str, Any] | None:
    """What a webhook's intake must do besides recording the request, checked now."""
    spec: dict[str, Any] = {}
    if verify is not None:
        from .signatures import check

        if not isinstance(verify, dict) or "scheme" not in verify:
            raise TypeError(
                f"verify= takes what wf.signatures.stripe() (or github, slack, hmac_sha256) "
                f"returns, got {verify!r}"
            )
        problem = check(verify, {}, b"", 0.0, env={str(verify.get("secret_env")): "x"})
        if problem is not None and problem.startswith("unknown signature scheme"):
            raise ValueError(f"verify={verify!r}: {problem}")
        spec["verify"] = dict(verify)
    if respond == "manual":
        if schema is not None:
            raise ValueError(
                "respond='manual' needs the request to answer, and a typed webhook gives the "
                "typed value: use wf.create_webhook(respond='manual') and check the body there"
            )
        from ._duration import parse_duration
        from ._respond import DEFAULT_TIMEOUT

        seconds = DEFAULT_TIMEOUT
        if respond_timeout is not None:
            seconds = parse_duration(respond_timeout, what="respond_timeout")
            if not 0 < seconds <= 900:
                raise ValueError(
                    f"respond_timeout={respond_timeout!r}: a caller can wait from more than "
                    "0 s up to 15 minutes"
                )
        spec["respond"] = "manual"
        spec["respond_timeout"] = seconds
    elif respond_timeout is not None:
        raise ValueError("respond_timeout= is for webhooks created with respond='manual'")
    elif respond is not None:
        status, body = respond if isinstance(respond, tuple) and len(respond) == 2 else (0, None)
        if not isinstance(status, int) or not 200 <= status <= 299 or not isinstance(body, dict):
            raise ValueError(
                f"respond= takes (status, JSON object) with a 2xx status, got {respond!r}"
            )
        json.dumps(body, allow_nan=False)  # a TypeError/ValueError now, not at the intake
        spec["respond"] = [status, body]
    if schema is not None:
        spec["schema"] = schema
    return spec or None
