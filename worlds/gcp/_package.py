"""``worldflow package gcp``: a container build for the service, and the exact commands.

Writes into the project (never overwriting a file that is there): the
Dockerfile of infra/gcp, a requirements.txt that installs worldflow[gcp], a
.dockerignore; then prints the gcloud and terraform commands that build the
image, deploy infra/gcp and check the service, for the project and region of
the WORLDFLOW_GCP_* settings.
"""

from __future__ import annotations

import dataclasses
import re
import shlex
from pathlib import Path

from ._settings import GcpSettings

__all__ = ["DOCKERFILE", "Plan", "plan"]

# The same text as infra/gcp/Dockerfile (tests/worlds/test_gcp_deploy.py checks it).
DOCKERFILE = """\
# The Cloud Run service: the project's workflows served by worldflow's ASGI app.
#
# Build context: your project's root (the folder with your workflow modules and
# a requirements.txt that lists worldflow[gcp] and what your steps need), e.g.
#
#   worldflow package gcp          # copies this file and prints the commands
#   gcloud builds submit --tag REGION-docker.pkg.dev/PROJECT/REPO/worldflow .
#
# WORLDFLOW_MODULES (set by infra/gcp/main.tf) names the modules to import.
FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 \\
    PYTHONUNBUFFERED=1 \\
    PIP_NO_CACHE_DIR=1 \\
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
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


@dataclasses.dataclass(frozen=True)
class Plan:
    written: list[str]
    kept: list[str]
    commands: list[str]


def _write(path: Path, text: str, written: list[str], kept: list[str]) -> None:
    if path.exists():
        kept.append(str(path))
    else:
        path.write_text(text)
        written.append(str(path))


def plan(settings: GcpSettings, modules: list[str], out: Path, infra: str = "infra/gcp") -> Plan:
    """Write the build files into ``out`` and return the commands to run, in order."""
    bad = [m for m in modules if not _MODULE.match(m)]
    if not modules or bad:
        raise ValueError(
            f"name the modules that define your workflows (e.g. --modules shop.flows), got {bad or modules}"
        )
    import worldflow

    out.mkdir(parents=True, exist_ok=True)
    written: list[str] = []
    kept: list[str] = []
    _write(out / "Dockerfile", DOCKERFILE, written, kept)
    _write(out / "requirements.txt", f"worldflow[gcp]=={worldflow.__version__}\n", written, kept)
    _write(out / ".dockerignore", DOCKERIGNORE, written, kept)

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
    return Plan(written, kept, commands)
