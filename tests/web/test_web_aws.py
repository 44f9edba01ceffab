"""The web UI over the AWS world (a moto server): it reads and acts only through the
World protocols and the public API, so the same pages work on a cloud world."""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

import worldflow as wf
from worldflow.web import TOKEN_HEADER, create_app
from worldflow.worlds.aws import AwsWorld, setup
from worldflow.worlds.aws.testing import MotoServer

BASE = "http://127.0.0.1:8765"
TRIES: Counter[str] = Counter()


@wf.step(retry_delay="10ms", name="web-aws.charge")
async def charge(order: str) -> str:
    TRIES[order] += 1
    if TRIES[order] < 2:
        raise ConnectionError("card network down")
    return f"charged {order}"


@wf.workflow(name="web-aws.order")
async def order(order_id: str) -> dict[str, Any]:
    receipt = await charge(order_id)
    answer = await wf.create_hook(token=f"web-aws:{order_id}")
    return {"receipt": receipt, "answer": answer}


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoServer]:
    with MotoServer() as server:
        yield server


@pytest.fixture
def settings(moto: MotoServer, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    moto.reset()
    values = setup("wf-web", session=moto.session(), endpoint_url=moto.url)
    for key, value in {**moto.env(), **values, "WORLDFLOW_WORLD": "aws"}.items():
        monkeypatch.setenv(key, value)
    return values


class Worker:
    """An AWS-world worker on a thread of its own, as another process would be."""

    def __init__(self, moto: MotoServer, settings: dict[str, str]) -> None:
        self.world = AwsWorld(
            settings["WORLDFLOW_AWS_TABLE"],
            settings["WORLDFLOW_AWS_QUEUE_URL"],
            settings["WORLDFLOW_AWS_BUCKET"],
            session=moto.session(),
            endpoint_url=moto.url,
            poll_wait=1,
        )
        self.loop: asyncio.AbstractEventLoop | None = None
        self.stop: asyncio.Event | None = None
        self.ready = threading.Event()
        self.thread = threading.Thread(target=asyncio.run, args=(self._serve(),))

    async def _serve(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.stop = asyncio.Event()
        async with wf.worker(self.world):
            self.ready.set()
            await self.stop.wait()

    def call(self, coro: Any) -> Any:
        assert self.loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    def __enter__(self) -> Worker:
        self.thread.start()
        assert self.ready.wait(30)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.loop is not None and self.stop is not None
        self.loop.call_soon_threadsafe(self.stop.set)
        self.thread.join(30)


def _until(check: Any, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := check()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)
    return value


def test_pages_and_actions_on_the_aws_world(moto: MotoServer, settings: dict[str, str]) -> None:
    with Worker(moto, settings) as worker:
        run = worker.call(wf.start(order, "o-1"))
        with TestClient(create_app(world="aws"), base_url=BASE) as web:
            # The runs page and the API list the run, read from DynamoDB.
            assert run.id in web.get("/").text
            assert [r["id"] for r in web.get("/api/runs").json()["runs"]] == [run.id]

            def waiting() -> bool:
                doc = web.get(f"/api/runs/{run.id}").json()
                return bool(doc["hooks_waiting"])

            _until(waiting)
            page = web.get(f"/runs/{run.id}").text
            assert "web-aws.charge" in page and "web-aws:o-1" in page
            doc = web.get(f"/api/runs/{run.id}").json()
            (step,) = doc["steps"]
            assert [a["outcome"] for a in step["history"]] == ["retried", "completed"]

            token = re.search(r'<meta name="wf-token" content="([^"]+)">', web.get("/").text)
            assert token is not None
            headers = {TOKEN_HEADER: token.group(1), "Origin": BASE}
            answer = web.post(
                "/api/hooks/resume", json={"token": "web-aws:o-1", "payload": "ok"}, headers=headers
            )
            assert answer.status_code == 200, answer.text

            def done() -> Any:
                doc = web.get(f"/api/runs/{run.id}").json()
                # moto applies an update's SET actions one by one in place, so a read
                # racing the run's last write may see its status before its output
                # (DynamoDB itself is atomic): wait for both.
                return doc if doc["status"] == "completed" and doc["result"] is not None else None

            finished = _until(done)
            assert finished["result"] == {"receipt": "charged o-1", "answer": "ok"}
            rerun = web.post(f"/api/runs/{run.id}/rerun", json={}, headers=headers)
            assert rerun.status_code == 200, rerun.text
            assert len(web.get("/api/runs").json()["runs"]) == 2
