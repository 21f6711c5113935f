#!/usr/bin/env bash
# Run the test suite (bootstraps .venv and chromium first). Arguments go to pytest, e.g.
#   scripts/test.sh -m "not slow and not browser"   scripts/test.sh tests/test_metrics.py -x
# On a machine with two or more cores the test files run in two pytest-xdist workers, one torch
# thread each (LESIONSEG_TEST_WORKERS=N to change, 0 for one process): much of the suite waits on
# subprocesses, servers and the browser, which the other worker's tests fill.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
scripts/bootstrap.sh --with-chromium
export NO_ALBUMENTATIONS_UPDATE=1
export GRADIO_ANALYTICS_ENABLED=False
export HF_HUB_OFFLINE=1
WORKERS="${LESIONSEG_TEST_WORKERS:-$(( $(nproc) >= 2 ? 2 : 0 ))}"
XDIST=()
if [ "$WORKERS" -gt 0 ]; then
  XDIST=(-n "$WORKERS" --dist loadfile)
  # two workers on two cores: one torch thread each, or their OpenMP threads spin against each other
  export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
fi
exec "$ROOT/.venv/bin/python" -m pytest -q "${XDIST[@]}" "$@"
