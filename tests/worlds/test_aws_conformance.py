"""The AWS world passes the whole conformance suite against a moto server, warm and
always replaying; webhooks go through the real Lambda handler (function URL events)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

import worldflow as wf
from worldflow.testing import WorldConformance
from worldflow.worlds.aws import AwsWorld, setup
from worldflow.worlds.aws.testing import MotoServer, WebhookGateway, world_factory


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
        session = moto.session()
        with WebhookGateway() as gateway:
            yield world_factory(
                aws,
                session=session,
                endpoint_url=moto.url,
                clock=clock,
                public_url=gateway.url,
            )


class TestAwsWorldAlwaysReplay(TestAwsWorld):
    always_replay = True
