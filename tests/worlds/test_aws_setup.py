"""`worldflow setup aws` works the first time: region and credentials are found where
boto3 finds them, a missing one is one line naming the variable to set, and
docs/aws.md's "run it locally against moto" walkthrough runs as written."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from worldflow.worlds.aws.testing import MotoServer

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "aws.md"


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoServer]:
    with MotoServer() as server:
        yield server


def _bare_env(tmp_path: Path, **more: str) -> dict[str, str]:
    """This process's environment without any AWS setting, and a HOME with no ~/.aws."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "WORLDFLOW_"))}
    env.update(
        HOME=str(tmp_path),
        AWS_CONFIG_FILE=str(tmp_path / "no-config"),
        AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "no-credentials"),
        AWS_EC2_METADATA_DISABLED="true",  # no instance role lookup (a 1 s timeout each)
    )
    env.update(more)
    return env


def _setup(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "worldflow", "setup", "aws", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_setup_without_a_region_names_the_variable(moto: MotoServer, tmp_path: Path) -> None:
    env = _bare_env(tmp_path, AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing")
    done = _setup(["--endpoint-url", moto.url], env, tmp_path)
    assert done.returncode != 0
    assert "no AWS region is configured: set AWS_DEFAULT_REGION" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


def test_setup_without_credentials_names_the_variables(moto: MotoServer, tmp_path: Path) -> None:
    env = _bare_env(tmp_path, AWS_DEFAULT_REGION="us-east-1")
    done = _setup(["--endpoint-url", moto.url], env, tmp_path)
    assert done.returncode != 0
    assert "no AWS credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY" in (
        done.stderr
    ), done.stderr
    assert "Traceback" not in done.stderr


def test_setup_takes_aws_region_too(moto: MotoServer, tmp_path: Path) -> None:
    """botocore reads AWS_DEFAULT_REGION only; AWS_REGION alone failed with NoRegionError
    before. The region reaches every client (the queue URL is moto's for it)."""
    moto.reset()
    env = _bare_env(
        tmp_path,
        AWS_REGION="eu-west-1",
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
    )
    done = _setup(["--endpoint-url", moto.url, "--json"], env, tmp_path)
    assert done.returncode == 0, done.stderr
    settings = json.loads(done.stdout)
    # moto keeps queues per region: the queue is found in eu-west-1, where it was made.
    sqs = moto.session().client("sqs", endpoint_url=moto.url, region_name="eu-west-1")
    assert (
        sqs.get_queue_url(QueueName="worldflow")["QueueUrl"] == settings["WORLDFLOW_AWS_QUEUE_URL"]
    )


def test_the_help_names_the_variables_boto3_reads(tmp_path: Path) -> None:
    done = _setup(["--help"], _bare_env(tmp_path), tmp_path)
    assert done.returncode == 0
    text = " ".join(done.stdout.split())
    assert "AWS_DEFAULT_REGION" in text
    assert "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY" in text


def _walkthrough() -> str:
    """The bash block of docs/aws.md's "Run it locally against moto" section."""
    text = DOC.read_text()
    section = text.split("## Run it locally against moto", 1)[1].split("\n## ", 1)[0]
    (block,) = re.findall(r"```bash\n(.*?)```", section, flags=re.DOTALL)
    return block


@pytest.mark.slow
@pytest.mark.timeout(240)  # runs the worldflow command in subprocesses
def test_the_walkthrough_runs_against_moto(moto: MotoServer, tmp_path: Path) -> None:
    """Every command of the walkthrough, in one bash, as written; only the install (done:
    this is the test environment) and the moto server (this test's, on a free port)
    differ."""
    moto.reset()
    script = _walkthrough()
    lines = script.splitlines()
    assert lines[0].startswith("pip install 'worldflow[aws]' 'moto[server]'")
    assert lines[1] == "moto_server -p 5000 &"
    script = "\n".join(lines[2:]).replace("127.0.0.1:5000", f"127.0.0.1:{moto.port}")
    bin_dir = Path(sys.executable).parent
    env = _bare_env(tmp_path, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=150,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout.splitlines()
    assert "12" in out, done.stdout  # worldflow start --wait prints the result
    assert "flows.twice" in done.stdout and "completed" in done.stdout  # runs list
    assert "no dead letters" in done.stdout + done.stderr
