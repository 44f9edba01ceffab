"""Heartbeats, and the adoption of runs whose worker died: every serving process, every World.

A serving runtime proves it is alive every ``World.heartbeat`` seconds for
``World.lease`` seconds. About every lease it also sweeps: for each worker
whose heartbeat ran out, the unfinished runs that worker held (a step attempt
running there, as their last append said) get a ``resume`` message, which
makes whoever takes it see the attempt as lost and run it again; once a dead
worker holds nothing it is forgotten. Runs still pending well after they were
created (their starter died before their start message went) get one too.
With a ``World.retention``, runs that ended longer ago are deleted.

Most deaths need no sweep: a message is acknowledged only once its run is
quiet (see :mod:`worldflow._delivery`), so the queue brings a run back when
the worker handling it dies. The sweep is for the rest: a run started in a
process that died before its safety copy came due, a message lost or
dead-lettered, a worker that died between two messages of a run.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import TYPE_CHECKING

from ._world import Message, Outgoing, Pruning

if TYPE_CHECKING:
    from ._runtime import Runtime

__all__ = ["heartbeat_and_sweep", "sweep"]

log = logging.getLogger("worldflow")

#: At most this many dead workers, and runs of each, are looked at per sweep.
WORKERS_PER_SWEEP = 10
RUNS_PER_WORKER = 100


async def heartbeat_and_sweep(rt: Runtime) -> None:
    world = rt.world
    next_sweep = time.monotonic() + world.lease * random.uniform(0.1, 0.6)
    while not rt.closed:
        await asyncio.sleep(world.heartbeat)
        try:
            await rt.heartbeat()
            if time.monotonic() >= next_sweep:
                next_sweep = time.monotonic() + world.lease * random.uniform(0.8, 1.2)
                await sweep(rt)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # A failing store must not stop the heartbeat for good: other workers would
            # take this one's runs while it still runs them.
            log.warning("worldflow: heartbeat or sweep failed (%s); going on", exc)


async def sweep(rt: Runtime) -> int:
    """One sweep; returns how many runs were sent a resume message."""
    world = rt.world
    sent = 0
    for worker in await world.workers.expired(time.time(), WORKERS_PER_SWEEP):
        if worker == rt.worker_id:
            continue
        held = await world.storage.runs_held_by(worker, RUNS_PER_WORKER)
        if not held:
            await world.workers.forget(worker)
            continue
        log.info("worldflow: adopting %d run(s) of stopped worker %s", len(held), worker)
        await rt.backend.send(
            [
                Outgoing(Message(rt.new_id(), run_id, "resume"), key=f"{run_id}:adopt:{worker}")
                for run_id in held
            ]
        )
        sent += len(held)
    if world.retention is not None and isinstance(world.storage, Pruning):
        pruned = await world.storage.prune(rt.clock.now() - world.retention, RUNS_PER_WORKER)
        if pruned:
            log.info("worldflow: deleted %d run(s) ended over %ss ago", pruned, world.retention)
    page = await rt.backend.list_runs(status="pending", limit=RUNS_PER_WORKER)
    old = rt.clock.now() - 2 * rt.start_safety
    stuck = [info.id for info in page.runs if info.created_at < old]
    if stuck:
        await rt.backend.send(
            [
                Outgoing(Message(rt.new_id(), run_id, "resume"), key=f"{run_id}:start")
                for run_id in stuck
            ]
        )
        sent += len(stuck)
    return sent
