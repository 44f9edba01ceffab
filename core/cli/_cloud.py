"""Commands a World brings: ``worldflow setup WORLD``, ``worldflow package WORLD``, ...

A World registers its commands where it registers itself: its package (the
module of its factory, ``worldflow.worlds.<name>`` for the built-in worlds, or
the module an entry point of the ``worldflow.worlds`` group names) has a
``CLI_COMMANDS`` mapping of command name to ``"module:attribute"``, an object
with ``help``, ``description``, ``add_arguments(parser)`` and ``run(args) ->
int`` (:class:`worldflow.cli.WorldCommand`). Nothing of a World's SDK is
imported until its command runs; a World whose package cannot be imported
(its extra is missing) still gets its commands listed only if the package
itself imports, which the built-in worlds' do without their SDKs.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable, Iterator
from typing import Any

from ._common import CliError

__all__ = ["add_world_commands", "world_commands"]

_SUMMARIES = {
    "setup": "create a world's resources (development and tests) and print the settings",
    "package": "build a world's deployment artifact from a project, print how to deploy it",
}


def _load(spec: str) -> Any:
    module, _, attribute = spec.partition(":")
    loaded = importlib.import_module(module)
    return getattr(loaded, attribute) if attribute else loaded


def _world_packages() -> Iterator[tuple[str, str]]:
    """(world name, package module) for every world this installation knows."""
    from worldflow._config import KNOWN_WORLDS

    for name, (path, _) in KNOWN_WORLDS.items():
        yield name, path.partition(":")[0]
    from importlib import metadata

    for ep in metadata.entry_points(group="worldflow.worlds"):
        if ep.name not in KNOWN_WORLDS:
            yield ep.name, ep.value.partition(":")[0]


class _Broken:
    """Stands in for a command whose module does not import."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        self.help = self.description = f"(unavailable: {reason})"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)

    def run(self, args: argparse.Namespace) -> int:
        raise CliError(self.reason)


def world_commands() -> dict[str, dict[str, str]]:
    """command -> world -> the ``"module:attribute"`` that provides it."""
    found: dict[str, dict[str, str]] = {}
    for world, package in _world_packages():
        try:
            commands = getattr(importlib.import_module(package), "CLI_COMMANDS", {})
        except ImportError:
            continue  # a third-party world that does not import here: no commands
        for command, spec in commands.items():
            found.setdefault(command, {})[world] = spec
    return found


def add_world_commands(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    command: Callable[..., argparse.ArgumentParser],
) -> None:
    """Register each world command (``setup``, ``package``...) with a sub-command per world."""
    for name, providers in sorted(world_commands().items()):
        summary = _SUMMARIES.get(name, f"the worlds' {name!r} commands")
        parent = commands.add_parser(name, help=summary, description=summary)
        worlds = parent.add_subparsers(title="worlds", metavar="WORLD", required=True)
        for world, spec in sorted(providers.items()):
            try:
                provider = _load(spec)
            except (ImportError, AttributeError) as exc:
                # One world's broken command must not take the whole CLI down: say so
                # when (and only when) that command is asked for.
                provider = _Broken(f"`worldflow {name} {world}` cannot be loaded: {exc}")

            def handler(args: argparse.Namespace, _p: Any = provider) -> int:
                try:
                    return int(_p.run(args))
                except ImportError as exc:
                    raise CliError(
                        f"`worldflow {args.command_name}` needs {exc.name!r}: "
                        f"pip install 'worldflow[{args.world_name}]'"
                    ) from exc

            sub = command(worlds, world, handler, provider.help, provider.description)
            sub.set_defaults(command_name=f"{name} {world}", world_name=world)
            provider.add_arguments(sub)
