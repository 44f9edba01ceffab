"""Count the AWS world's API calls, and time the Lambda handler's cold import (by hand).

    python bench/bench_aws.py            # against a moto server it starts itself

Calls are counted with botocore's ``before-call`` event on the session every
client is made from, per service and operation, so the figures are what AWS
would bill (moto only answers them).

1. Per sequential step, on "Lambda": a run of N steps started by a client,
   executed by one invocation of ``lambda_handler`` fed a real SQS record
   (the LambdaHarness), compared with a run of 0 steps: (calls(N) - calls(0)) / N.
2. Per second of sleep: a message due later than SQS's 15-minute delay is
   re-sent with the longest delay until due; one hop (measured here with a
   short hop) costs one receive, one send and one delete. A day of sleep is
   ceil(86400 / 900) = 96 hops.
3. The poller's (non-Lambda worker's) idle cost per day, from its settings.
4. Cold import: ``import worldflow.worlds.aws`` (Lambda's init) and the first
   invocation's extra imports (boto3, powertools), each in a fresh interpreter.
"""

from __future__ import annotations

import asyncio
import collections
import math
import os
import statistics
import subprocess
import sys
import time
from typing import Any

import worldflow as wf
from worldflow._world import Message, Outgoing
from worldflow.worlds.aws import AwsWorld, _lambda, setup
from worldflow.worlds.aws.testing import LambdaHarness, MotoServer

#: Price per million requests (us-east-1, 2025): SQS standard, DynamoDB on-demand
#: writes (a transactional write counts twice per item) and reads.
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


def lambda_calls_per_run(moto: MotoServer, settings: dict[str, str], n: int) -> dict[str, int]:
    """The calls "Lambda" makes to execute one run of n sequential steps (one invocation)."""
    session = moto.session()
    counter = Counter(session)
    client = _world(moto, settings, moto.session(), poll=False)

    async def start() -> str:
        async with wf.worker(client):
            return (await wf.start(sequential, n)).id

    run_id = asyncio.run(start())
    _lambda.install(_lambda.LambdaApp(_world(moto, settings, session, poll=False)))
    before = counter.snapshot()
    harness = LambdaHarness(settings["WORLDFLOW_AWS_QUEUE_URL"], moto.session(), moto.url)
    while harness.poll_once():
        pass
    used = counter.snapshot() - before

    async def check() -> Any:
        async with wf.worker(client):
            return await wf.get_run(run_id).result(timeout=5)

    assert asyncio.run(check()) == sum(range(n))
    _lambda.reset()
    return dict(used)


def chain_hop_calls(moto: MotoServer, settings: dict[str, str]) -> dict[str, int]:
    """The calls of one delay hop of the poller (hold_max set low to see one)."""
    session = moto.session()
    counter = Counter(session)
    world = _world(moto, settings, session, hold_max=0.5, poll_wait=1)

    async def main() -> collections.Counter[str]:
        arrived = asyncio.Event()

        async def handler(message: Message) -> None:
            arrived.set()

        await world.start(handler)
        before = counter.snapshot()
        await world.send([Outgoing(Message("later", "r", "resume"), time.time() + 2.2)])
        await asyncio.wait_for(arrived.wait(), 10)
        used = counter.snapshot() - before
        await world.close()
        return used

    used = asyncio.run(main())
    # Receives are long polls that happen whether or not a message is waiting.
    return {k: v for k, v in used.items() if "ReceiveMessage" not in k and "PutItem" not in k}


def import_ms(code: str, runs: int = 7) -> float:
    def once(src: str) -> float:
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", src], check=True, env=os.environ.copy())
        return time.perf_counter() - start

    base = min(once("pass") for _ in range(runs))
    return (min(once(code) for _ in range(runs)) - base) * 1000


def main() -> None:
    import logging

    logging.disable(logging.WARNING)  # moto's request log
    os.environ["POWERTOOLS_METRICS_DISABLED"] = "true"  # no EMF lines in the figures
    with MotoServer() as moto:
        for key, value in moto.env().items():
            os.environ[key] = value
        settings = setup("bench", session=moto.session(), endpoint_url=moto.url)
        os.environ["WORLDFLOW_AWS_POLL"] = "0"
        print("== API calls per sequential step, on Lambda (one invocation runs the run)")
        zero = lambda_calls_per_run(moto, settings, 0)
        for n in (10, 50):
            many = lambda_calls_per_run(moto, settings, n)
            extra = collections.Counter(many)
            extra.subtract(zero)
            per_step = {k: round(v / n, 2) for k, v in extra.items() if v}
            print(f"  run of 0 steps: {sum(zero.values())} calls {dict(sorted(zero.items()))}")
            print(f"  run of {n} steps: {sum(many.values())} calls; per step: {per_step}")
            print(f"  => {sum(extra.values()) / n:.2f} billable calls per sequential step")

        print("== API calls per second of sleep (chained 15-minute SQS delays)")
        hop = chain_hop_calls(moto, settings)
        per_hop = sum(hop.values()) + 1  # + the receive that picks the hop up
        print(f"  one hop: {hop} + 1 ReceiveMessage = {per_hop} SQS requests")
        hops = math.ceil(86400 / 900)
        per_day = hops * per_hop
        print(
            f"  a day of sleep: {hops} hops = {per_day} requests = "
            f"{per_day / 86400:.4f} per second of sleep, "
            f"${per_day * SQS_PER_MILLION / 1e6:.6f} per day per sleeping run"
        )

    print("== A poller worker's (not Lambda's) idle calls per day, default settings")
    world_defaults = {"poll_wait": 20, "heartbeat": 10.0}
    receives = 86400 / world_defaults["poll_wait"]
    beats = 86400 / world_defaults["heartbeat"]
    print(f"  {receives:.0f} ReceiveMessage + {beats:.0f} heartbeat PutItem per worker per day")

    print("== Cold import (fresh interpreter, minus an empty one; best of 7)")
    handler = import_ms("import worldflow.worlds.aws")
    first = import_ms(
        "import worldflow.worlds.aws._lambda, worldflow.worlds.aws._observe, boto3; "
        "from aws_lambda_powertools.utilities.batch import BatchProcessor"
    )
    print(f"  the handler module (Lambda's init): {handler:.0f} ms (target <= 300 ms)")
    print(f"  with what the first invocation imports (boto3, powertools): {first:.0f} ms")
    samples = [import_ms("import worldflow", runs=3) for _ in range(3)]
    print(f"  of which worldflow's core: {statistics.median(samples):.0f} ms")


if __name__ == "__main__":
    main()
