"""``worldflow runs replay --check MODULE ...``: would the code now deployed replay the
logs of the runs in flight?

Before deploying a change to a workflow, run this with the new code: each
running (or the chosen) run's log is replayed against the workflow as the
MODULEs now define it, in this process, with no step executed (their results
come from the log) and nothing written. A run whose log the new code no longer
matches would fail with a ``NonDeterminismError`` once a worker with the new
code replays it: fix the change (``wf.patched``, a new workflow name) first.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from rich import box
from rich.table import Table
from rich.text import Text

from worldflow._errors import NonDeterminismError, WorkflowNotFound
from worldflow.testing._harness import replay_log

from ._common import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    CliError,
    console,
    open_world,
    say,
    short,
    write_json,
)
from ._load import import_module

__all__ = ["replay_runs"]


def replay_runs(args: argparse.Namespace) -> int:
    if not args.check:
        raise CliError("runs replay only checks for now: pass --check", EXIT_USAGE)
    for name in args.modules:
        import_module(name)

    async def check() -> list[dict[str, Any]]:
        async with open_world() as backend:
            if args.run:
                ids = list(args.run)
            else:
                ids = []
                for status in ("running", "pending"):
                    cursor = None
                    while True:
                        page = await backend.list_runs(
                            status=status, workflow=args.workflow, limit=500, cursor=cursor
                        )
                        ids += [r.id for r in page.runs]
                        cursor = page.cursor
                        if cursor is None or len(ids) >= args.limit:
                            break
            rows = []
            for run_id in ids[: args.limit]:
                events = await backend.read_events(run_id)
                if not events:
                    rows.append(
                        {"run_id": run_id, "workflow": None, "ok": False, "reason": "no such run"}
                    )
                    continue
                workflow = events[0].data.get("workflow")
                try:
                    replay_log(events)
                except NonDeterminismError as exc:
                    rows.append(
                        {"run_id": run_id, "workflow": workflow, "ok": False, "reason": str(exc)}
                    )
                except WorkflowNotFound:
                    rows.append(
                        {
                            "run_id": run_id,
                            "workflow": workflow,
                            "ok": None,
                            "reason": "its workflow is not in these modules: not checked",
                        }
                    )
                except Exception as exc:
                    rows.append(
                        {
                            "run_id": run_id,
                            "workflow": workflow,
                            "ok": False,
                            "reason": f"{type(exc).__name__}: {exc}",
                        }
                    )
                else:
                    rows.append({"run_id": run_id, "workflow": workflow, "ok": True, "reason": ""})
            return rows

    rows = asyncio.run(check())
    failing = [r for r in rows if r["ok"] is False]
    if args.json:
        write_json({"checked": len(rows), "would_fail": len(failing), "runs": rows})
    elif not rows:
        say("no runs in flight to check")
    else:
        table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
        table.add_column("RUN", no_wrap=True)
        table.add_column("WORKFLOW", no_wrap=True)
        table.add_column("REPLAY", no_wrap=True)
        table.add_column("WHY", overflow="fold")
        for r in rows:
            verdict = {
                True: Text("ok", "green"),
                False: Text("would fail", "red"),
                None: Text("skipped", "yellow"),
            }[r["ok"]]
            table.add_row(r["run_id"], str(r["workflow"]), verdict, short(r["reason"], 300))
        console().print(table)
        say(
            f"{len(rows)} run(s) checked, {len(failing)} would fail with the code of {', '.join(args.modules)}"
        )
    return EXIT_FAILED if failing else EXIT_OK
