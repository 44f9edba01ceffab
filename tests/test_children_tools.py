"""The tree of child runs in the tools: ``run.children()``, ``runs show`` (text and JSON),
``runs events``, and the web UI's run page."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

import worldflow as wf
from worldflow._inspect import inspect_run
from worldflow.cli import main
from worldflow.testing import _workflows_children as c
from worldflow.web._pages import run_body
from worldflow.worlds.local import LocalWorld


@pytest.fixture
def family_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    data = tmp_path / "data"
    monkeypatch.setenv("WORLDFLOW_MODULES", "")

    async def run() -> None:
        async with wf.worker(LocalWorld(data)):
            family = await wf.start(c.family, "tools", id="fam")
            await family.result(timeout=20)

    asyncio.run(run())
    return data


def test_runs_show_draws_the_tree(family_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--data-dir", str(family_run), "runs", "show", "fam"]) == 0
    out = capsys.readouterr().out
    assert "children" in out
    tree = out[out.index("children") :].split("result")[0]
    lines = [line for line in tree.splitlines() if "fam-c" in line]
    assert [line.split()[0] for line in lines] == [
        "fam-c1",
        "fam-c2",
        "fam-c3",
        "fam-c4",
        "fam-c4-c1",  # a grandchild, indented under its parent
        "fam-c4-c2",
    ]
    assert lines[2].split()[-1] == "failed" and lines[4].startswith("    fam-c4-c1")

    assert main(["--data-dir", str(family_run), "runs", "show", "fam", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["parent"] is None
    assert [(k["id"], k["status"]) for k in doc["children"]] == [
        ("fam-c1", "completed"),
        ("fam-c2", "completed"),
        ("fam-c3", "failed"),
        ("fam-c4", "completed"),
    ]
    assert main(["--data-dir", str(family_run), "runs", "show", "fam-c4", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["parent"] == "fam"

    assert main(["--data-dir", str(family_run), "runs", "events", "fam"]) == 0
    out = capsys.readouterr().out
    assert "as run fam-c1" in out and "fam-c3 failed:" in out and "KidError" in out


def test_the_run_page_lists_children_and_links_the_parent(family_run: Path) -> None:
    async def details() -> tuple[str, str]:
        world = LocalWorld(family_run)
        try:
            pages = []
            for run_id in ("fam", "fam-c4"):
                info = await world.storage.get_run(run_id)
                assert info is not None
                events = (await world.storage.read_log(run_id)).events
                pages.append(run_body(inspect_run(info, events), time.time()))
            return pages[0], pages[1]
        finally:
            await world.close()

    parent, child = asyncio.run(details())
    assert "<h2>Children</h2>" in parent
    for k in ("fam-c1", "fam-c2", "fam-c3", "fam-c4"):
        assert f'href="/runs/{k}"' in parent
    assert "status-failed" in parent
    assert '<dt>Parent</dt><dd><a href="/runs/fam">fam</a>' in child
    assert 'href="/runs/fam-c4-c1"' in child
