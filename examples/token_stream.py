"""Stream an answer token by token while a step makes it, and find runs by their tags.

A step writes each token to the run's ``"tokens"`` stream as it comes
(``wf.get_writable``); the caller prints them live (``run.stream``), from any
process, resumable from an index. The run is tagged with its customer when it
starts, and with the answer's length once known (``wf.set_tags``); the
caller then finds it with ``wf.list_runs(tags=...)``.

    python -m examples.token_stream
    worldflow runs stream RUN_ID tokens        # the same from another terminal
    worldflow runs list --tag customer=c-42 --tag words=12
"""

from __future__ import annotations

import asyncio
import sys

import worldflow as wf

ANSWER = "Durable workflows replay their event log to pick up where they stopped."


@wf.step
async def generate(question: str) -> str:
    out = wf.get_writable("tokens")
    words = []
    for word in ANSWER.split():  # a model would produce these one by one
        out.write(word + " ")
        words.append(word)
        await asyncio.sleep(0.02)
    return " ".join(words)


@wf.workflow
async def answer(question: str) -> str:
    text = await generate(question)
    await wf.set_tags({"words": str(len(text.split()))})
    return text


async def main() -> int:
    async with wf.worker():
        run = await wf.start(answer, "What is a durable workflow?", tags={"customer": "c-42"})
        async for token in run.stream("tokens"):
            sys.stdout.write(token)
            sys.stdout.flush()
        print()
        words = str(len(ANSWER.split()))
        page = await wf.list_runs(tags={"customer": "c-42", "words": words})
        print(f"runs of customer c-42 with a {words}-word answer: {[r.id for r in page.runs]}")
        return 0 if run.id in [r.id for r in page.runs] else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
