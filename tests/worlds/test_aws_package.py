"""`worldflow setup aws` and `worldflow package aws`, as a user runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from worldflow.worlds.aws.testing import MotoServer

# Builds and checks zips with pip and fresh interpreters: minutes on a loaded machine.
pytestmark = pytest.mark.timeout(300)

PROJECT = """\
import worldflow as wf


@wf.step
async def double(x: int) -> int:
    return 2 * x


@wf.workflow
async def twice(x: int) -> int:
    return await double(await double(x))
"""


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoServer]:
    with MotoServer() as server:
        yield server


def _cli(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "worldflow", *args],
        cwd=cwd,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_setup_creates_the_resources_and_prints_the_exports(
    moto: MotoServer, tmp_path: Path
) -> None:
    moto.reset()
    done = _cli(["setup", "aws", "--name", "shop"], tmp_path, moto.env())
    assert done.returncode == 0, done.stderr
    exports = dict(line.removeprefix("export ").split("=", 1) for line in done.stdout.splitlines())
    assert exports["WORLDFLOW_WORLD"] == "aws" and exports["WORLDFLOW_AWS_TABLE"] == "shop"
    assert exports["WORLDFLOW_AWS_BUCKET"] == "shop-payloads"
    session = moto.session()
    sqs = session.client("sqs", endpoint_url=moto.url)
    attributes = sqs.get_queue_attributes(
        QueueUrl=exports["WORLDFLOW_AWS_QUEUE_URL"], AttributeNames=["RedrivePolicy"]
    )["Attributes"]
    assert json.loads(attributes["RedrivePolicy"])["deadLetterTargetArn"].endswith("shop-dlq")
    # Running it again finds what exists: not an error.
    again = _cli(["setup", "aws", "--name", "shop", "--json"], tmp_path, moto.env())
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["WORLDFLOW_AWS_TABLE"] == "shop"


def test_setup_against_nothing_fails_clearly(tmp_path: Path) -> None:
    env = {"AWS_ENDPOINT_URL": "http://127.0.0.1:9", "AWS_ACCESS_KEY_ID": "x"}
    env |= {"AWS_SECRET_ACCESS_KEY": "x", "AWS_DEFAULT_REGION": "us-east-1"}
    env |= {"AWS_MAX_ATTEMPTS": "1"}
    done = _cli(["setup", "aws"], tmp_path, env)
    assert done.returncode == 1
    assert "AWS DynamoDB CreateTable on table 'worldflow' failed" in done.stderr


def _project(root: Path, body: str = PROJECT) -> None:
    (root / "shop").mkdir()
    (root / "shop" / "__init__.py").write_text("")
    (root / "shop" / "flows.py").write_text(body)


def _wheel_paths() -> set[str]:
    """Every module file the wheel has, as its path in the zip (core/ is worldflow/)."""
    repo = Path(__file__).resolve().parents[2]
    names = {f"worldflow/{p.relative_to(repo / 'core')}" for p in (repo / "core").rglob("*.py")}
    names |= {
        f"worldflow/worlds/{p.relative_to(repo / 'worlds')}"
        for p in (repo / "worlds").rglob("*.py")
    }
    return {n for n in names if "__pycache__" not in n}


def test_package_builds_a_zip_that_imports_the_handler(tmp_path: Path) -> None:
    _project(tmp_path)
    done = _cli(
        ["package", "aws", "shop.flows", "--no-deps", "--stack-name", "shop", "--json"],
        tmp_path,
        {},
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["deploy"][:2] == ["sam", "deploy"]
    assert "WorkflowModules=shop.flows" in report["deploy"]
    assert "FunctionTimeout=300" in report["deploy"]
    assert report["checked_with"] not in ("", "not checked")
    archive = tmp_path / report["zip"]
    names = zipfile.ZipFile(archive).namelist()
    assert "shop/flows.py" in names
    # worldflow's whole wheel: every module of every subpackage, and its metadata.
    assert _wheel_paths() <= set(names), sorted(_wheel_paths() - set(names))[:5]
    assert any(n.endswith(".dist-info/METADATA") for n in names)
    assert not any("__pycache__" in n or n.endswith(".pyc") for n in names)
    assert (tmp_path / report["template"]).read_text().count("worldflow.worlds.aws.lambda_handler")
    # The zip alone gives the handler and the user's workflows (zipimport, as on Lambda's path).
    probe = (
        "import sys; sys.path.insert(0, sys.argv[1]); import worldflow, shop.flows; "
        "from worldflow.worlds.aws import lambda_handler; "
        "assert worldflow.__file__.startswith(sys.argv[1]), worldflow.__file__; print('ok')"
    )
    ran = subprocess.run(
        [sys.executable, "-c", probe, str(archive)],
        cwd=tmp_path / "..",
        capture_output=True,
        text=True,
        check=False,
    )
    assert ran.returncode == 0 and ran.stdout.strip() == "ok", ran.stderr


def test_package_refuses_a_zip_that_does_not_import(tmp_path: Path) -> None:
    """A module that imports something the zip lacks: the command fails, saying what."""
    _project(tmp_path, PROJECT + "\nimport not_in_the_zip_anywhere\n")
    done = _cli(["package", "aws", "shop.flows", "--no-deps"], tmp_path, {})
    assert done.returncode == 1, done.stderr
    assert "does not import on its own" in done.stderr
    assert "No module named 'not_in_the_zip_anywhere'" in done.stderr
    assert "Traceback" not in done.stderr


def test_package_refuses_a_step_longer_than_the_function_timeout(tmp_path: Path) -> None:
    _project(tmp_path, PROJECT.replace("@wf.step\n", '@wf.step(timeout="10m")\n'))
    done = _cli(["package", "aws", "shop.flows", "--no-deps"], tmp_path, {})
    assert done.returncode == 1, done.stderr
    assert "step 'shop.flows.double' has timeout=10m" in done.stderr
    assert "the function's timeout (FunctionTimeout) (5m" in done.stderr
    longer = _cli(
        ["package", "aws", "shop.flows", "--no-deps", "--function-timeout", "900"], tmp_path, {}
    )
    assert longer.returncode == 0, longer.stderr


def test_package_names_a_missing_module(tmp_path: Path) -> None:
    done = _cli(["package", "aws", "nowhere.flows", "--no-deps"], tmp_path, {})
    assert done.returncode == 1
    assert "nowhere" in done.stderr and "project's root" in done.stderr


def test_the_cli_on_the_aws_world(moto: MotoServer, tmp_path: Path) -> None:
    """`worldflow worker` serves runs from the queue; `worldflow start --wait` and
    `worldflow runs list` from another process only start and look."""
    moto.reset()
    root = Path(__file__).resolve().parents[2]
    done = _cli(["setup", "aws", "--json"], tmp_path, moto.env())
    env = {**moto.env(), **json.loads(done.stdout), "PYTHONPATH": str(root)}
    env.pop("WORLDFLOW_MODULES", None)
    worker = subprocess.Popen(
        [sys.executable, "-m", "worldflow", "worker", "examples.hail_ride"],
        cwd=root,
        env={**os.environ, **env, "WORLDFLOW_AWS_POLL_WAIT": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        client = {**env, "WORLDFLOW_AWS_POLL": "0"}
        started = _cli(
            ["start", "examples.hail_ride:hail_ride", '"req-42"', "--wait", "--timeout", "30s"],
            root,
            client,
        )
        assert started.returncode == 0, started.stderr
        assert "Ana" in started.stdout
        listed = _cli(["runs", "list", "--json"], root, client)
        assert listed.returncode == 0, listed.stderr
        runs = json.loads(listed.stdout)
        assert [r["status"] for r in runs["runs"]] == ["completed"]
    finally:
        worker.terminate()
        _, errors = worker.communicate(timeout=30)
    assert worker.returncode == 0, errors
