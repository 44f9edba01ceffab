"""The conformance suite against LocalStack, where one runs (skipped cleanly otherwise).

Start LocalStack (``docker run -p 4566:4566 localstack/localstack``), or point
``WORLDFLOW_TEST_LOCALSTACK_URL`` at one; this machine's CI has no Docker
engine, so there the class is skipped with the reason.
"""

from __future__ import annotations

import os
import urllib.request
import uuid
from collections.abc import Callable, Iterator

import pytest

import worldflow as wf
from worldflow.testing import WorldConformance
from worldflow.worlds.aws import AwsWorld, setup
from worldflow.worlds.aws.testing import WebhookGateway, world_factory

URL = os.environ.get("WORLDFLOW_TEST_LOCALSTACK_URL", "http://127.0.0.1:4566")


def _localstack_running() -> bool:
    try:
        with urllib.request.urlopen(f"{URL}/_localstack/health", timeout=1) as response:
            return bool(response.status == 200)
    except OSError:
        return False


pytestmark = pytest.mark.skipif(
    not _localstack_running(), reason=f"no LocalStack at {URL} (set WORLDFLOW_TEST_LOCALSTACK_URL)"
)


class TestAwsWorldOnLocalStack(WorldConformance):
    @pytest.fixture
    def make_world(self, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[], AwsWorld]]:
        import boto3

        credentials = {
            "AWS_ACCESS_KEY_ID": "test",
            "AWS_SECRET_ACCESS_KEY": "test",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ENDPOINT_URL": URL,
        }
        session = boto3.session.Session(
            aws_access_key_id="test", aws_secret_access_key="test", region_name="us-east-1"
        )
        settings = setup(f"wf-{uuid.uuid4().hex[:8]}", session=session, endpoint_url=URL)
        for key, value in {**credentials, **settings}.items():
            monkeypatch.setenv(key, value)  # the Lambda handler behind the gateway reads them
        clock = wf.VirtualClock()
        with WebhookGateway() as gateway:
            yield world_factory(
                settings,
                session=session,
                endpoint_url=URL,
                clock=clock,
                public_url=gateway.url,
            )


class TestAwsWorldOnLocalStackAlwaysReplay(TestAwsWorldOnLocalStack):
    always_replay = True
