"""Choosing a World from configuration."""

from __future__ import annotations

from pathlib import Path

import pytest

from worldflow._config import create_world, load_settings, world_name
from worldflow.worlds.local import LocalWorld


def test_default_world_is_local(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert world_name({}) == "local"
    world = create_world(env={"WORLDFLOW_DATA_DIR": str(tmp_path / "d")})
    assert isinstance(world, LocalWorld)
    assert world.data_dir == tmp_path / "d"
    world.store.close()


def test_pyproject_settings_under_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "pyproject.toml").write_text(
        '[tool.worldflow]\nworld = "local"\n[tool.worldflow.local]\ndata_dir = "from-toml"\n'
    )
    monkeypatch.chdir(tmp_path)
    assert load_settings("local", {})["data_dir"] == "from-toml"
    assert load_settings("local", {"WORLDFLOW_DATA_DIR": "env"})["data_dir"] == "env"
    assert load_settings("aws", {"WORLDFLOW_AWS_TABLE": "t"})["table"] == "t"


def test_module_factory_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    world = create_world(
        "worldflow.worlds.local:create_world", env={"WORLDFLOW_DATA_DIR": str(tmp_path)}
    )
    assert isinstance(world, LocalWorld)
    world.store.close()


def test_unknown_world_names_the_choices() -> None:
    with pytest.raises(ValueError, match=r"unknown world 'mars'.*local"):
        create_world("mars", env={})


def test_bad_factory_path() -> None:
    with pytest.raises(ValueError, match="has no 'nope'"):
        create_world("worldflow.worlds.local:nope", env={})


def test_the_aws_world_without_settings_says_which_are_missing() -> None:
    with pytest.raises(ValueError, match="WORLDFLOW_AWS_TABLE, WORLDFLOW_AWS_QUEUE_URL"):
        create_world("aws", env={})


def test_read_only_creates_nothing(tmp_path: Path) -> None:
    world = create_world(env={"WORLDFLOW_DATA_DIR": str(tmp_path / "absent")}, read_only=True)
    assert isinstance(world, LocalWorld)
    assert not (tmp_path / "absent").exists()
    world.store.close()


def test_worldflow_modules_are_imported_when_a_worker_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import asyncio
    import sys

    import worldflow as wf

    (tmp_path / "flows_from_env.py").write_text(
        "import worldflow as wf\n\n@wf.workflow\nasync def from_env() -> str:\n    return 'ok'\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("WORLDFLOW_MODULES", "flows_from_env")

    async def main() -> object:
        async with wf.worker(LocalWorld(tmp_path / "data", serve_webhooks=False)):
            run = await wf.start("flows_from_env.from_env")  # by name: imported by the worker
            return await run.result(timeout=5)

    try:
        assert asyncio.run(main()) == "ok"
    finally:
        sys.modules.pop("flows_from_env", None)
