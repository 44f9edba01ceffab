"""The kill soak: runs mixing steps, retries, sleeps and hooks on several worker
processes, one of them SIGKILLed at random every 0.2-1 s and restarted.

    python bench/soak.py                          # local and postgres, 50 runs, 200 kills
    python bench/soak.py --world local --runs 20 --kills 40
    python bench/soak.py --world gcp --runs 30 --kills 100

On aws the workers poll SQS (a moto server this starts). On gcp they are Cloud Run
service processes (``uvicorn worldflow.worlds.gcp.app:app``), each on a port of its
own behind a small TCP balancer at the service URL, as Cloud Run's front end is: the
Cloud Tasks emulator posts each task to the balancer, which hands the connection to
the next live process; a task cut off by a kill is retried by the emulator.

Prints a table: every run must complete with the expected result, with exactly
one recorded result per step (none lost, none twice); the step executions
beyond the least the workload needs are the at-least-once cost of the kills
(an attempt cut short by a kill runs again once its worker's lease runs out,
or at once where the World learns of the death sooner).

Each step writes a line ``step_id attempt`` to an append-only file when its
body starts: that counts executions independently of the World's own log.
Children (sub-workflows) are not in the mix yet: worldflow has none.

Needs PostgreSQL on 127.0.0.1:5432 (or WORLDFLOW_POSTGRES_URL's server) for
the postgres world; the database is created and dropped.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import worldflow as wf

FLOWS = '''
import asyncio, os, time
import worldflow as wf


def _executed() -> None:
    meta = wf.get_step_metadata()
    line = f"{meta.step_id} {meta.attempt}\\n".encode()
    fd = os.open(os.environ["SOAK_LOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


@wf.step(max_retries=10, retry_delay=0.05, backoff=1.0)
async def work(key: str, i: int) -> int:
    _executed()
    await asyncio.sleep(0.01 + (i % 3) * 0.01)
    return i


@wf.step(max_retries=10, retry_delay=0.05, backoff=1.0)
async def flaky(key: str) -> int:
    """Fails its first attempt, every time: a retry the workload always needs."""
    _executed()
    if wf.get_step_metadata().attempt == 1:
        raise RuntimeError("the first attempt of flaky fails")
    return 100


@wf.step(max_retries=10, retry_delay=0.05, backoff=1.0)
def blocking(key: str, i: int) -> int:
    _executed()
    time.sleep(0.005)
    return 2 * i


@wf.workflow
async def mixed(key: str) -> int:
    total = 0
    for i in range(4):
        total += await work(key, i)
    total += await flaky(key)
    await wf.sleep(0.5)
    payload = await wf.create_hook(token=f"soak:{key}")
    total += int(payload)
    parts = await asyncio.gather(*(blocking(key, i) for i in range(3)))
    return total + sum(parts)
'''
#: The result of ``mixed`` when its hook receives 7.
EXPECTED = sum(range(4)) + 100 + 7 + 2 * sum(range(3))
#: Steps per run, and the executions one run needs at least (flaky's failure).
STEPS = 4 + 1 + 3
LEAST = STEPS + 1

SERVE = """
import asyncio, sys
import worldflow as wf
import soakflows  # registers the workflow


async def main():
    async with wf.worker():
        await asyncio.Event().wait()

