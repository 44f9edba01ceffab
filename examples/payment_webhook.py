"""Validate a payment method: a run paused until an outside service calls its webhook.

The workflow creates a webhook (a URL that resumes this run), hands that URL
to the payment provider in a step, and waits. When the provider POSTs its
verdict to the URL, the run resumes with the request. While it waits, the
run costs nothing and survives restarts: the webhook lives in the World, not
in this process.

    python -m examples.payment_webhook                      # the local world
    WORLDFLOW_WORLD=aws python -m examples.payment_webhook  # or whichever is configured

Here the "payment provider" is a thread that calls back after a moment. The
webhook's URL comes from the configured World (``WORLDFLOW_PUBLIC_URL`` on
the cloud worlds), so it must be reachable from where the provider runs.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import threading
import time
import urllib.request
from typing import Any

import worldflow as wf

from ._common import console, fold, format_seconds


def _provider_calls_back(callback_url: str, ride_id: str, delay: float) -> None:
    """The payment provider: checks the card, then POSTs its verdict to the callback URL."""
    time.sleep(delay)
    status = "declined" if ride_id.startswith("declined-") else "approved"
    body = json.dumps({"ride_id": ride_id, "status": status}).encode()
    request = urllib.request.Request(
        callback_url, data=body, headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        response.read()  # 202: the payload is queued for the run


@wf.step
def request_validation(ride_id: str, callback_url: str) -> dict[str, Any]:
    # Real code would call the provider's API here, e.g.
    #   requests.post("https://api.example-payments.com/validate-method",
    #                 json={"ride_id": ride_id, "callback": callback_url})
    # The step runs once per run (replays return its recorded result), so the
    # provider is asked once, however often the run is replayed.
    threading.Thread(
        target=_provider_calls_back, args=(callback_url, ride_id, 0.2), daemon=True
    ).start()
    return {"submitted": ride_id}


@wf.workflow
async def validate_payment_method(ride_id: str) -> dict[str, Any]:
    webhook = wf.create_webhook()
    await request_validation(ride_id, webhook.url)
    request = await webhook  # a wf.WebhookRequest: .method .headers .body .json() .text()
    confirmation = request.json()
    return {"ride_id": ride_id, "status": confirmation["status"]}


async def main() -> int:
    world = os.environ.get("WORLDFLOW_WORLD", "local")
    console.print(f"[bold]payment-webhook[/] on the {world} world")
    # No set-up: the first call starts a runtime on the configured World (on the local
    # world this process also runs the workflow and answers its webhook).
    run = await wf.start(validate_payment_method, "ride-1001")
    result = await run.result(timeout=60)
    state = await fold(run)
    (hook,) = state.hooks.values()
    console.print(f"run {run.id} waited for its webhook at\n  {hook.url}")
    console.print(f"the provider called back; result: {result}")
    total = (state.ended_at or 0) - state.created_at
    console.print(f"run {state.status} in {format_seconds(total)}")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
