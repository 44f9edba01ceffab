"""``worldflow runs stream RUN_ID NAME``: print a run's stream, live, until the run ends.

Like the other ``runs`` views it never imports the user's modules: a chunk is
shown in its display form (a string as it is, anything else as JSON). Each
chunk is one line; ``--json`` prints one document at the end (the chunks and
where to go on from with ``--start``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from worldflow._errors import CorruptLogError, WorldError
from worldflow._json import loads as json_loads
from worldflow._streams import READ_LIMIT
from worldflow._world import TERMINAL

from ._common import EXIT_FAILED, EXIT_OK, CliError, display, open_world, write_json

__all__ = ["stream_run", "tag_filter"]


def tag_filter(text: str) -> tuple[str, str]:
    """``--tag KEY=VALUE`` as a pair (argparse's type: a bad one is a usage error)."""
    key, sep, value = text.partition("=")
    if not sep or not key or not value:
        raise argparse.ArgumentTypeError(f"a tag filter is KEY=VALUE, got {text!r}")
    return key, value


def _line(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def stream_run(args: argparse.Namespace) -> int:
    async def follow() -> tuple[list[Any], int]:
        chunks: list[Any] = []
        index = args.start
        delay = 0.05
        async with open_world() as backend:
            try:
                store = backend.world.stream_store()
            except NotImplementedError as exc:
                raise CliError(str(exc)) from None
            try:
                while True:
                    info = await backend.get_run(args.run_id)
                    if info is None:
                        raise CliError(f"no run {args.run_id!r}")
                    ended = info.status in TERMINAL or not args.follow
                    texts = await store.read_chunks(args.run_id, args.name, index, READ_LIMIT)
                    for offset, text in enumerate(texts):
                        where = f"chunk {index + offset} of stream {args.name!r}"
                        value = display(json_loads(text, where))
                        if args.json:
                            chunks.append(value)
                        else:
                            sys.stdout.write(_line(value) + "\n")
                    if texts and not args.json:
                        sys.stdout.flush()
                    index += len(texts)
                    if texts:
                        delay = 0.05
                        continue
                    if ended:
                        return chunks, index
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, args.interval)
            except (CorruptLogError, WorldError) as exc:
                raise CliError(f"cannot read stream {args.name!r}: {exc}") from None

    try:
        chunks, end = asyncio.run(follow())
    except KeyboardInterrupt:
        return EXIT_FAILED
    if args.json:
        write_json(
            {
                "run": args.run_id,
                "stream": args.name,
                "start": args.start,
                "next": end,
                "chunks": chunks,
            }
        )
    return EXIT_OK
