"""Hail a ride: the first example of Vercel's Workflow Development Kit, in worldflow.

Four steps: validate the request, assign a driver (which fails on its first
attempt, to show a retry), then notify the rider and create the receipt in
parallel. Every step's input and output go to the run's event log, so a run
interrupted anywhere (a crash, a deploy, ``kill -9``) carries on from its
last completed step instead of starting over.

    python -m examples.hail_ride [REQUEST_ID]     # or: ./scripts/demo

The run is stored in the configured World: the local one by default, under
``./.worldflow`` (``WORLDFLOW_DATA_DIR`` moves it).
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from decimal import Decimal
from typing import Any

import worldflow as wf

from ._common import console, fold, format_seconds, print_steps, short_name

# What the ride-request API would answer (the article's step fetches it over HTTP).
RIDE_REQUESTS = {
    "req-42": {"rider": "Ana", "pickup": "221B Baker Street", "dropoff": "King's Cross", "km": 4.2},
    "req-43": {"rider": "Bo", "pickup": "Tate Modern", "dropoff": "Camden Market", "km": 6.8},
}


@wf.step
async def validate_ride_request(request_id: str) -> dict[str, Any]:
    await asyncio.sleep(0.005)  # stands in for `GET https://api.example.com/rides/{id}`
    request = RIDE_REQUESTS.get(request_id)
    if request is None:
        # No retry can fix an unknown request: FatalError fails the step (and the run) at once.
        raise wf.FatalError(f"ride request {request_id!r} does not exist")
    return {"request_id": request_id, **request}


@wf.step(max_retries=3, retry_delay="100ms")
def assign_driver(request: dict[str, Any]) -> dict[str, Any]:
    # A plain `def` step runs on a worker thread, so blocking calls are fine here.
    if wf.get_step_metadata().attempt == 1:
        # The dispatch service is busy on the first try; worldflow records the
        # failure and runs the step again after `retry_delay`.
        raise wf.RetryableError("no driver free near the pickup yet")
    time.sleep(0.02)
    return {**request, "driver": "Sam", "car": "blue Prius KX21 ABC", "eta_min": 4}


@wf.step
async def notify_rider(trip: dict[str, Any]) -> dict[str, Any]:
    await asyncio.sleep(0.01)  # a push notification or SMS
    text = f"{trip['driver']} is on the way in a {trip['car']}, {trip['eta_min']} min away"
    return {"to": trip["rider"], "text": text}


@wf.step
async def create_receipt(trip: dict[str, Any]) -> dict[str, Any]:
    await asyncio.sleep(0.01)  # the billing system
    # The step id is the same on every attempt of this step: an idempotency key,
    # so a retried step never bills twice.
    step_id = wf.get_step_metadata().step_id
    fare = (Decimal("2.50") + Decimal("1.80") * Decimal(str(trip["km"]))).quantize(Decimal("0.01"))
    return {
        "receipt_id": f"rcpt-{step_id}",
        "rider": trip["rider"],
        "driver": trip["driver"],
        "route": f"{trip['pickup']} → {trip['dropoff']}",
        "fare": fare,
        "currency": "GBP",
    }


@wf.workflow(name="hail-ride")
async def hail_ride(request_id: str) -> dict[str, Any]:
    request = await validate_ride_request(request_id)
    trip = await assign_driver(request)
    receipt: dict[str, Any]
    _notified, receipt = await asyncio.gather(notify_rider(trip), create_receipt(trip))
    return receipt


async def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    request_id = args[0] if args else "req-42"
    world = os.environ.get("WORLDFLOW_WORLD", "local")
    where = (
        f" (data in {os.environ.get('WORLDFLOW_DATA_DIR', '.worldflow')})"
        if world == "local"
        else ""
    )
    console.print(f"[bold]hail-ride[/] {request_id!r} on the {world} world{where}")

    # No set-up: the first call starts a runtime on the configured World, and this
    # process runs the workflow's steps in the background while it waits.
    run = await wf.start(hail_ride, request_id)
    console.print(f"started run [cyan]{run.id}[/]\n")
    failure: wf.RunFailed | None = None
    try:
        receipt = await run.result(timeout=30)
    except wf.RunFailed as exc:
        failure = exc

    state = await fold(run)
    print_steps(state)
    total = (state.ended_at or time.time()) - state.created_at
    console.print(
        f"run [bold]{state.status}[/] in {format_seconds(total)}, {state.seq} events in its log"
    )
    if failure is not None:
        console.print(f"[red]error:[/] {short_name(failure.error_type)}: {failure.message}")
        return 1
    console.print("\n[bold]receipt[/]")
    for key, value in receipt.items():
        console.print(f"  {key:<10} {value}")
    console.print(f"\n[dim]see it again: worldflow runs show {run.id}[/]")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
