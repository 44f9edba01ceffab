"""examples/token_stream.py works: the tokens come through the stream in order, and the
run is found by its tags (the one set at start, and the one the workflow set)."""

from __future__ import annotations

import asyncio
import importlib
import sys
from pathlib import Path

import worldflow as wf
from worldflow.worlds.local import LocalWorld

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # examples/ is not installed: import it from the checkout
    sys.path.insert(0, str(ROOT))

token_stream = importlib.import_module("examples.token_stream")


def test_tokens_stream_live_and_the_run_is_found_by_tags(tmp_path: Path) -> None:
    async def main() -> None:
        async with wf.worker(LocalWorld(tmp_path)):
            run = await wf.start(token_stream.answer, "q?", tags={"customer": "c-1"})
            tokens = [t async for t in run.stream("tokens")]
            assert "".join(tokens).strip() == token_stream.ANSWER
            assert len(tokens) == len(token_stream.ANSWER.split())
            words = str(len(tokens))
            page = await wf.list_runs(tags={"customer": "c-1", "words": words})
            assert [r.id for r in page.runs] == [run.id]
            assert (await run.info()).tags == {"customer": "c-1", "words": words}

    asyncio.run(main())
