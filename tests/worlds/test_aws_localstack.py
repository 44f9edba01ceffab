"""The AWS world against LocalStack, an optional path: the conformance suite, and the
subprocess walkthrough of docs/aws.md pointed at LocalStack with ``AWS_ENDPOINT_URL``.

LocalStack comes from one of two places:

- ``WORLDFLOW_TEST_LOCALSTACK_URL``: one already running (``docker run -p
  4566:4566 localstack/localstack:4.14``);
- otherwise pytest-localstack (``pip install 'worldflow[localstack]'``), which
  starts the pinned image in Docker for this module and stops it after.

Without either (no URL, and no pytest-localstack or no Docker engine, as on
this project's CI), every test here is skipped with the reason. The image is
pinned to LocalStack 4.14, pytest-localstack 0.8.0's default: its authors pin
it as the last community release before LocalStack's images required an auth
token (their note; this machine has no Docker engine to check it on).
"""

from __future__ import annotations

import gc
import importlib
import os
import re
import subprocess
import sys
import urllib.request
import uuid
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import worldflow as wf
from worldflow.testing import WorldConformance
from worldflow.worlds.aws import AwsWorld, setup
from worldflow.worlds.aws.testing import WebhookGateway, world_factory

#: The LocalStack image version pytest-localstack starts.
LOCALSTACK_VERSION = "4.14"
URL = os.environ.get("WORLDFLOW_TEST_LOCALSTACK_URL")
DOC = Path(__file__).resolve().parents[2] / "docs" / "aws.md"
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "test",
    "AWS_SECRET_ACCESS_KEY": "test",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/_localstack/health", timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def _docker_problem() -> str | None:
    """Why pytest-localstack cannot start LocalStack here (None: it can)."""
    try:
        importlib.import_module("pytest_localstack")
    except ImportError:
        return "pytest-localstack is not installed (pip install 'worldflow[localstack]')"
    host = os.environ.get("DOCKER_HOST")
    if not host and not Path("/var/run/docker.sock").exists():
        return "no Docker engine (DOCKER_HOST is unset and there is no /var/run/docker.sock)"
    with warnings.catch_warnings():
        # A client whose engine does not answer leaves its socket to the collector.
        warnings.simplefilter("ignore", ResourceWarning)
        try:
            client = importlib.import_module("docker").from_env()
            try:
                client.ping()
            finally:
                client.close()
        except Exception as exc:  # docker.errors.DockerException: the engine does not answer
            return f"no Docker engine answers ({type(exc).__name__}: {str(exc)[:120]})"
        finally:
            gc.collect()
    return None


@pytest.fixture(scope="module")
def localstack() -> Iterator[str]:
    """The endpoint of a running LocalStack: the given one, or one pytest-localstack
    starts in Docker (guarded: its own fixture raises where there is no Docker)."""
    if URL:
        if not _healthy(URL):
            pytest.skip(f"no LocalStack answers at WORLDFLOW_TEST_LOCALSTACK_URL={URL}")
        yield URL
        return
    problem = _docker_problem()
    if problem is not None:
        pytest.skip(f"no LocalStack: {problem}; or set WORLDFLOW_TEST_LOCALSTACK_URL")
    client = importlib.import_module("docker").from_env()
    sessions = importlib.import_module("pytest_localstack.session")
    try:
        with sessions.LocalstackSession(client, localstack_version=LOCALSTACK_VERSION) as session:
            yield str(session.endpoint_url("sqs"))  # every service is on the edge port
    finally:
        client.close()


class TestAwsWorldOnLocalStack(WorldConformance):
    @pytest.fixture
    def make_world(
        self, localstack: str, monkeypatch: pytest.MonkeyPatch
    ) -> Iterator[Callable[[], AwsWorld]]:
        import boto3

        session = boto3.session.Session(
            aws_access_key_id="test", aws_secret_access_key="test", region_name="us-east-1"
        )
        settings = setup(f"wf-{uuid.uuid4().hex[:8]}", session=session, endpoint_url=localstack)
        for key, value in {**CREDENTIALS, "AWS_ENDPOINT_URL": localstack, **settings}.items():
            monkeypatch.setenv(key, value)  # the Lambda handler behind the gateway reads them
        clock = wf.VirtualClock()
        with WebhookGateway() as gateway:
            yield world_factory(
                settings,
                session=session,
                endpoint_url=localstack,
                clock=clock,
                public_url=gateway.url,
            )


class TestAwsWorldOnLocalStackAlwaysReplay(TestAwsWorldOnLocalStack):
    always_replay = True


@pytest.mark.slow
def test_the_walkthrough_against_localstack(localstack: str, tmp_path: Path) -> None:
    """docs/aws.md's walkthrough, its moto server swapped for LocalStack: `worldflow setup
    aws`, a worker, `worldflow start --wait`, `runs list`, `dlq list`, in subprocesses
    that find LocalStack through AWS_ENDPOINT_URL."""
    section = DOC.read_text().split("## Run it locally against moto", 1)[1].split("\n## ", 1)[0]
    (block,) = re.findall(r"```bash\n(.*?)```", section, flags=re.DOTALL)
    lines = block.splitlines()
    assert lines[1] == "moto_server -p 5000 &"
    script = "\n".join(lines[2:]).replace("http://127.0.0.1:5000", localstack)
    script = script.replace(
        "worldflow setup aws", f"worldflow setup aws --name wf-{uuid.uuid4().hex[:8]}"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "WORLDFLOW_"))}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "12" in done.stdout.splitlines(), done.stdout
