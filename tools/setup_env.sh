#!/usr/bin/env bash
# Create .venv with the pinned dependencies and install segearth-ov in editable mode.
# Safe to re-run: pip skips what is already installed.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -r requirements.txt \
    -r requirements-sam3.txt -r requirements-app.txt -r requirements-test.txt
# No build isolation: the native ops build against the torch installed above. Skipped when
# this checkout is installed and its built extension is newer than every native source.
built=$(ls segearth_ov/_ext_cpu*.so 2>/dev/null | head -n 1 || true)
if [ -n "$built" ] && [ -z "$(find csrc setup.py pyproject.toml -newer "$built" 2>/dev/null)" ] \
    && .venv/bin/python -c "import segearth_ov" 2>/dev/null; then
  exit 0
fi
.venv/bin/python -m pip install -q --disable-pip-version-check --no-build-isolation --no-deps -e .