asyncio.run(main())
"""


@dataclass
class Outcome:
    world: str
    runs: int
    right: int
    kills: int
    lost: int
    twice: int
    executions: int
    least: int
    wall: float
    #: gcp: how many of the kills hit a service process that was serving.
    serving_kills: int | None = None

    @property
    def extra(self) -> int:
        return self.executions - self.least


def _world_env(
    world: str, folder: Path, url: str | None, cloud: dict[str, str] | None = None
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WORLDFLOW_")}
    env.update(
        {
            "WORLDFLOW_WORLD": world,
            "SOAK_LOG": str(folder / "executions.log"),
            "PYTHONPATH": str(folder),
        }
    )
    if world == "gcp":
        assert cloud is not None
        env.update(cloud)
        env.update(
            {
                "WORLDFLOW_MODULES": "soakflows",
                "WORLDFLOW_GCP_HEARTBEAT": "0.2",
                "WORLDFLOW_GCP_LEASE": "1",
            }
        )
    elif world == "aws":
        assert cloud is not None
        env.update(cloud)
        env.update(
            {
                "WORLDFLOW_AWS_POLL_WAIT": "1",
                "WORLDFLOW_AWS_VISIBILITY": "2",
                "WORLDFLOW_AWS_HEARTBEAT": "0.2",
                "WORLDFLOW_AWS_WORKER_LEASE": "1",
            }
        )
    elif world == "local":
        env.update(
            {
                "WORLDFLOW_DATA_DIR": str(folder / "data"),
                "WORLDFLOW_LOCAL_HEARTBEAT": "0.2",
                "WORLDFLOW_LOCAL_LEASE": "1.0",
            }
        )
    else:
        assert url is not None
        env.update(
            {
                "WORLDFLOW_POSTGRES_URL": url,
                "WORLDFLOW_POSTGRES_HEARTBEAT": "0.2",
                "WORLDFLOW_POSTGRES_LEASE": "1.0",
            }
        )
    return env


class Workers:
    """Worker processes serving the World; one killed and restarted at a time.

    ``ports``: the workers are Cloud Run service processes (gcp), one on each port."""

    def __init__(
        self,
        count: int,
        folder: Path,
        env: dict[str, str],
        ports: list[int] | None = None,
    ) -> None:
        self.folder, self.env, self.ports = folder, env, ports
        self.errors = (folder / "workers.err").open("ab")
        self.procs = [self._spawn(i) for i in range(count)]
        #: Kills of a service process that was accepting connections (gcp): a process
        #: still starting (importing, 1-3 s on a loaded machine) loses nothing by a kill.
        self.serving_kills = 0

    def _spawn(self, i: int) -> subprocess.Popen[bytes]:
        args = [sys.executable, str(self.folder / "serve.py")]
        if self.ports is not None:
            args = [sys.executable, "-m", "uvicorn", "worldflow.worlds.gcp.app:app"]
            args += ["--host", "127.0.0.1", "--port", str(self.ports[i]), "--no-access-log"]
        return subprocess.Popen(
            args,
            cwd=self.folder,
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=self.errors,
        )

    def kill_one(self, rng: random.Random) -> None:
        i = rng.randrange(len(self.procs))
        if self.ports is not None:
            self.serving_kills += self._listening(i)
        self.procs[i].send_signal(signal.SIGKILL)
        self.procs[i].wait()
        self.procs[i] = self._spawn(i)

    def wait_serving(self, timeout: float) -> None:
        """Until every service process accepts connections (gcp): the kills start then."""
        deadline = time.monotonic() + timeout
        while not all(self._listening(i) for i in range(len(self.procs))):
            if time.monotonic() > deadline:
                raise TimeoutError(f"the service processes did not all start in {timeout}s")
            time.sleep(0.1)

    def _listening(self, i: int) -> bool:
        assert self.ports is not None
        try:
            with socket.create_connection(("127.0.0.1", self.ports[i]), 0.2):
                return True
        except OSError:
            return False

    def stop(self) -> None:
        for proc in self.procs:
            proc.send_signal(signal.SIGKILL)
        for proc in self.procs:
            proc.wait()
        self.errors.close()


class Balancer:
    """A TCP balancer on ``port`` in front of the service processes' ``backends`` (what
    Cloud Run's front end is to its instances): each connection goes to the next backend
    that accepts it; a backend's death resets the connections it had."""

    def __init__(self, port: int, backends: list[int]) -> None:
        self.backends = backends
        self.next = 0
        self.listener = socket.create_server(("127.0.0.1", port))
        self.closed = False
        threading.Thread(target=self._accept, daemon=True, name="soak-balancer").start()

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        upstream = None
        for _ in range(len(self.backends)):
            port = self.backends[self.next % len(self.backends)]
            self.next += 1
            with contextlib.suppress(OSError):
                upstream = socket.create_connection(("127.0.0.1", port), 2)
                break
        if upstream is None:  # all three are (re)starting: the task is retried
            client.close()
            return
        other = threading.Thread(target=self._pump, args=(upstream, client), daemon=True)
        other.start()
        self._pump(client, upstream)
        other.join()
        client.close()
        upstream.close()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
            sink.shutdown(socket.SHUT_WR)
        except OSError:
            with contextlib.suppress(OSError):
                sink.shutdown(socket.SHUT_RDWR)  # a reset end resets the other

    def close(self) -> None:
        self.closed = True
        self.listener.close()


async def _resume_when_created(token: str, stop: float) -> None:
    while time.monotonic() < stop:
        try:
            await wf.resume_hook(token, 7)
            return
        except wf.HookNotFound:
            await asyncio.sleep(0.1)
    raise TimeoutError(f"hook {token!r} was never created")


