"""Workflows the GCP tests run in processes of their own (a service imports this module
through WORLDFLOW_MODULES; a script runs it), and the script itself:

    python -m gcp_support.flows plain              # start plain.flow, wait, print JSON
    python -m gcp_support.flows crash MARKER_DIR   # start crash.flow, wait (to be killed)
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path

import worldflow as wf


@wf.step(name="crash.slow", max_retries=3, retry_delay=0)
def slow(marker: str) -> int:
    attempt = wf.get_step_metadata().attempt
    Path(marker, f"attempt-{attempt}-pid-{os.getpid()}").touch()
    if attempt == 1:
        time.sleep(600)  # the process is killed meanwhile (a daemon thread)
    return attempt


@wf.workflow(name="crash.flow")
async def flow(marker: str) -> int:
    return await slow(marker)


@wf.step(name="plain.add")
def add(a: int, b: int) -> int:
    return a + b


@wf.workflow(name="plain.flow")
async def plain(n: int) -> int:
    total = 0
    for i in range(n):
        total = await add(total, i)
    await wf.sleep(0.5)  # a timer: a task through Cloud Tasks
    return await add(total, 100)


async def main(argv: list[str]) -> int:
    if argv[0] == "plain":
        run = await wf.start(plain, 4)
        result = await run.result(timeout=30)
    else:
        run = await wf.start(flow, argv[1])
        print(json.dumps({"run_id": run.id}), flush=True)
        result = await run.result(timeout=120)
    workers = [e.data["worker"] for e in await run.events() if e.kind == "step_started"]
    print(json.dumps({"run_id": run.id, "result": result, "pid": os.getpid(), "workers": workers}))
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))
