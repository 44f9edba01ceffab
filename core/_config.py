"""Choosing a World from configuration, never from workflow code.

``WORLDFLOW_WORLD=local|aws|gcp|module:factory`` (default ``local``), or
``world = "..."`` under ``[tool.worldflow]`` in ``pyproject.toml``. Each
world's settings come from ``WORLDFLOW_<WORLD>_*`` variables (and
``WORLDFLOW_DATA_DIR`` for local) over ``[tool.worldflow.<world>]``.
Third-party worlds register in the entry-point group ``worldflow.worlds``.
"""

from __future__ import annotations

import importlib
import os
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ._world import World

__all__ = ["KNOWN_WORLDS", "create_world", "load_settings", "world_name"]

#: name -> (factory path, extra to install)
KNOWN_WORLDS: dict[str, tuple[str, str | None]] = {
    "local": ("worldflow.worlds.local:create_world", None),
    "aws": ("worldflow.worlds.aws:create_world", "aws"),
    "gcp": ("worldflow.worlds.gcp:create_world", "gcp"),
    "postgres": ("worldflow.worlds.postgres:create_world", "postgres"),
}

# Settings that keep their own names rather than WORLDFLOW_<WORLD>_*.
_SHARED = {"local": {"WORLDFLOW_DATA_DIR": "data_dir"}}


def _pyproject(start: Path | None = None) -> dict[str, Any]:
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        candidate = folder / "pyproject.toml"
        if candidate.is_file():
            with candidate.open("rb") as fh:
                try:
                    data = tomllib.load(fh)
                except tomllib.TOMLDecodeError as exc:
                    raise ValueError(f"cannot read {candidate}: {exc}") from exc
            section = data.get("tool", {}).get("worldflow", {})
            return section if isinstance(section, dict) else {}
    return {}


def world_name(env: Mapping[str, str] | None = None) -> str:
    env = os.environ if env is None else env
    return env.get("WORLDFLOW_WORLD") or str(_pyproject().get("world", "local"))


def load_settings(name: str, env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The settings of world ``name``: pyproject values, overridden by the environment."""
    env = os.environ if env is None else env
    section = _pyproject().get(name, {})
    settings = (
        {str(k).lower(): str(v) for k, v in section.items()} if isinstance(section, dict) else {}
    )
    prefix = f"WORLDFLOW_{name.upper()}_"
    for key, value in env.items():
        if key.startswith(prefix):
            settings[key[len(prefix) :].lower()] = value
    for key, setting in _SHARED.get(name, {}).items():
        if key in env:
            settings[setting] = env[key]
    for key in (
        "WORLDFLOW_MODULES",
        "WORLDFLOW_PUBLIC_URL",
        "WORLDFLOW_RETENTION",
        "WORLDFLOW_MAX_DELIVERIES",
    ):
        if key in env:
            settings[key[len("WORLDFLOW_") :].lower()] = env[key]
    return settings


def _factory(name: str) -> Callable[[dict[str, str]], World]:
    extra: str | None = None
    if name in KNOWN_WORLDS:
        path, extra = KNOWN_WORLDS[name]
    elif ":" in name:
        path = name
    else:
        from importlib import metadata  # only here: it costs ~15 ms to import

        found = [ep for ep in metadata.entry_points(group="worldflow.worlds") if ep.name == name]
        if not found:
            known = ", ".join(sorted(KNOWN_WORLDS))
            raise ValueError(
                f"unknown world {name!r}: use one of {known}, a 'module:factory' path, or "
                "install a package that registers it in the 'worldflow.worlds' entry points"
            )
        return found[0].load()  # type: ignore[no-any-return]
    module_name, _, attr = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        hint = f"; install it with: pip install 'worldflow[{extra}]'" if extra else ""
        raise ImportError(f"the {name!r} world needs {exc.name or module_name!r}{hint}") from exc
    try:
        return getattr(module, attr)  # type: ignore[no-any-return]
    except AttributeError:
        if name in KNOWN_WORLDS:
            raise ValueError(
                f"the {name!r} world is not available in this version of worldflow yet; "
                "use WORLDFLOW_WORLD=local"
            ) from None
        raise ValueError(f"world factory {path!r}: {module_name} has no {attr!r}") from None


def create_world(
    name: str | None = None, env: Mapping[str, str] | None = None, *, read_only: bool = False
) -> World:
    """Build the configured World (not started).

    ``read_only``: for tools that only look (the CLI's ``runs`` commands): a
    World that can should then create nothing (the local world leaves an
    absent data directory absent and reads it as empty).
    """
    name = name or world_name(env)
    key = name if name in KNOWN_WORLDS else name.rpartition(":")[0].rpartition(".")[2] or name
    settings = load_settings(key, env)
    if read_only:
        settings["read_only"] = "1"
    return apply_shared_settings(_factory(name)(settings), settings)


def apply_shared_settings(world: World, settings: Mapping[str, str]) -> World:
    """Set on ``world`` what every World takes from the shared settings (from
    :func:`load_settings`): ``retention`` (``WORLDFLOW_RETENTION``) and
    ``max_deliveries`` (``WORLDFLOW_MAX_DELIVERIES``). A host that builds its
    World with its own factory (the Lambda handler) calls this; returns the World."""
    if settings.get("retention"):
        from ._duration import parse_duration

        world.retention = parse_duration(settings["retention"], what="WORLDFLOW_RETENTION")
    if settings.get("max_deliveries"):
        text = settings["max_deliveries"].strip()
        if not (text.isascii() and text.isdigit() and 1 <= int(text) <= 1000):
            raise ValueError(
                f"WORLDFLOW_MAX_DELIVERIES must be a whole number from 1 to 1000, got {text!r}"
            )
        world.max_deliveries = int(text)
    return world
