"""Count the AWS world's API calls, and time the Lambda handler's cold import (by hand).

    python bench/bench_aws.py            # against a moto server it starts itself

Calls are counted with botocore's ``before-call`` event on the session every
client is made from, per service and operation, so the figures are what AWS
would bill (moto only answers them).

1. Per sequential step, on "Lambda": a run of N steps started by a plain
   client, executed by one invocation of ``lambda_handler`` fed a real SQS
   record (the LambdaHarness), compared with a run of 0 steps:
   (calls(N) - calls(0)) / N; for a cold process (its first invocation) and a
   warm one.
2. Per sleep, on "Lambda": a 1-second, 1-hour, 1-day and 30-day sleep, from
   the invocation that starts the run to the one that ends it. A sleep past
   SQS's 15 minutes is one EventBridge Scheduler one-time schedule; moto never
   fires schedules, so the bench fires the due one (moto's Scheduler API: get,
   then SendMessage to the queue, counted as the one SQS request EventBridge
   makes) after moving the function's clock forward (a ShiftedClock: the
   World is on the wall clock, so SQS delays and schedules are used, but the
   bench need not wait a day). Without a scheduler such a sleep hops every
   15 minutes: one hop's calls are measured with SQS's 15 minutes made 1 s.
3. An idle poller worker (``worldflow worker``, not Lambda): its calls per
   period, measured with short settings, per day with the defaults.
4. Cold import: ``import worldflow.worlds.aws`` (Lambda's init) and the first
   invocation's extra imports (boto3, powertools), each in a fresh interpreter.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import math
import os
import statistics
import subprocess
import sys
import time
from typing import Any

import worldflow as wf
from worldflow.worlds.aws import AwsWorld, _host, _queue, setup
from worldflow.worlds.aws.testing import (
    LambdaHarness,
    MotoServer,
    ShiftedClock,
    fire_due_schedules,
)

#: Price per million requests (us-east-1, 2025): SQS standard.
SQS_PER_MILLION = 0.40


@wf.step
async def noop(i: int) -> int:
    return i


@wf.workflow(name="bench-aws.sequential")
async def sequential(n: int) -> int:
    total = 0
    for i in range(n):
        total += await noop(i)
    return total


@wf.workflow(name="bench-aws.nap")
async def nap(seconds: float = 3600.0) -> str:
    await wf.sleep(seconds)
    return "rested"


class Counter:
    def __init__(self, session: Any) -> None:
        self.calls: collections.Counter[str] = collections.Counter()
        session.events.register("before-call", self._count)

    def _count(self, model: Any, **_: Any) -> None:
        self.calls[f"{model.service_model.service_name}:{model.name}"] += 1

    def snapshot(self) -> collections.Counter[str]:
        return collections.Counter(self.calls)


def _world(moto: MotoServer, settings: dict[str, str], session: Any, **kw: Any) -> AwsWorld:
    return AwsWorld(
        settings["WORLDFLOW_AWS_TABLE"],
        settings["WORLDFLOW_AWS_QUEUE_URL"],
        settings["WORLDFLOW_AWS_BUCKET"],
        session=session,
        endpoint_url=moto.url,
        **kw,
    )


def _start(workflow: Any, *args: Any) -> str:
    """What a plain script does: wf.start on the configured (aws) world, serving nothing."""

    async def main() -> str:
        return (await wf.start(workflow, *args)).id

    return asyncio.run(main())


def _result(run_id: str) -> Any:
    async def main() -> Any:
        return await wf.get_run(run_id).result(timeout=10)

    return asyncio.run(main())


def lambda_calls(
    moto: MotoServer, settings: dict[str, str], n: int, *, warm: bool
) -> dict[str, int]:
    """The calls "Lambda" makes to execute one run of n sequential steps (one invocation),
    plus the event source mapping's receive and delete."""
    session = moto.session()
    counter = Counter(session)
    host = _host.LambdaHost(lambda: _world(moto, settings, session, poll=False))
    _host.install(host)
    mapping = moto.session()
    esm = Counter(mapping)
    harness = LambdaHarness(settings["WORLDFLOW_AWS_QUEUE_URL"], mapping, moto.url)
    if warm:  # a process that has served an invocation already
        _start(sequential, 0)
        while harness.poll_once():
            pass
    run_id = _start(sequential, n)
    before, esm_before = counter.snapshot(), esm.snapshot()
    while harness.poll_once():
        pass
    used = (counter.snapshot() - before) + (esm.snapshot() - esm_before)
    used["sqs:ReceiveMessage"] -= 1  # the empty poll that ended the loop
    assert _result(run_id) == sum(range(n))
    _host.reset()
    return {k: v for k, v in used.items() if v}


