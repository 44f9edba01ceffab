"""``worldflow dlq list|redrive``: the messages the engine gave up on.

A message whose handling fails ``WORLDFLOW_MAX_DELIVERIES`` times (a
workflow no deployed module defines, a bug that raises on every delivery)
is set aside by a World that keeps dead letters (an SQS dead-letter queue,
a Firestore collection) instead of being retried for ever. Once the cause
is fixed (the module deployed, the bug fixed), ``redrive`` sends the
messages again as first deliveries; the engine is idempotent, so a letter
whose effect was applied in the meantime does no harm.
"""

from __future__ import annotations

import argparse
import asyncio

from rich import box
from rich.table import Table
from rich.text import Text

from worldflow._world import DeadLetter, DeadLetters

from ._common import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    CliError,
    console,
    iso,
    local_time,
    open_world,
    say,
    short,
    write_json,
)

__all__ = ["list_dead_letters", "redrive_dead_letters"]


def _dead_letters(world: object) -> DeadLetters:
    letters = getattr(world, "dead_letters", None)
    if letters is None:
        name = getattr(world, "name", "this")
        raise CliError(
            f"the {name} world keeps no dead letters: a message that fails is retried, "
            "with a backoff, until it succeeds"
        )
    assert isinstance(letters, DeadLetters)
    return letters


def _document(letter: DeadLetter) -> dict[str, object]:
    m = letter.message.message
    return {
        "id": letter.id,
        "run_id": m.run_id,
        "kind": m.kind,
        "message_id": m.id,
        "attempts": letter.attempts,
        "at": iso(letter.at),
        "reason": letter.reason,
    }


def list_dead_letters(args: argparse.Namespace) -> int:
    """``worldflow dlq list``: the dead letters, oldest first."""

    async def read() -> list[DeadLetter]:
        async with open_world() as backend:
            return await _dead_letters(backend.world).dead_letters(args.limit)

    letters = asyncio.run(read())
    if args.json:
        write_json([_document(letter) for letter in letters])
        return EXIT_OK
    if not letters:
        say("no dead letters")
        return EXIT_OK
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
    table.add_column("ID", overflow="fold")
    table.add_column("RUN", no_wrap=True)
    table.add_column("KIND", no_wrap=True)
    table.add_column("TRIES", justify="right")
    table.add_column("SINCE", no_wrap=True)
    table.add_column("REASON", overflow="fold")
    for letter in letters:
        m = letter.message.message
        table.add_row(
            letter.id,
            m.run_id,
            m.kind,
            str(letter.attempts),
            local_time(letter.at),
            Text(short(letter.reason, 120)),
        )
    console().print(table)
    return EXIT_OK


def redrive_dead_letters(args: argparse.Namespace) -> int:
    """``worldflow dlq redrive ID... | --all``: send dead letters to the queue again."""
    if not args.ids and not args.all:
        raise CliError(
            "name the dead letters to send again (IDs from `dlq list`), or --all", EXIT_USAGE
        )
    if args.ids and args.all:
        raise CliError("give IDs or --all, not both", EXIT_USAGE)

    async def redrive() -> int:
        async with open_world(read_only=False) as backend:
            return await _dead_letters(backend.world).redrive(None if args.all else args.ids)

    sent = asyncio.run(redrive())
    if args.json:
        write_json({"redriven": sent})
    else:
        say(f"sent {sent} dead letter(s) to the queue again")
    if args.ids and sent < len(set(args.ids)):
        say(f"{len(set(args.ids)) - sent} of the IDs named are not dead letters (any more)")
        return EXIT_FAILED
    return EXIT_OK
