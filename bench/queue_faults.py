"""Queue faults: every message duplicated, reordered and delayed by a random 0-2 s,
on every World; the logs must be the same as with a well-behaved queue.

    python bench/queue_faults.py                    # every World, 2 s
    python bench/queue_faults.py --delay 0.5 local postgres

Runs the conformance test ``test_a_chaotic_queue_leaves_the_same_log`` (warm and
always-replaying) of each World's test module with ``WORLDFLOW_CHAOS_DELAY``:
the scenario (steps, a retry, hooks with two payloads and a sleep, a cancel,
a wake) first on the World as it is, then through
``worldflow.testing.chaotic(world, max_delay=DELAY)``, which sends every
message twice, each copy late by its own random delay, and hands every
delivery to the engine twice, each late again. The test compares the two
runs' normalized logs. Prints a line per World: passed or not, and the time.
The default test run does the same with 0.1 s.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

MODULES = {
    "local": "tests/worlds/test_local_conformance.py",
    "postgres": "tests/worlds/test_postgres_conformance.py",
    "memory": "tests/worlds/test_memory_world.py",
    "bridged": "tests/worlds/test_engine_bridges.py",
    "aws": "tests/worlds/test_aws_conformance.py",
    "gcp": "tests/worlds/test_gcp_conformance.py",
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "worlds", nargs="*", metavar="WORLD", help=f"of {', '.join(MODULES)} (default all)"
    )
    parser.add_argument("--delay", type=float, default=2.0, help="the longest delay, seconds")
    args = parser.parse_args()
    env = {
        **os.environ,
        "WORLDFLOW_CHAOS_DELAY": str(args.delay),
        # The scenario's waits, and the test's, grow with the delays.
        "WORLDFLOW_TEST_TIMEOUT_SCALE": str(max(1.0, 10 * args.delay)),
    }
    print(f"every message twice, each copy and each delivery late by 0-{args.delay:g} s")
    print(f"{'world':<10} {'result':<28} {'time':>8}")
    failed = 0
    unknown = [w for w in args.worlds if w not in MODULES]
    if unknown:
        parser.error(f"unknown world(s) {unknown}; choose from {list(MODULES)}")
    for world in args.worlds or list(MODULES):
        began = time.monotonic()
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest",
                "-q",
                "-p",
                "no:cacheprovider",
                MODULES[world],
                "-k",
                "test_a_chaotic_queue_leaves_the_same_log",
                "--timeout",
                "900",
            ],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        summary = (done.stdout.strip().splitlines() or ["no output"])[-1].strip("= ")
        summary = summary.split(" in ")[0]
        failed += done.returncode != 0
        print(f"{world:<10} {summary[:28]:<28} {time.monotonic() - began:7.1f}s")
        if done.returncode != 0:
            print(done.stdout[-3000:], file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