def lambda_hop_calls(moto: MotoServer, settings: dict[str, str], hops: int = 3) -> dict[str, float]:
    """The calls of one hop of a sleeping run's timer, on "Lambda", per hop."""
    session = moto.session()
    counter = Counter(session)
    _queue.MAX_DELAY = 1  # SQS's 15 minutes, made 1 s

    def make() -> AwsWorld:
        world = _world(moto, settings, session, poll=False)
        world.capabilities = dataclasses.replace(world.capabilities, max_delay=1.0)
        return world

    _host.install(_host.LambdaHost(make))
    mapping = moto.session()
    esm = Counter(mapping)
    harness = LambdaHarness(settings["WORLDFLOW_AWS_QUEUE_URL"], mapping, moto.url)
    _start(nap)
    while harness.poll_once():  # the start: the run goes to sleep
        pass
    before, esm_before = counter.snapshot(), esm.snapshot()
    done = empty = 0
    while done < hops:
        got = harness.poll_once()
        done += got
        empty += not got
    used = (counter.snapshot() - before) + (esm.snapshot() - esm_before)
    used["sqs:ReceiveMessage"] -= empty  # polls between hops (SQS's delay made 1 s)
    _host.reset()
    _queue.MAX_DELAY = 900
    return {k: v / hops for k, v in sorted(used.items()) if v}


def lambda_sleep_calls(
    moto: MotoServer, settings: dict[str, str], seconds: float
) -> tuple[dict[str, int], int]:
    """The calls and invocations of a run that sleeps ``seconds`` on "Lambda" (with the
    scheduler), from its first invocation to its last; the start itself (the client's
    calls) is left out, as it is the same for any sleep."""
    session = moto.session()
    queue_arn = session.client("sqs", endpoint_url=moto.url).get_queue_attributes(
        QueueUrl=settings["WORLDFLOW_AWS_QUEUE_URL"], AttributeNames=["QueueArn"]
    )["Attributes"]["QueueArn"]  # the template passes it (WORLDFLOW_AWS_QUEUE_ARN)
    counter = Counter(session)
    clock = ShiftedClock()

    def make() -> AwsWorld:
        return _world(
            moto,
            settings,
            session,
            poll=False,
            clock=clock,
            scheduler_role=settings["WORLDFLOW_AWS_SCHEDULER_ROLE"],
            schedule_group=settings["WORLDFLOW_AWS_SCHEDULE_GROUP"],
            queue_arn=queue_arn,
        )

    _host.install(_host.LambdaHost(make))
    mapping = moto.session()
    esm = Counter(mapping)
    harness = LambdaHarness(settings["WORLDFLOW_AWS_QUEUE_URL"], mapping, moto.url)
    run_id = _start(nap, seconds)
    before, esm_before = counter.snapshot(), esm.snapshot()
    empty = 0
    while harness.poll_once():  # the start: the run goes to sleep
        pass
    empty += 1
    clock.skip(seconds)
    eventbridge = fire_due_schedules(moto.session(), moto.url, clock.now())
    deadline = time.monotonic() + 30
    while harness.invocations < 2 and time.monotonic() < deadline:
        empty += not harness.poll_once()  # a 1 s sleep is an SQS delay: wait for it
    while harness.poll_once():
        pass
    empty += 1
    used = (counter.snapshot() - before) + (esm.snapshot() - esm_before)
    used["sqs:ReceiveMessage"] -= empty  # the empty polls that ended each loop
    if eventbridge:
        used["sqs:SendMessage (by EventBridge Scheduler)"] += eventbridge
    assert _result(run_id) == "rested"
    _host.reset()
    return {k: v for k, v in sorted(used.items()) if v}, harness.invocations


def idle_worker_calls(moto: MotoServer, settings: dict[str, str], seconds: float) -> dict[str, int]:
    """An idle poller worker's calls over ``seconds`` (poll 1 s, heartbeat 0.5 s, lease 2 s)."""
    session = moto.session()
    counter = Counter(session)
    world = _world(moto, settings, session, poll_wait=1, heartbeat=0.5, lease=2.0)

    async def main() -> collections.Counter[str]:
        async with wf.worker(world):
            before = counter.snapshot()
            await asyncio.sleep(seconds)
            return counter.snapshot() - before

    return dict(asyncio.run(main()))


