"""The AWS world passes the whole conformance suite against a moto server, warm and
always replaying; webhooks go through the real Lambda handler (function URL events)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

import worldflow as wf
from worldflow.testing import WorldConformance
from worldflow.worlds.aws import AwsWorld, setup
from worldflow.worlds.aws.testing import MotoServer, WebhookGateway


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoServer]:
    with MotoServer() as server:
        yield server


@pytest.fixture
def aws(moto: MotoServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    moto.reset()
    settings = setup("wf-test", session=moto.session(), endpoint_url=moto.url)
    for key, value in {**moto.env(), **settings}.items():
        monkeypatch.setenv(key, value)
    yield settings


class TestAwsWorld(WorldConformance):
    @pytest.fixture
    def make_world(self, aws: dict[str, str], moto: MotoServer) -> Iterator[Callable[[], AwsWorld]]:
        clock = wf.VirtualClock()
        session = moto.session()  # one session: it caches the service models (~0.2 s a client)
        with WebhookGateway() as gateway:

            def make() -> AwsWorld:
                return AwsWorld(
                    aws["WORLDFLOW_AWS_TABLE"],
                    aws["WORLDFLOW_AWS_QUEUE_URL"],
                    aws["WORLDFLOW_AWS_BUCKET"],
                    clock=clock,
                    session=session,
                    endpoint_url=moto.url,
                    public_url=gateway.url,
                    poll_wait=1,
                    visibility=20,
                    heartbeat=0.5,
                    worker_lease=2.0,
                )

            yield make


class TestAwsWorldAlwaysReplay(TestAwsWorld):
    always_replay = True
