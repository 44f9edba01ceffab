"""kill -9 a worker while a child workflow is mid-step; a new process finishes parent and child.

The scene of ``test_local_crash`` (a real worker process on a data directory,
SIGKILLed at a chosen point) with a parent that calls a child workflow: the
child is started once, its recorded steps do not run again, and the parent
records the child's result once.
"""

from __future__ import annotations

import importlib.util
import json
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

# The crash tests' scene, loaded from its file (test modules are not a package).
_spec = importlib.util.spec_from_file_location(
    "_local_crash_scene", Path(__file__).with_name("test_local_crash.py")
)
assert _spec is not None and _spec.loader is not None
_crash = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_crash)
FLOWS: str = _crash.FLOWS
Scene = _crash.Scene

pytestmark = [pytest.mark.crash, pytest.mark.slow]

CHILD_FLOWS = (
    textwrap.dedent(FLOWS)
    + """
@wf.workflow
async def child_flow(x):
    a = await fast("c-one")
    b = await slow("c-two")
    c = await fast("c-three")
    return [x, a, b, c]

@wf.workflow
async def mid_child():
    a = await fast("p-one")
    r = await child_flow(7)
    b = await fast("p-two")
    return [a, r, b]
"""
)


@pytest.fixture
def scene(tmp_path: Path) -> Iterator[Scene]:
    s = Scene(tmp_path)
    (tmp_path / "crashflows.py").write_text(CHILD_FLOWS)
    yield s
    for proc in s.procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        for stream in (proc.stdout, proc.stderr):
            if stream:
                stream.close()


def _child_events(scene: Scene) -> list[tuple[str, dict[str, object]]]:
    rows = scene.query("SELECT kind, data FROM events WHERE run_id = 'crash-run-c2' ORDER BY seq")
    return [(str(kind), json.loads(str(data))) for kind, data in rows]


def test_kill_while_a_child_is_mid_step(scene: Scene) -> None:
    first = scene.worker("start:mid_child")
    scene.wait("the child's slow step to start", lambda: "run c-two 1" in scene.executions())
    scene.kill(first)
    assert next(k for k, _ in _child_events(scene)) == "run_created"
    scene.log.with_suffix(".log.go").touch()  # let the re-run of the slow step finish
    scene.worker("serve")
    scene.wait(
        "the parent to finish",
        lambda: bool(
            scene.query("SELECT 1 FROM runs WHERE id = 'crash-run' AND status = 'completed'")
        ),
        timeout=30,
    )
    assert scene.result() == ["p-one", [7, "c-one", "c-two!", "c-three"], "p-two"]
    runs = [line.split()[1] for line in scene.executions()]
    for name in ("p-one", "c-one", "c-three", "p-two"):
        assert runs.count(name) == 1, runs  # recorded before the kill, or after: once
    assert "run c-two 2" in scene.executions()  # the attempt cut short ran again
    kinds = [k for k, _ in scene.events()]
    assert kinds.count("child_started") == 1 and kinds.count("child_completed") == 1
    children = scene.query("SELECT id, status FROM runs WHERE id != 'crash-run'")
    assert children == [("crash-run-c2", "completed")]  # one child, started once
    child_kinds = [k for k, _ in _child_events(scene)]
    assert child_kinds.count("run_created") == 1 and child_kinds.count("run_started") == 1