def import_ms(code: str, runs: int = 7) -> float:
    def once(src: str) -> float:
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", src], check=True, env=os.environ.copy())
        return time.perf_counter() - start

    base = min(once("pass") for _ in range(runs))
    return (min(once(code) for _ in range(runs)) - base) * 1000


def _total(calls: dict[str, Any]) -> float:
    return float(sum(calls.values()))


def main() -> None:
    import logging

    logging.disable(logging.WARNING)  # moto's request log
    os.environ["POWERTOOLS_METRICS_DISABLED"] = "true"  # no EMF lines in the figures
    with MotoServer() as moto:
        for key, value in moto.env().items():
            os.environ[key] = value
        settings = setup("bench", session=moto.session(), endpoint_url=moto.url)
        os.environ.update(settings)
        print("== API calls per sequential step, on Lambda (one invocation runs the run)")
        for warm in (False, True):
            zero = lambda_calls(moto, settings, 0, warm=warm)
            label = "warm process" if warm else "cold process"
            print(
                f"  {label}, run of 0 steps: {_total(zero):.0f} calls {dict(sorted(zero.items()))}"
            )
            for n in (10, 50):
                many = lambda_calls(moto, settings, n, warm=warm)
                extra = collections.Counter(many)
                extra.subtract(zero)
                per_step = {k: round(v / n, 2) for k, v in extra.items() if v}
                print(
                    f"  {label}, run of {n} steps: {_total(many):.0f} calls; per step: {per_step}"
                )
                print(f"  => {sum(extra.values()) / n:.2f} billable calls per sequential step")

        print("== A sleep on Lambda, from the run's first invocation to its last")
        sleeps = {"1 s": 1.0, "1 hour": 3600.0, "1 day": 86400.0, "30 days": 30 * 86400.0}
        totals = {}
        for label, seconds in sleeps.items():
            calls, invocations = lambda_sleep_calls(moto, settings, seconds)
            totals[label] = _total(calls)
            print(f"  {label}: {_total(calls):.0f} calls, {invocations} invocations: {calls}")
        for label in list(sleeps)[1:]:
            print(
                f"  => a {label} sleep costs {totals[label] - totals['1 s']:+.0f} calls "
                "over a 1 s one (an SQS delay)"
            )
        print("== Without a scheduler: a sleep hops every 15 minutes (SQS's 15 min made 1 s)")
        hop = lambda_hop_calls(moto, settings)
        per_hop = _total(hop)
        print(f"  one hop: {hop} = {per_hop:.1f} requests and an invocation's work")
        for label, seconds in list(sleeps.items())[1:]:
            hops = math.ceil(seconds / 900)
            print(f"  {label}: {hops} hops = {hops * per_hop:.0f} requests, {hops} invocations")

        print("== An idle poller worker (not Lambda), on a table of its own")
        seconds = 10.0
        idle = idle_worker_calls(
            moto, setup("bench-idle", session=moto.session(), endpoint_url=moto.url), seconds
        )
        print(f"  in {seconds:.0f} s with poll 1 s, heartbeat 0.5 s, lease 2 s: {idle}")
    receives, beats, sweeps = 86400 / 20, 86400 / 10, 86400 / 30
    print(
        f"  per day with the defaults (poll 20 s, heartbeat 10 s, sweep ~30 s): "
        f"{receives:.0f} ReceiveMessage + {beats:.0f} heartbeat PutItem + "
        f"{sweeps:.0f} sweeps (a Query of expired heartbeats, a Query of pending runs)"
    )

    print("== Cold import (fresh interpreter, minus an empty one; best of 7)")
    handler = import_ms("import worldflow.worlds.aws")
    first = import_ms(
        "import worldflow.worlds.aws._host, worldflow.worlds.aws._observe, boto3; "
        "from aws_lambda_powertools import Logger, Metrics"
    )
    print(f"  the handler module (Lambda's init): {handler:.0f} ms (target <= 300 ms)")
    print(f"  with what the first invocation imports (boto3, powertools): {first:.0f} ms")
    samples = [import_ms("import worldflow", runs=3) for _ in range(3)]
    print(f"  of which worldflow's core: {statistics.median(samples):.0f} ms")


if __name__ == "__main__":
    main()
