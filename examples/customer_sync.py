"""Sync customers one at a time per customer, and call a partner API at most 5 times a second.

``sync_customer`` runs at most once at a time per customer (a concurrency limit
keyed by the customer id), across every worker; runs beyond it wait as
``pending`` and start in the order they were started. Its step ``push`` is
rate limited to 5 attempts a second (shared by all runs): attempts beyond the
rate wait durably for their turn, they do not fail.

    python -m examples.customer_sync
"""

from __future__ import annotations

import asyncio
import time

import worldflow as wf
from worldflow.worlds.local import LocalWorld

from ._common import console


@wf.step(rate_limit="5/s")
async def push(customer_id: str, record: int) -> str:
    await asyncio.sleep(0.05)  # the partner API
    return f"{customer_id}/{record}"


@wf.workflow(concurrency=wf.Limit(1, key=lambda customer_id, **_: customer_id))
async def sync_customer(customer_id: str, records: int = 3) -> list[str]:
    return list(await asyncio.gather(*(push(customer_id, r) for r in range(records))))


async def demo() -> list[tuple[str, float, float]]:
    """Six syncs of two customers; returns (customer, started, ended) per run, in seconds
    from the first start."""
    async with wf.worker(LocalWorld(":memory:", serve_webhooks=False)):
        runs = [await wf.start(sync_customer, f"c{i % 2}") for i in range(6)]
        for run in runs:
            await run.result(timeout=60)
        spans = []
        for i, run in enumerate(runs):
            events = await run.events()
            started = next(e.at for e in events if e.kind == "run_started")
            spans.append((f"c{i % 2}", started, events[-1].at))
    first = min(s for _, s, _ in spans)
    return [(c, s - first, e - first) for c, s, e in spans]


def main() -> int:
    began = time.perf_counter()
    spans = asyncio.run(demo())
    for customer, started, ended in spans:
        console.print(f"{customer}: ran from {started:5.2f} s to {ended:5.2f} s")
    console.print(
        f"18 pushes at 5/s, one sync per customer at a time: {time.perf_counter() - began:.1f} s"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
