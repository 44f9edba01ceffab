"""``worldflow setup gcp`` and ``worldflow package gcp``, through the real command line."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

from worldflow.worlds.gcp import GcpSettings
from worldflow.worlds.gcp._package import DOCKERFILE, WHEELS
from worldflow.worlds.gcp._queue import make_client
from worldflow.worlds.gcp._setup import delete_queue
from worldflow.worlds.gcp.testing import settings_for_test

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gcp_support import emulators

INFRA = Path(__file__).resolve().parents[2] / "infra" / "gcp"


def _cli(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("WORLDFLOW_")}
    return subprocess.run(
        [sys.executable, "-m", "worldflow", *args],
        env={**base, **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_setup_creates_the_queue_and_prints_the_exports(tmp_path: Path) -> None:
    em = emulators()
    settings = settings_for_test(em)
    env = {
        "WORLDFLOW_GCP_PROJECT": settings.project,
        "WORLDFLOW_GCP_LOCATION": settings.location,
        "WORLDFLOW_GCP_QUEUE": settings.queue,
        "WORLDFLOW_GCP_TASKS_ENDPOINT": em.tasks_endpoint,
        "WORLDFLOW_GCP_BUCKET": f"b-{settings.queue}",
    }
    try:
        done = _cli(["setup", "gcp"], env, tmp_path)
        assert done.returncode == 0, done.stderr
        assert f"queue {settings.queue_path}: created" in done.stderr
        assert f"bucket gs://b-{settings.queue}: created" in done.stderr
        assert "export STORAGE_EMULATOR_HOST=" in done.stdout
        assert f"export WORLDFLOW_GCP_QUEUE={settings.queue}" in done.stdout
        assert "export WORLDFLOW_WORLD=gcp" in done.stdout

        async def queue() -> Any:
            client = make_client(settings)
            try:
                return await client.get_queue(name=settings.queue_path)
            finally:
                await client.transport.close()

        made = asyncio.run(queue())
        assert made.name == settings.queue_path
        # The retry config Terraform gives the queue (a bounded backstop with a backoff).
        retry = made.retry_config
        assert (retry.max_attempts, retry.max_doublings) == (100, 8)
        assert (retry.min_backoff.total_seconds(), retry.max_backoff.total_seconds()) == (1, 300)
        again = _cli(["setup", "gcp", "--json"], env, tmp_path)
        assert again.returncode == 0, again.stderr
        assert f"bucket gs://b-{settings.queue}: exists" in json.loads(again.stdout)["done"]
        assert json.loads(again.stdout)["env"]["WORLDFLOW_GCP_PROJECT"] == settings.project
    finally:
        asyncio.run(delete_queue(settings))


def test_setup_without_a_project_says_what_to_set(tmp_path: Path) -> None:
    done = _cli(["setup", "gcp"], {}, tmp_path)
    assert done.returncode != 0
    assert "WORLDFLOW_GCP_PROJECT" in done.stderr


FLOWS = """\
import worldflow as wf


@wf.step
async def double(x: int) -> int:
    return 2 * x


@wf.workflow
async def twice(x: int) -> int:
    return await double(await double(x))
"""


def test_package_writes_the_build_and_prints_the_commands(tmp_path: Path) -> None:
    env = {"WORLDFLOW_GCP_PROJECT": "acme-prod", "WORLDFLOW_GCP_LOCATION": "europe-west1"}
    (tmp_path / "shop").mkdir()
    (tmp_path / "shop" / "__init__.py").write_text("")
    (tmp_path / "shop" / "flows.py").write_text(FLOWS)
    done = _cli(["package", "gcp", "--modules", "shop.flows", "--json"], env, tmp_path)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert (tmp_path / "Dockerfile").read_text() == DOCKERFILE
    # worldflow comes from its own wheel in the context, never from a package index.
    wheel = tmp_path / result["wheel"]
    assert wheel.parent == tmp_path / WHEELS and wheel.name.endswith("-py3-none-any.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "worldflow/worlds/gcp/app.py" in names and "worldflow/worlds/local/_store.py" in names
    assert "worldflow" not in (tmp_path / "requirements.txt").read_text().split("#")[0]
    assert "COPY .worldflow-build/wheels/" in DOCKERFILE
    commands = "\n".join(result["commands"])
    image = "europe-west1-docker.pkg.dev/acme-prod/worldflow/worldflow:latest"
    assert f"gcloud builds submit . --tag {image} --project acme-prod" in commands
    assert "-var modules=shop.flows" in commands and "-var project=acme-prod" in commands
    # A second run keeps what is there (the user may have edited it).
    (tmp_path / "requirements.txt").write_text("worldflow[gcp]\nhttpx\n")
    again = _cli(["package", "gcp", "--modules", "shop.flows", "--json"], env, tmp_path)
    assert json.loads(again.stdout)["kept"] == ["Dockerfile", "requirements.txt", ".dockerignore"]
    assert "httpx" in (tmp_path / "requirements.txt").read_text()
    bad = _cli(["package", "gcp"], env, tmp_path)
    assert bad.returncode == 2 and "--modules" in bad.stderr
    # A module the context lacks, and a step longer than Cloud Run allows: refused.
    missing = _cli(["package", "gcp", "--modules", "shop.nowhere"], env, tmp_path)
    assert missing.returncode == 1 and "No module named 'shop.nowhere'" in missing.stderr
    (tmp_path / "shop" / "flows.py").write_text(FLOWS.replace("@wf.step", '@wf.step(timeout="1h")'))
    long = _cli(["package", "gcp", "--modules", "shop.flows"], env, tmp_path)
    assert long.returncode == 1 and "Cloud Run's request timeout (10m" in long.stderr, long.stderr


def test_the_packaged_dockerfile_is_infra_gcps() -> None:
    assert (INFRA / "Dockerfile").read_text() == DOCKERFILE


def test_settings_for_the_package_need_no_service_url() -> None:
    assert GcpSettings.from_mapping({"project": "p"}).service_url is None
