"""``worldflow package gcp``: a container build for the service, and the exact commands.

Writes into the project (never overwriting a file that is there): the
Dockerfile of infra/gcp, a requirements.txt for what the steps need, a
.dockerignore; and, every time, worldflow's own wheel into
``.worldflow-build/wheels/`` (built from the checkout or editable install, or
packed again from a wheel install: :mod:`worldflow.packaging`), which the
Dockerfile installs with its ``[gcp]`` extra, so the image never depends on
a worldflow release being on a package index. The context is then checked:
a fresh interpreter imports the service's app and the workflow modules from
it (worldflow and the modules must come from the context), and no step may
have a timeout longer than Cloud Run's request timeout. Then it prints the
gcloud and terraform commands that build the image, deploy infra/gcp and
check the service, for the project and region of the WORLDFLOW_GCP_* settings.
"""

from __future__ import annotations

import dataclasses
import re
import shlex
import tempfile
import zipfile
from pathlib import Path

from worldflow.packaging import check_imports, worldflow_wheel

from ._settings import GcpSettings

__all__ = ["APP_MODULE", "DOCKERFILE", "REQUEST_TIMEOUT", "WHEELS", "Plan", "plan"]

#: The module of the service's ASGI app (the Dockerfile's CMD).
APP_MODULE = "worldflow.worlds.gcp.app"
#: Where in the build context worldflow's wheel goes (the Dockerfile copies it).
WHEELS = ".worldflow-build/wheels"
#: Cloud Run's request timeout as infra/gcp/main.tf sets it (seconds).
REQUEST_TIMEOUT = 600

# The same text as infra/gcp/Dockerfile (tests/worlds/test_gcp_deploy.py checks it).
DOCKERFILE = """\
# The Cloud Run service: the project's workflows served by worldflow's ASGI app.
#
# Build context: your project's root (the folder with your workflow modules, a
# requirements.txt of what your steps need, and worldflow's wheel in
# .worldflow-build/wheels/), e.g.
#
#   worldflow package gcp --modules shop.flows   # writes them, prints the commands
#   gcloud builds submit --tag REGION-docker.pkg.dev/PROJECT/REPO/worldflow .
#
# WORLDFLOW_MODULES (set by infra/gcp/main.tf) names the modules to import.
FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 \\
    PYTHONUNBUFFERED=1 \\
    PIP_NO_CACHE_DIR=1 \\
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY .worldflow-build/wheels/ /tmp/wheels/
RUN whl="$(ls /tmp/wheels/worldflow-*.whl)" && pip install "${whl}[gcp]" && rm -r /tmp/wheels
COPY requirements.txt .
RUN pip install -r requirements.txt
COPY . .

# Not root: the service needs no privileges of the container's.
RUN useradd --system --uid 10001 worldflow
USER worldflow

# Cloud Run probes the port itself; this is for `docker run` and other hosts.
HEALTHCHECK --interval=30s --timeout=3s \\
    CMD python -c "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('PORT', '8080'), timeout=2)"

# Cloud Run sets PORT. One process per instance: the runtime's warm cache is
# per process, and concurrency comes from asyncio (the service's concurrency
# setting), not from more workers.
CMD exec uvicorn worldflow.worlds.gcp.app:app --host 0.0.0.0 --port "${PORT:-8080}" \\
    --no-access-log --timeout-graceful-shutdown 9
"""

DOCKERIGNORE = """\
.git
.venv*
.worldflow
__pycache__
*.py[co]
.terraform
*.tfstate*
"""

_MODULE = re.compile(r"^[A-Za-z_][\w.]*$")


REQUIREMENTS = """\
# What your steps need, one requirement a line (worldflow itself is installed
# from .worldflow-build/wheels/ by the Dockerfile).
"""


@dataclasses.dataclass(frozen=True)
class Plan:
    written: list[str]
    kept: list[str]
    commands: list[str]
    wheel: str = ""


def _write(path: Path, text: str, written: list[str], kept: list[str]) -> None:
    if path.exists():
        kept.append(str(path))
    else:
        path.write_text(text)
        written.append(str(path))


def plan(
    settings: GcpSettings,
    modules: list[str],
    out: Path,
    infra: str = "infra/gcp",
    *,
    request_timeout: float = REQUEST_TIMEOUT,
    check: bool = True,
) -> Plan:
    """Write the build files into ``out`` and return the commands to run, in order.

    Raises :class:`~worldflow.packaging.PackagingError` if the app or a module does
    not import from the context, or a step's timeout is longer than ``request_timeout``.
    """
    bad = [m for m in modules if not _MODULE.match(m)]
    if not modules or bad:
        raise ValueError(
            f"name the modules that define your workflows (e.g. --modules shop.flows), got {bad or modules}"
        )
    out.mkdir(parents=True, exist_ok=True)
    written: list[str] = []
    kept: list[str] = []
    _write(out / "Dockerfile", DOCKERFILE, written, kept)
    _write(out / "requirements.txt", REQUIREMENTS, written, kept)
    _write(out / ".dockerignore", DOCKERIGNORE, written, kept)
    wheel = worldflow_wheel(out / WHEELS)
    if check:
        with tempfile.TemporaryDirectory(prefix="worldflow-check-") as unpacked:
            with zipfile.ZipFile(wheel) as archive:
                archive.extractall(unpacked)
            tops = sorted({m.split(".")[0] for m in modules})
            check_imports(
                [Path(unpacked), out],
                [APP_MODULE, *modules],
                from_build=("worldflow", *tops),
                step_limit=(request_timeout, "Cloud Run's request timeout"),
            )

    p, r = settings.project, settings.location
    repo = "worldflow"
    image = f"{r}-docker.pkg.dev/{p}/{repo}/{settings.queue}:latest"
    q = shlex.quote
    commands = [
        f"gcloud services enable artifactregistry.googleapis.com cloudbuild.googleapis.com"
        f" --project {q(p)}",
        f"gcloud artifacts repositories create {repo} --repository-format=docker"
        f" --location {q(r)} --project {q(p)}",
        f"gcloud builds submit {q(str(out))} --tag {q(image)} --project {q(p)}",
        f"terraform -chdir={q(infra)} init",
        f"terraform -chdir={q(infra)} apply"
        f" -var project={q(p)} -var region={q(r)} -var service_name={q(settings.queue)}"
        f" -var image={q(image)} -var modules={q(','.join(modules))}"
        f" -var bucket_name={q(settings.bucket or p + '-worldflow-payloads')}",
        f'URL="$(terraform -chdir={q(infra)} output -raw service_url)"',
        'curl -fsS "$URL/healthz"',
    ]
    return Plan(written, kept, commands, str(wheel))
