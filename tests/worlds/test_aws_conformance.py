"""The AWS world passes the conformance suite against a moto server, warm and always
replaying: with a worker polling SQS (webhooks through the real Lambda handler, as
function URL events), and through the Lambda host itself (the test's process is a
plain client; every message is an SQS record handed to ``lambda_handler``)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Iterator

import pytest

import worldflow as wf
from worldflow.testing import Harness, WorldConformance
from worldflow.worlds.aws import AwsWorld, _host, setup
from worldflow.worlds.aws.testing import LambdaHarness, MotoServer, WebhookGateway, world_factory


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


class TestAwsWorldRemoteSteps(TestAwsWorld):
    remote_steps = True  # every step a message any worker takes (worldflow._remote)


# Replay is the engine's: the local, postgres and gcp worlds run every step remote while
# always replaying. Here it is over 3 minutes more of CI; a flag away.
@pytest.mark.skipif(
    not os.environ.get("WORLDFLOW_FULL_MATRIX"),
    reason="every step remote, always replaying, on moto: set WORLDFLOW_FULL_MATRIX=1",
)
class TestAwsWorldRemoteStepsAlwaysReplay(TestAwsWorld):
    remote_steps = True
    always_replay = True


# -- through the Lambda host -------------------------------------------------------------


class ThroughLambda(Harness):
    """The suite's harness as a plain script on the aws world: a client runtime (it
    starts, signals and looks at runs, serves nothing). Runs execute in "Lambda": a
    LambdaHarness feeds every SQS message to ``lambda_handler``. A restart is a cold
    Lambda process too."""

    new_host: Callable[[], None] = staticmethod(lambda: None)

    async def restart(self) -> None:
        await self.close()
        await asyncio.to_thread(type(self).new_host)
        self.world = self.make_world()
        await self._open()


class TestAwsWorldThroughLambda(WorldConformance):
    timeout = 60.0
    serve = False  # this process is a plain client; "Lambda" executes the runs
    harness_class = ThroughLambda

    @pytest.fixture
    def make_world(
        self, aws: dict[str, str], moto: MotoServer, monkeypatch: pytest.MonkeyPatch
    ) -> Iterator[Callable[[], AwsWorld]]:
        clock = wf.VirtualClock()
        session = moto.session()
        replay = self.always_replay

        def functions(url: str) -> Callable[..., AwsWorld]:
            return world_factory(
                aws, session=session, endpoint_url=moto.url, clock=clock, public_url=url, poll=False
            )

        # The function URL is served by another "container" than the one the event
        # source mapping invokes, as Lambda does with concurrent invocations.
        gateway_host = _host.LambdaHost(always_replay=replay)
        with WebhookGateway(handler=gateway_host) as gateway:
            make = functions(gateway.url)
            gateway_host.make_world = make

            def new_host() -> None:
                _host.install(_host.LambdaHost(make, always_replay=replay))

            new_host()
            monkeypatch.setattr(ThroughLambda, "new_host", staticmethod(new_host))
            harness = LambdaHarness(aws["WORLDFLOW_AWS_QUEUE_URL"], session, moto.url, visibility=2)
            with harness:
                yield make
            _host.reset()
        assert not harness.errors, harness.errors


# Replay is the engine's, the same whatever the host: the poller classes above run the
# suite always replaying. Through Lambda as well is 90 s more of CI; a flag away.
@pytest.mark.skipif(
    not os.environ.get("WORLDFLOW_FULL_MATRIX"),
    reason="always-replay through the Lambda host: set WORLDFLOW_FULL_MATRIX=1",
)
class TestAwsWorldThroughLambdaAlwaysReplay(TestAwsWorldThroughLambda):
    always_replay = True


# Every step remote through the Lambda host: over 5 minutes more of CI; a flag away.
# (Its one failure, test_start_timeout_and_a_child_that_times_out, was a race in
# _host.install, fixed: the poller classes above run every step remote.)
@pytest.mark.skipif(
    not os.environ.get("WORLDFLOW_FULL_MATRIX"),
    reason="every step remote through the Lambda host: set WORLDFLOW_FULL_MATRIX=1",
)
class TestAwsWorldThroughLambdaRemoteSteps(TestAwsWorldThroughLambda):
    remote_steps = True  # every step its own Lambda invocation (worldflow._remote)
