#!/usr/bin/env bash
# Start the Gradio app (bootstraps .venv first). Arguments go to app.py, e.g. scripts/app.sh --help
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
scripts/bootstrap.sh
export NO_ALBUMENTATIONS_UPDATE="${NO_ALBUMENTATIONS_UPDATE:-1}"
export GRADIO_ANALYTICS_ENABLED="${GRADIO_ANALYTICS_ENABLED:-False}"
# fewer malloc arenas keep a long-running server's memory flat (benchmarks/results_soak.md)
export MALLOC_ARENA_MAX="${MALLOC_ARENA_MAX:-2}"
exec "$ROOT/.venv/bin/python" app.py "$@"
