#!/usr/bin/env bash
# Makes .venv-gcloud-tasks: PyPI's Cloud Tasks emulator (gcloud-tasks-emulator)
# in a venv of its own, since it pins an old protobuf that google-cloud-firestore
# cannot share. Run by scripts/test before pytest, and by the GCP tests' emulator
# support when the venv is missing. Idempotent: a venv that imports the emulator
# is kept.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv-gcloud-tasks"
PYTHON="${PYTHON:-python3}"
if [[ -x "$VENV/bin/python" ]] && "$VENV/bin/python" -c 'import gcloud_tasks_emulator.server' 2>/dev/null; then
    exit 0
fi
echo "==> creating $VENV (the Cloud Tasks emulator)" >&2
rm -rf "$VENV"
"$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --progress-bar off \
    "gcloud-tasks-emulator==0.6.2" 2> >(grep -v "^WARNING: Location" >&2)