async def _soak(
    world_name: str,
    runs: int,
    kills: int,
    workers: int,
    url: str | None,
    seed: int,
    cloud: dict[str, str] | None = None,
    ports: list[int] | None = None,
) -> Outcome:
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory(prefix="worldflow-soak-") as tmp:
        folder = Path(tmp)
        (folder / "soakflows.py").write_text(textwrap.dedent(FLOWS))
        (folder / "serve.py").write_text(SERVE)
        env = _world_env(world_name, folder, url, cloud)
        sys.path.insert(0, str(folder))
        os.environ["SOAK_LOG"] = env["SOAK_LOG"]
        import soakflows

        began = time.monotonic()
        pool = Workers(workers, folder, env, ports)
        # This process is a client on the same World (it starts runs, sends payloads and
        # looks; the workers run them), configured by the environment it restores after.
        prefixes = ("WORLDFLOW_", "AWS_", "FIRESTORE_", "STORAGE_")
        settings = {k: v for k, v in env.items() if k.startswith(prefixes)}
        settings["WORLDFLOW_SERVE"] = "never"
        saved = {k: os.environ.get(k) for k in settings}
        os.environ.update(settings)
        try:
            window = kills * 0.6  # the mean gap between kills

            async def killer() -> None:
                for _ in range(kills):
                    await asyncio.sleep(rng.uniform(0.2, 1.0))
                    await asyncio.to_thread(pool.kill_one, rng)

            if ports is not None:
                await asyncio.to_thread(pool.wait_serving, 120)
            killing = asyncio.create_task(killer())
            handles = []
            resumers = []
            for i in range(runs):
                key = f"r{i}"
                handles.append(await wf.start(soakflows.mixed, key, id=f"soak-{key}"))
                resumers.append(
                    asyncio.create_task(
                        _resume_when_created(f"soak:{key}", time.monotonic() + window + 300)
                    )
                )
                await asyncio.sleep(0.8 * window / runs)
            await asyncio.gather(*resumers)
            results = await asyncio.gather(
                *(h.result(timeout=window + 300) for h in handles), return_exceptions=True
            )
            await killing
            right = sum(1 for r in results if r == EXPECTED)
            lost = twice = 0
            for handle in handles:
                completed = collections.Counter(
                    e.data["cid"] for e in await handle.events() if e.kind == "step_completed"
                )
                lost += STEPS - len(completed)
                twice += sum(n - 1 for n in completed.values())
        finally:
            pool.stop()
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
            sys.path.remove(str(folder))
            sys.modules.pop("soakflows", None)
        executions = len((folder / "executions.log").read_text().splitlines())
        return Outcome(
            world_name,
            runs,
            right,
            kills,
            lost,
            twice,
            executions,
            runs * LEAST,
            time.monotonic() - began,
            pool.serving_kills if ports is not None else None,
        )


@contextlib.contextmanager
def _database() -> Iterator[str]:
    from worldflow.worlds.postgres.testing import fresh_database

    with fresh_database() as url:
        yield url


def soak(world: str, runs: int, kills: int, workers: int = 3, seed: int = 1) -> Outcome:
    """One soak on ``world`` ("local", "postgres", "aws": SQS-polling workers against a
    moto server this starts, or "gcp": Cloud Run service processes against the
    emulators); the figures."""
    if world == "gcp":
        return _gcp_soak(runs, kills, workers, seed)
    if world == "aws":
        from worldflow.worlds.aws import setup
        from worldflow.worlds.aws.testing import MotoServer

        with MotoServer() as moto:
            settings = setup("wf-soak", session=moto.session(), endpoint_url=moto.url, visibility=2)
            aws = {**moto.env(), **settings}
            return asyncio.run(_soak(world, runs, kills, workers, None, seed, aws))
    if world == "postgres":
        with _database() as url:
            return asyncio.run(_soak(world, runs, kills, workers, url, seed))
    return asyncio.run(_soak(world, runs, kills, workers, None, seed))


def _gcp_soak(runs: int, kills: int, workers: int, seed: int) -> Outcome:
    import dataclasses

    from worldflow.worlds.gcp._setup import delete_queue, ensure_queue
    from worldflow.worlds.gcp.testing import free_port, service_env, settings_for_test

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "worlds"))
    try:
        from gcp_support import emulators  # makes the Cloud Tasks emulator's venv if need be
    finally:
        sys.path.pop(0)
    em = emulators()
    front = free_port()
    url = f"http://127.0.0.1:{front}"
    settings = settings_for_test(em)
    settings = dataclasses.replace(settings, service_url=url, public_url=None, listen=None)
    ports = [free_port() for _ in range(workers)]
    asyncio.run(ensure_queue(settings))
    balancer = Balancer(front, ports)
    try:
        env: dict[str, Any] = service_env(settings, em)
        return asyncio.run(_soak("gcp", runs, kills, workers, None, seed, env, ports))
    finally:
        balancer.close()
        asyncio.run(delete_queue(settings))


def table(outcomes: list[Outcome]) -> str:
    head = (
        "world      runs  right  kills  lost  twice  executions  least  extra (at-least-once)  wall"
    )
    lines = [head, "-" * len(head)]
    for o in outcomes:
        share = 100.0 * o.extra / o.least if o.least else 0.0
        lines.append(
            f"{o.world:<9} {o.runs:>5} {o.right:>6} {o.kills:>6} {o.lost:>5} {o.twice:>6}"
            f" {o.executions:>11} {o.least:>6} {o.extra:>6} ({share:4.1f}%)"
            f"{' ':>9}{o.wall:6.1f}s"
        )
    for o in outcomes:
        if o.serving_kills is not None:
            lines.append(
                f"{o.world}: {o.serving_kills} of the {o.kills} kills hit a serving process"
            )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--world",
        choices=("local", "postgres", "aws", "gcp", "both", "all"),
        default="both",
        help="both: local and postgres; all: and aws (against moto) and gcp (the emulators)",
    )
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--kills", type=int, default=200)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    worlds = {"both": ["local", "postgres"], "all": ["local", "postgres", "aws", "gcp"]}.get(
        args.world, [args.world]
    )
    outcomes = [soak(w, args.runs, args.kills, args.workers, args.seed) for w in worlds]
    print(table(outcomes))
    bad = [o for o in outcomes if o.right != o.runs or o.lost or o.twice]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
