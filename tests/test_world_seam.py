"""The World seam is public and whole: worlds import only ``worldflow.world`` and other
public names, never a private core module."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import worldflow.world as seam

WORLDS = Path(__file__).resolve().parents[1] / "worlds"


def _private_imports(path: Path) -> list[str]:
    """Absolute imports of a private ``worldflow`` module (a segment starting with _),
    other than the file's own world package."""
    own = "worldflow.worlds." + path.relative_to(WORLDS).parts[0] if path.parent != WORLDS else ""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        for name in names:
            if not name.startswith("worldflow") or (own and name.startswith(own + ".")):
                continue
            if any(part.startswith("_") for part in name.split(".")[1:]):
                found.append(f"{path.relative_to(WORLDS.parent)}:{node.lineno}: {name}")
    return found


def test_no_world_imports_a_private_core_module() -> None:
    files = sorted(WORLDS.rglob("*.py"))
    assert len(files) > 10
    offences = [line for path in files for line in _private_imports(path)]
    assert offences == [], "worlds must import only public names:\n" + "\n".join(offences)


def test_the_checker_sees_a_private_import(tmp_path: Path) -> None:
    bad = WORLDS / "local" / "_zz_probe.py"
    bad.write_text("from worldflow._world import Append\nimport worldflow.cli._common\n")
    try:
        assert len(_private_imports(bad)) == 3
    finally:
        bad.unlink()


def _isort_key(name: str) -> tuple[int, str]:
    return (0 if name.isupper() else 1 if name[0].isupper() else 2, name)


def test_the_seam_module_is_curated() -> None:
    assert seam.__all__ == sorted(seam.__all__, key=_isort_key)
    for name in seam.__all__:
        assert getattr(seam, name) is not None, name
    for part in ("Storage", "Queue", "Workers", "Blobs", "Scheduler"):
        assert part in seam.__all__
    # Everything a World is built from is here; the engine's own modules stay private.
    assert not any(name.startswith("_") for name in seam.__all__)


def test_every_built_in_world_registers_its_commands_where_it_registers_itself() -> None:
    from worldflow.cli._cloud import world_commands

    commands = world_commands()
    assert set(commands["setup"]) >= {"aws", "gcp"}
    assert set(commands["package"]) >= {"aws", "gcp"}
    for providers in commands.values():
        for spec in providers.values():
            module, _, attribute = spec.partition(":")
            provider = getattr(importlib.import_module(module), attribute)
            assert provider.help and callable(provider.add_arguments) and callable(provider.run)
