"""Benchmark recovery on the local world: a run's worker is killed, a new one finishes it.

    python bench/bench_recovery.py [--steps 1000] [--kill-at 500] [--lease 5]
    python bench/bench_recovery.py --world postgres [--url postgresql://...]

A worker process runs one workflow of ``--steps`` sequential no-op steps and is
sent SIGKILL while step ``--kill-at`` runs (its first attempt waits there to be
killed). A new worker process is then started on the same data directory;
figures:

- from the new process's spawn to the run's result (Python's start and imports
  included), and from its ``wf.worker()`` entry to the result;
- the remaining steps' own time (the same number of steps, run afresh in that
  process afterwards) and so the recovery's own cost: the difference;
- the at-least-once cost: step attempts that ran again (the one cut short).

Before worker locks (``worlds/*/_liveness.py``), the new worker waited out
the dead one's lease before adopting the run (local: 5 s by default; postgres:
10 s, the lease of the messages it had claimed and of its heartbeat). The
postgres world runs in a fresh database (``--url``, default the server on
127.0.0.1:5432), dropped afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

FLOWS = """
import asyncio, os
import worldflow as wf

KILL_AT = int(os.environ["BENCH_KILL_AT"])
MARK = os.environ["BENCH_MARK"]

@wf.step
async def noop(i):
    if i == KILL_AT and wf.get_step_metadata().attempt == 1:
        open(MARK, "w").close()
        await asyncio.sleep(3600)  # killed here
    return i

@wf.workflow(name="bench.recovery")
async def long_run(n):
    total = 0
    for i in range(n):
        total += await noop(i)
    return total
"""

RUNNER = """
import asyncio, json, sys, time
spawned = time.time()
import worldflow as wf
import recoveryflows

def world(data, lease):
    if data.startswith("postgresql://"):
        from worldflow.worlds.postgres import PostgresWorld
        return PostgresWorld(data, schema="bench", lease=lease, heartbeat=lease / 5,
                             serve_webhooks=False)
    from worldflow.worlds.local import LocalWorld
    return LocalWorld(data, lease=lease, serve_webhooks=False)

async def main():
    data, action, n, lease = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    imported = time.time()
    async with wf.worker(world(data, lease)):
        if action == "start":
            await wf.start(recoveryflows.long_run, n, id="bench-run")
            await asyncio.Event().wait()
        entered = time.time()
        run = wf.get_run("bench-run")
        result = await run.result(timeout=600)
        done = time.time()
        again = sum(
            1 for e in await run.events() if e.kind == "step_started" and e.data["attempt"] > 1
        )
        fresh = await wf.start(recoveryflows.long_run, n - recoveryflows.KILL_AT)
        t = time.perf_counter()
        await fresh.result(timeout=600)
        remaining = time.perf_counter() - t
    print(json.dumps({"result": result, "imported": imported - spawned, "entered": entered,
                      "done": done, "again": again, "remaining": remaining}), flush=True)

asyncio.run(main())
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--kill-at", type=int, default=500)
    parser.add_argument("--lease", type=float, default=None, help="the world's lease (s)")
    parser.add_argument("--world", choices=("local", "postgres"), default="local")
    parser.add_argument("--url", default=None, help="postgres: the server's URL")
    parser.add_argument("--repeat", type=int, default=3)
    options = parser.parse_args()
    if options.lease is None:
        options.lease = 5.0 if options.world == "local" else 10.0
    print(
        f"{options.world} world recovery: {options.steps} steps, SIGKILL at step {options.kill_at}, "
        f"lease {options.lease:g} s, Python {sys.version.split()[0]}"
    )
    for _ in range(options.repeat):
        if options.world == "local":
            once(options, None)
        else:
            from worldflow.worlds.postgres.testing import fresh_database

            with fresh_database(options.url) as url:
                once(options, url)


def once(options: argparse.Namespace, url: str | None) -> None:
    root = Path(tempfile.mkdtemp(prefix="worldflow-recovery-"))
    (root / "recoveryflows.py").write_text(textwrap.dedent(FLOWS))
    (root / "runner.py").write_text(textwrap.dedent(RUNNER))
    mark = root / "killed-here"
    env = {
        **os.environ,
        "PYTHONPATH": str(root),
        "BENCH_KILL_AT": str(options.kill_at),
        "BENCH_MARK": str(mark),
    }
    args = [url or str(root / "data"), "", str(options.steps), str(options.lease)]

    def spawn(action: str) -> subprocess.Popen[str]:
        args[1] = action
        return subprocess.Popen(
            [sys.executable, str(root / "runner.py"), *args],
            env=env,
            cwd=root,
            stdout=subprocess.PIPE,
            text=True,
        )

    first = spawn("start")
    deadline = time.monotonic() + 120
    while not mark.exists():
        if first.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"the first worker stopped before step {options.kill_at}")
        time.sleep(0.005)
    first.send_signal(signal.SIGKILL)
    first.wait()
    spawned = time.time()
    second = spawn("finish")
    out, _ = second.communicate(timeout=600)
    figures = json.loads(out.strip().splitlines()[-1])
    expected = sum(range(options.steps))
    if figures["result"] != expected:
        raise SystemExit(f"wrong result {figures['result']} (expected {expected})")
    total = figures["done"] - spawned
    in_worker = figures["done"] - figures["entered"]
    remaining = figures["remaining"]
    print(
        f"  spawn -> result {total * 1000:7.0f} ms  (imports {figures['imported'] * 1000:4.0f} ms)"
        f"   worker entry -> result {in_worker * 1000:6.0f} ms"
        f"   remaining {options.steps - options.kill_at} steps alone {remaining * 1000:5.0f} ms"
        f"   recovery's own cost {(in_worker - remaining) * 1000:6.0f} ms"
        f"   attempts run again: {figures['again']}"
    )


if __name__ == "__main__":
    main()
