"""kill -9 the worker running a remote step's attempt; another worker process takes the
step's message and finishes the run (the queue is the lease of a remote attempt).

The scene of ``test_local_crash`` (real worker processes on one data directory).
"""

from __future__ import annotations

import importlib.util
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

# The crash tests' scene, loaded from its file (test modules are not a package).
_spec = importlib.util.spec_from_file_location(
    "_local_crash_scene_remote", Path(__file__).with_name("test_local_crash.py")
)
assert _spec is not None and _spec.loader is not None
_crash = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_crash)
Scene = _crash.Scene

pytestmark = [pytest.mark.crash, pytest.mark.slow]

REMOTE_FLOWS = (
    textwrap.dedent(_crash.FLOWS)
    + """
@wf.step(remote=True)
def slow_remote(name):
    mark(f"run {name} {wf.get_step_metadata().attempt} {os.getpid()}")
    while not os.path.exists(LOG + ".go"):
        time.sleep(0.02)
    return name + "!"

@wf.step(remote=True)
async def fast_remote(name):
    mark(f"run {name} {wf.get_step_metadata().attempt} {os.getpid()}")
    return name

@wf.workflow
async def mid_remote():
    a = await fast_remote("one")
    b, c = await asyncio.gather(slow_remote("two"), fast_remote("three"))
    return [a, b, c]
"""
)


@pytest.fixture
def scene(tmp_path: Path) -> Iterator[Scene]:
    s = Scene(tmp_path)
    (tmp_path / "crashflows.py").write_text(REMOTE_FLOWS)
    yield s
    for proc in s.procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        for stream in (proc.stdout, proc.stderr):
            if stream:
                stream.close()


def test_kill_the_worker_running_a_remote_step(scene: Scene) -> None:
    first = scene.worker("start:mid_remote")
    scene.wait(
        "the remote step to start",
        lambda: "two" in {line.split()[1] for line in scene.executions()},
    )
    killed_pid = next(line.split()[3] for line in scene.executions() if line.split()[1] == "two")
    assert killed_pid == str(first.pid)  # the only worker took it
    recorded = scene.completed_steps()
    scene.kill(first)
    second = scene.worker("idle")
    (scene.dir / "steps.log.go").write_text("")
    scene.wait("the run to finish", _crash._finished(scene), timeout=40)
    assert scene.result() == ["one", "two!", "three"]
    runs = [line.split() for line in scene.executions()]
    twos = [r for r in runs if r[1] == "two"]
    # Cut short with its worker, the attempt ran again in the second worker: the same
    # attempt (its message came back), recorded once.
    assert [r[3] for r in twos][-1] == str(second.pid)
    assert all(r[2] == "1" for r in twos)
    _crash._check_no_rerun(scene, recorded)
    completed = [d["cid"] for k, d in scene.events() if k == "step_completed"]
    assert sorted(completed) == [1, 2, 3]
    started = [(d["cid"], d["remote"]) for k, d in scene.events() if k == "step_started"]
    assert sorted(started) == [(1, True), (2, True), (3, True)]
