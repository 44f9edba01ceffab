"""The blocking entry points (``wf.start_sync``, ``run.result_sync`` ...), as code
without an event loop uses them: a plain thread, a running event loop's thread, a
Flask app under a real WSGI server, a forked child (gunicorn's pre-fork workers).

Each scenario runs in a fresh interpreter: worldflow's background loop is one per
process, as it is in a web server.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

FLOWS = """
import worldflow as wf

@wf.step
def double(x: int) -> int:
    return 2 * x

@wf.workflow
async def twice(x: int) -> int:
    return await double(await double(x))

@wf.workflow
async def approval(order: str) -> dict:
    decision = await wf.create_hook(token=f"approve:{order}")
    return {"order": order, "decision": decision}

@wf.step
async def starts_from_a_step() -> str:  # an async step runs on worldflow's own loop
    try:
        wf.start_sync(twice, 1)
    except RuntimeError as exc:
        return str(exc)
    return "no error"

@wf.workflow
async def nested() -> str:
    return await starts_from_a_step()

@wf.workflow
async def busy(n: int) -> int:  # keeps the parent writing while it forks
    total = 0
    for i in range(n):
        total += await double(i)
    return total
"""


def _run(tmp_path: Path, script: str) -> dict[str, object]:
    (tmp_path / "flows.py").write_text(textwrap.dedent(FLOWS))
    (tmp_path / "main.py").write_text(textwrap.dedent(script))
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("WORLDFLOW_")},
        "WORLDFLOW_DATA_DIR": str(tmp_path / "data"),
        "PYTHONPATH": str(tmp_path),
    }
    done = subprocess.run(
        [sys.executable, str(tmp_path / "main.py")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_from_a_plain_script_and_threads(tmp_path: Path) -> None:
    out = _run(
        tmp_path,
        """
        import json, threading
        import worldflow as wf
        import flows

        run = wf.start_sync(flows.twice, 5)
        first = run.result_sync(timeout=30)
        status = run.status_sync()
        results = []
        def in_a_thread(i):
            results.append(wf.start_sync(flows.twice, i, id=f"t-{i}").result_sync(timeout=30))
        threads = [threading.Thread(target=in_a_thread, args=(i,)) for i in range(8)]
        for t in threads: t.start()
        for t in threads: t.join()
        # a hook resumed from sync code
        waiting = wf.start_sync(flows.approval, "o-1")
        while True:
            try:
                wf.resume_hook_sync("approve:o-1", "yes")
                break
            except wf.HookNotFound:
                pass
        approved = waiting.result_sync(timeout=30)
        try:
            wf.start_sync(flows.approval, "o-2").result_sync(timeout=0.2)
            timed_out = False
        except TimeoutError:
            timed_out = True
        inside = wf.start_sync(flows.nested).result_sync(timeout=30)
        print(json.dumps({"first": first, "status": status, "threads": sorted(results),
                          "approved": approved, "timed_out": timed_out, "inside": inside}))
        """,
    )
    assert out["first"] == 20 and out["status"] == "completed"
    assert out["threads"] == sorted(4 * i for i in range(8))
    assert out["approved"] == {"order": "o-1", "decision": "yes"}
    assert out["timed_out"] is True
    assert "cannot be called from worldflow's own event loop" in str(out["inside"])


def test_from_inside_a_running_event_loop(tmp_path: Path) -> None:
    """A sync helper called by async code: it blocks the caller's loop for the call,
    and works (the run is executed on worldflow's own loop, not the caller's)."""
    out = _run(
        tmp_path,
        """
        import asyncio, json
        import worldflow as wf
        import flows

        async def view():
            run = wf.start_sync(flows.twice, 3)
            return run.result_sync(timeout=30)

        print(json.dumps({"result": asyncio.run(view())}))
        """,
    )
    assert out == {"result": 12}


def test_in_forked_children(tmp_path: Path) -> None:
    """Pre-fork servers: the parent used worldflow, then forks; each child starts its
    own loop and runtime on first use and runs work of its own. The parent's loop
    is writing to the same database as it forks (a fork inside one of its write
    transactions left the child's SQLite "locked" for good)."""
    out = _run(
        tmp_path,
        """
        import json, os
        import worldflow as wf
        import flows

        parent = wf.start_sync(flows.twice, 1).result_sync(timeout=30)
        wf.start_sync(flows.busy, 100_000)
        children = []
        for i in range(12):
            r, w = os.pipe()
            pid = os.fork()
            if pid == 0:
                os.close(r)
                value = wf.start_sync(flows.twice, 10 + i).result_sync(timeout=30)
                os.write(w, json.dumps(value).encode())
                os._exit(0)
            os.close(w)
            with os.fdopen(r) as f:
                children.append(json.loads(f.read()))
            os.waitpid(pid, 0)
        after = wf.start_sync(flows.twice, 2).result_sync(timeout=30)
        print(json.dumps({"parent": parent, "children": children, "after": after}))
        """,
    )
    assert out == {"parent": 4, "children": [4 * (10 + i) for i in range(12)], "after": 8}


def test_a_flask_app_under_a_wsgi_server(tmp_path: Path) -> None:
    pytest.importorskip("flask")
    out = _run(
        tmp_path,
        """
        import json, threading, urllib.request
        from flask import Flask, jsonify, request
        from werkzeug.serving import make_server
        import worldflow as wf
        import flows

        app = Flask(__name__)

        @app.post("/orders/<order>")
        def place(order):
            run = wf.start_sync(flows.approval, order, id=f"order-{order}")
            return jsonify({"run": run.id, "status": run.status_sync()})

        @app.post("/orders/<order>/approve")
        def approve(order):
            wf.resume_hook_sync(f"approve:{order}", request.get_json()["decision"])
            return jsonify(wf.get_run(f"order-{order}").result_sync(timeout=30))

        server = make_server("127.0.0.1", 0, app, threaded=True)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        base = f"http://127.0.0.1:{server.server_port}"

        def post(path, body=None):
            req = urllib.request.Request(base + path, data=json.dumps(body or {}).encode(),
                                         headers={"Content-Type": "application/json"}, method="POST")
            with urllib.request.urlopen(req, timeout=30) as resp:
                return json.loads(resp.read())

        placed = post("/orders/7")
        import time
        for _ in range(200):  # the hook exists once the run has reached it
            try:
                approved = post("/orders/7/approve", {"decision": "ok"})
                break
            except urllib.error.HTTPError:
                time.sleep(0.05)
        server.shutdown()
        print(json.dumps({"placed": placed, "approved": approved}))
        """,
    )
    assert out["placed"] == {"run": "order-7", "status": out["placed"]["status"]}  # type: ignore[index]
    assert out["placed"]["status"] in ("pending", "running")  # type: ignore[index]
    assert out["approved"] == {"order": "7", "decision": "ok"}


APP = """
import os
from flask import Flask, jsonify, request
import worldflow as wf
import flows

app = Flask(__name__)

@app.post("/twice/<int:x>")
def twice(x):
    value = wf.start_sync(flows.twice, x).result_sync(timeout=30)
    return jsonify({"value": value, "pid": os.getpid()})

@app.post("/orders/<order>")
def place(order):
    run = wf.start_sync(flows.approval, order, id=f"order-{order}")
    return jsonify({"run": run.id})

@app.post("/orders/<order>/approve")
def approve(order):
    while True:
        try:
            wf.resume_hook_sync(f"approve:{order}", request.get_json()["decision"])
            break
        except wf.HookNotFound:
            pass
    return jsonify(wf.get_run(f"order-{order}").result_sync(timeout=30))
"""


@pytest.mark.parametrize("preload", [False, True], ids=["import-in-workers", "preload"])
def test_under_gunicorns_sync_workers(tmp_path: Path, preload: bool) -> None:
    """gunicorn's pre-fork sync workers, with the app imported in each worker or once in
    the master before the fork (``--preload``, where the master used worldflow first)."""
    pytest.importorskip("gunicorn")
    import socket
    import time
    import urllib.request

    (tmp_path / "flows.py").write_text(textwrap.dedent(FLOWS))
    app = APP
    if preload:  # the master process uses worldflow before it forks its workers
        app += "\nwf.start_sync(flows.twice, 0).result_sync(timeout=30)\n"
    (tmp_path / "app.py").write_text(textwrap.dedent(app))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("WORLDFLOW_")},
        "WORLDFLOW_DATA_DIR": str(tmp_path / "data"),
        "PYTHONPATH": str(tmp_path),
    }
    command = [sys.executable, "-m", "gunicorn", "-w", "3", "-k", "sync"]
    command += ["-b", f"127.0.0.1:{port}", "--timeout", "60"]
    command += ["--preload", "app:app"] if preload else ["app:app"]
    server = subprocess.Popen(
        command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    base = f"http://127.0.0.1:{port}"

    def post(path: str, body: object = None) -> object:
        data = json.dumps(body or {}).encode()
        req = urllib.request.Request(
            base + path, data=data, headers={"Content-Type": "application/json"}, method="POST"
        )
        with urllib.request.urlopen(req, timeout=60) as response:
            return json.loads(response.read())

    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    out = server.stdout.read().decode() if server.stdout else ""
                    raise AssertionError(f"gunicorn did not start:\n{out[-3000:]}") from None
                time.sleep(0.1)
        answers = [post(f"/twice/{x}") for x in range(12)]
        assert [a["value"] for a in answers] == [4 * x for x in range(12)]
        placed = post("/orders/o-7")
        assert placed == {"run": "order-o-7"}
        assert post("/orders/o-7/approve", {"decision": "yes"}) == {
            "order": "o-7",
            "decision": "yes",
        }
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
        if server.stdout:
            server.stdout.close()
