#!/usr/bin/env bash
# Run the test suite (bootstraps .venv and chromium first). Arguments go to pytest, e.g.
#   scripts/test.sh -m "not slow and not browser"   scripts/test.sh tests/test_metrics.py -x
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
scripts/bootstrap.sh --with-chromium
export NO_ALBUMENTATIONS_UPDATE=1
export GRADIO_ANALYTICS_ENABLED=False
export HF_HUB_OFFLINE=1
exec "$ROOT/.venv/bin/python" -m pytest -q "$@"
