"""Remote steps: a gather over CPU-bound steps on 1 and 4 worker processes, and the
billable calls a remote step adds on AWS (run by hand, prints figures).

    python bench/remote_steps.py [--steps 200] [--work-ms 40] [--no-aws]

1. Local world, wall clock: one run gathering N CPU-bound ``def`` steps (each a
   hash loop of about ``--work-ms`` on this machine), executed by 1 and by 4
   ``wf.worker`` processes over one data directory (the client that starts it
   serves nothing). Inline steps all run in the process that replays the run
   (threads under one GIL); remote ones are taken by whichever worker is free.
2. AWS (moto), calls per step: a run of N sequential steps executed through the
   Lambda host (every SQS record one invocation), inline and with
   ``WORLDFLOW_REMOTE_STEPS=1``; the difference per step is what a remote step
   adds (API calls, and invocations: records handed to ``lambda_handler``).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import hashlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import worldflow as wf
from worldflow.worlds.local import LocalWorld

WORK_MS = float(os.environ.get("BENCH_WORK_MS", "40"))
_ROUNDS: list[int] = []


def _burn(ms: float) -> int:
    """About ``ms`` of CPU: a hash loop calibrated once per process."""
    if not _ROUNDS:
        start, n = time.perf_counter(), 20_000
        digest = b"x"
        for _ in range(n):
            digest = hashlib.sha256(digest).digest()
        _ROUNDS.append(max(1, int(n * (ms / 1000) / (time.perf_counter() - start))))
    digest = b"x"
    for _ in range(_ROUNDS[0]):
        digest = hashlib.sha256(digest).digest()
    return digest[0]


@wf.step(remote=True, name="bench-remote.crunch")
def crunch(i: int) -> int:
    return _burn(WORK_MS) + i


@wf.step(remote=False, name="bench-remote.crunch-inline")
def crunch_inline(i: int) -> int:
    return _burn(WORK_MS) + i


@wf.workflow(name="bench-remote.fanout")
async def fanout(n: int, remote: bool) -> int:
    step = crunch if remote else crunch_inline
    return len(await asyncio.gather(*(step(i) for i in range(n))))


@wf.step(name="bench-remote.noop")
async def noop(i: int) -> int:
    return i


@wf.workflow(name="bench-remote.sequential")
async def sequential(n: int) -> int:
    total = 0
    for i in range(n):
        total += await noop(i)
    return total


# -- 1. local world, 1 and 4 worker processes -------------------------------------------
def _serve(directory: str) -> None:
    async def main() -> None:
        async with wf.worker(LocalWorld(directory)):
            await asyncio.Event().wait()

    asyncio.run(main())


def local_wall(n: int, workers: int, remote: bool) -> float:
    with tempfile.TemporaryDirectory() as directory:
        LocalWorld(directory)  # create the database before the workers race to
        procs = [
            subprocess.Popen([sys.executable, __file__, "--serve", directory])
            for _ in range(workers)
        ]
        try:
            time.sleep(1.5)  # every worker heartbeating

            async def main() -> float:
                wf.configure(world=lambda: LocalWorld(directory), serve="never")  # a client
                start = time.perf_counter()
                run = await wf.start(fanout, n, remote)
                assert await run.result(timeout=600) == n
                return time.perf_counter() - start

            return asyncio.run(main())
        finally:
            for p in procs:
                p.terminate()
            for p in procs:
                p.wait(timeout=30)


# -- 2. AWS calls per remote step ------------------------------------------------------------
def aws_calls(n: int) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import logging

    from bench_aws import Counter, _result, _start, _world

    from worldflow.worlds.aws import _host, setup
    from worldflow.worlds.aws.testing import LambdaHarness, MotoServer

    logging.disable(logging.WARNING)
    os.environ["POWERTOOLS_METRICS_DISABLED"] = "true"
    with MotoServer() as moto:
        os.environ.update(moto.env())
        settings = setup("bench", session=moto.session(), endpoint_url=moto.url)
        os.environ.update(settings)
        wf.configure(world="aws", serve="auto")  # not the local world of part 1

        def calls(steps: int) -> tuple[collections.Counter[str], int]:
            session = moto.session()
            counter = Counter(session)
            _host.install(_host.LambdaHost(lambda: _world(moto, settings, session, poll=False)))
            mapping = moto.session()
            esm = Counter(mapping)
            harness = LambdaHarness(settings["WORLDFLOW_AWS_QUEUE_URL"], mapping, moto.url)
            _start(sequential, 0)  # a warm process
            while harness.poll_once():
                pass
            run_id = _start(sequential, steps)
            before, esm_before = counter.snapshot(), esm.snapshot()
            invocations = 0
            while harness.poll_once():
                invocations += 1
            used = (counter.snapshot() - before) + (esm.snapshot() - esm_before)
            used["sqs:ReceiveMessage"] -= 1
            assert _result(run_id) == sum(range(steps))
            _host.reset()
            return used, invocations

        for mode in ("inline", "remote"):
            if mode == "remote":
                os.environ["WORLDFLOW_REMOTE_STEPS"] = "1"
            zero, zero_inv = calls(0)
            many, many_inv = calls(n)
            extra = collections.Counter(many)
            extra.subtract(zero)
            per = {k: round(v / n, 2) for k, v in sorted(extra.items()) if v}
            total = sum(extra.values()) / n
            print(
                f"  {mode}: {total:.2f} calls per sequential step {per}; "
                f"invocations {(many_inv - zero_inv) / n:.2f} per step"
            )
        os.environ.pop("WORLDFLOW_REMOTE_STEPS", None)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--serve")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--work-ms", type=float, default=WORK_MS)
    parser.add_argument("--no-aws", action="store_true")
    parser.add_argument("--no-local", action="store_true")
    args = parser.parse_args()
    if args.serve:
        _serve(args.serve)
        return
    os.environ["BENCH_WORK_MS"] = str(args.work_ms)
    if not args.no_local:
        print(f"== local world: gather over {args.steps} CPU-bound steps of ~{args.work_ms} ms")
        print(f"   ({os.cpu_count()} CPUs on this machine)")
        for remote, workers in ((False, 1), (True, 1), (True, 4)):
            wall = local_wall(args.steps, workers, remote)
            label = "remote" if remote else "inline"
            print(f"  {label}, {workers} worker process(es): {wall:.2f} s")
    if not args.no_aws:
        print("== aws (moto, through the Lambda host): calls per sequential no-op step")
        aws_calls(10)


if __name__ == "__main__":
    main()
