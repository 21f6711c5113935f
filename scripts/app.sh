#!/usr/bin/env bash
# Start the Gradio app (bootstraps .venv first). Arguments go to app.py, e.g. scripts/app.sh --help
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
scripts/bootstrap.sh
export NO_ALBUMENTATIONS_UPDATE="${NO_ALBUMENTATIONS_UPDATE:-1}"
export GRADIO_ANALYTICS_ENABLED="${GRADIO_ANALYTICS_ENABLED:-False}"
exec "$ROOT/.venv/bin/python" app.py "$@"
