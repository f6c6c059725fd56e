#!/usr/bin/env bash
# Create .venv with the pinned dependencies and install segearth-ov in editable mode.
# Safe to re-run: pip skips what is already installed.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -r requirements.txt -r requirements-test.txt
# no build isolation: the native ops build against the torch installed above
.venv/bin/python -m pip install -q --disable-pip-version-check --no-build-isolation --no-deps -e .
