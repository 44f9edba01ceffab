"""A workflow whose first step attempt hangs, for the crash test (imported by a service
process through WORLDFLOW_MODULES, and by the test to name it)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import worldflow as wf


@wf.step(name="crash.slow", max_retries=3, retry_delay=0)
def slow(marker: str) -> int:
    attempt = wf.get_step_metadata().attempt
    Path(marker, f"attempt-{attempt}-pid-{os.getpid()}").touch()
    if attempt == 1:
        time.sleep(600)  # the service is killed meanwhile (a daemon thread)
    return attempt


@wf.workflow(name="crash.flow")
async def flow(marker: str) -> int:
    return await slow(marker)
