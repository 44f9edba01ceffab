"""Run tags: string attributes of a run, indexed by every World for ``list_runs(tags=)``.

``wf.start(flow, ..., tags={"customer": "c-42"})`` stores them with the run
(in ``RunCreate``, and in its ``run_created`` event: the log stays the truth);
``await wf.set_tags({...})`` inside a workflow adds or changes some later.
``set_tags`` is a step of worldflow's own (``worldflow.set_tags``): its call
is recorded in the log like any step's, so a replay does not write again and
the tags a run has are deterministic; the World's ``Storage.set_tags`` is
idempotent, so a retried or repeated attempt is harmless.

Keys: 1 to 64 characters of letters, digits, ``_ . -`` (they become parts of
keys and index entries in every World); values: strings of 1 to 256
printable characters; at most :data:`MAX_TAGS` per run.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from ._definitions import step

__all__ = ["MAX_TAGS", "check_tags", "set_tags"]

_KEY = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
MAX_TAGS = 16
MAX_VALUE = 256


def check_tags(tags: object, where: str) -> dict[str, str]:
    """A copy of ``tags`` if it is a valid mapping of tags; else a TypeError or ValueError
    that names the bad key or value and ``where`` it was given."""
    if not isinstance(tags, Mapping):
        raise TypeError(f"{where}: tags must be a dict of str to str, got {type(tags).__name__}")
    if len(tags) > MAX_TAGS:
        raise ValueError(f"{where}: at most {MAX_TAGS} tags per run, got {len(tags)}")
    checked: dict[str, str] = {}
    for key, value in tags.items():
        if not isinstance(key, str):
            raise TypeError(f"{where}: a tag key must be a str, got {type(key).__name__} {key!r}")
        if not _KEY.fullmatch(key):
            raise ValueError(
                f"{where}: invalid tag key {key!r}: use 1 to 64 letters, digits, '_', '.' or '-'"
            )
        if not isinstance(value, str):
            raise TypeError(
                f"{where}: the value of tag {key!r} must be a str, got "
                f"{type(value).__name__} {value!r}"
            )
        if not value or len(value) > MAX_VALUE or not value.isprintable():
            raise ValueError(
                f"{where}: invalid value {value!r} of tag {key!r}: use 1 to {MAX_VALUE} "
                "printable characters"
            )
        checked[key] = value
    return checked


@step(name="worldflow.set_tags", max_retries=10, retry_delay="200ms")
async def _set_tags_step(tags: dict[str, str]) -> None:
    from ._api import _runtime
    from ._attempts import get_step_metadata

    run_id = get_step_metadata().run_id
    await (await _runtime()).world.storage.set_tags(run_id, tags)


async def set_tags(tags: Mapping[str, str]) -> None:
    """Add tags to the running workflow's run (a key it has gets the new value): they
    are stored in the World's tag index, so ``wf.list_runs(tags=...)`` finds the run.

    >>> @wf.workflow
    ... async def order(order_id: str) -> None:
    ...     customer = await lookup(order_id)
    ...     await wf.set_tags({"customer": customer})

    Recorded in the log (it is a step, ``worldflow.set_tags``): a replay does not
    write again. Outside a workflow it is an error: tag a run at ``wf.start``.
    """
    from ._loop import current_instance

    checked = check_tags(tags, "wf.set_tags()")
    if current_instance() is None:
        raise RuntimeError(
            "wf.set_tags() can only be called inside a workflow; tag a run when starting "
            "it with wf.start(..., tags={...})"
        )
    await _set_tags_step(checked)
