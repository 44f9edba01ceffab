#!/usr/bin/env bash
# Makes two venvs the GCP world's tests use, each of its own because of pins
# that clash with google-cloud-firestore's:
#   .venv-gcloud-tasks  PyPI's Cloud Tasks emulator (gcloud-tasks-emulator; old protobuf)
#   .venv-checkov       checkov, the static checks of infra/gcp (~30 s to install once)
# Run by scripts/test before pytest, and by the GCP tests' emulator support when
# the first is missing. Idempotent: a venv that works is kept.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv-gcloud-tasks"
PYTHON="${PYTHON:-python3}"

make_venv() { # venv, import to check, requirement
    local venv="$1" probe="$2" requirement="$3"
    if [[ -x "$venv/bin/python" ]] && "$venv/bin/python" -c "import $probe" 2>/dev/null; then
        return 0
    fi
    echo "==> creating $venv ($requirement)" >&2
    rm -rf "$venv"
    "$PYTHON" -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --progress-bar off \
        "$requirement" 2> >(grep -v "^WARNING: Location" >&2)
}

make_venv "$VENV" gcloud_tasks_emulator.server "gcloud-tasks-emulator==0.6.2"
if [[ "${1:-}" != "--emulators-only" ]]; then
    make_venv "$ROOT/.venv-checkov" checkov "checkov==3.3.30"
fi
