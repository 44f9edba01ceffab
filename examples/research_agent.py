"""A research agent: plan, call tools in parallel, ask a human, write the report.

The shape of most AI agents: a model plans sub-questions, a tool is called
for each of them (in parallel, with retries when the tool is flaky), a person
approves before anything is published, and the model writes the result.
As a workflow, each model or tool call is a step, so a crash or a deploy in
the middle costs nothing: the run replays its log and carries on, without
paying for (or waiting on) the calls it already made. The approval can take
hours; the run waits for it without holding a process, and approves itself
if nobody answers in time.

Everything here is simulated with string functions (no network, no model),
so the example is deterministic.

    python -m examples.research_agent ["TOPIC"]

Approve a waiting run from elsewhere with
``await wf.resume_hook(f"approve:{run_id}", {"approved": True, "by": "ana"})``
(or ``worldflow hooks resume approve:RUN_ID '{"approved": true, "by": "ana"}'``).
"""

from __future__ import annotations

import asyncio
import sys
import zlib
from typing import Any

import worldflow as wf

from ._common import console, fold, format_seconds, print_steps, wait_for_event

ANGLES = (
    "What is {topic}?",
    "How does {topic} work under the hood?",
    "Who uses {topic}, and for what?",
    "What are the limits and risks of {topic}?",
)


def _stable_hash(text: str) -> int:
    return zlib.crc32(text.encode())  # unlike hash(), the same in every process


@wf.step
async def plan(topic: str) -> list[str]:
    """The "model" splits the topic into sub-questions."""
    await asyncio.sleep(0.005)
    return [angle.format(topic=topic) for angle in ANGLES]


@wf.step(max_retries=4, retry_delay="20ms")
async def search(question: str) -> dict[str, Any]:
    """A "search tool" call: slow and sometimes rate-limited."""
    await asyncio.sleep(0.005 + (_stable_hash(question) % 10) / 1000)
    if _stable_hash(question) % 2 == 0 and wf.get_step_metadata().attempt == 1:
        raise wf.RetryableError("search API: 429 Too Many Requests", retry_after="30ms")
    n = _stable_hash(question) % 90 + 10
    return {
        "question": question,
        "finding": f"{n} sources agree on the main point, {n % 7 + 1} differ on details.",
        "sources": [f"https://example.org/doc/{n}", f"https://example.org/doc/{n + 1}"],
    }


@wf.step
def write_report(topic: str, results: list[dict[str, Any]], decision: dict[str, Any]) -> str:
    """The "model" writes the report from what the searches found."""
    lines = [f"# {topic}", ""]
    for result in results:
        sources = ", ".join(result["sources"])
        lines += [f"## {result['question']}", f"{result['finding']} ({sources})", ""]
    lines.append(f"_Approved by {decision['by']}. {decision.get('note', '')}_".rstrip())
    return "\n".join(lines)


@wf.workflow(name="research-agent")
async def research(topic: str, approval_timeout: float = 86400.0) -> dict[str, Any]:
    questions = await plan(topic)
    # One step per sub-question, all running at once; each retries on its own.
    results = await asyncio.gather(*(search(question) for question in questions))

    # Wait for a person, but not forever: the timeout is a durable timer, so the
    # run can wait a day without any process waiting with it.
    run_id = wf.get_workflow_metadata().run_id
    approval = wf.create_hook(token=f"approve:{run_id}")
    try:
        decision = await asyncio.wait_for(approval, timeout=approval_timeout)
    except TimeoutError:
        decision = {"approved": True, "by": "auto-approve", "note": "No reviewer answered in time."}
    if not decision.get("approved"):
        return {"topic": topic, "status": "rejected", "by": decision.get("by"), "report": None}

    report = await write_report(topic, results, decision)
    return {"topic": topic, "status": "published", "by": decision["by"], "report": report}


async def review(run: wf.Run[Any]) -> None:
    """A person reading the findings and approving them, a moment later."""
    await wait_for_event(run, "hook_created")
    await asyncio.sleep(0.1)
    decision = {"approved": True, "by": "ana@example.com", "note": "Looks right."}
    await wf.resume_hook(f"approve:{run.id}", decision)


async def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    topic = args[0] if args else "durable workflows"
    # The configured World (local, ./.worldflow by default) holds the run.
    run = await wf.start(research, topic)
    console.print(f"research-agent {topic!r}: run [cyan]{run.id}[/]\n")
    await review(run)
    outcome = await run.result(timeout=30)
    state = await fold(run)

    console.print(
        outcome["report"] or f"(rejected by {outcome['by']})", markup=False, soft_wrap=True
    )
    console.print()
    print_steps(state)
    attempts = sum(step.attempt for step in state.steps.values())
    retried = sum(1 for step in state.steps.values() if step.attempt > 1)
    total = (state.ended_at or 0) - state.created_at
    console.print(
        f"{len(state.steps)} steps ran ({attempts} attempts, {retried} retried); "
        f"run {state.status} in {format_seconds(total)}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
