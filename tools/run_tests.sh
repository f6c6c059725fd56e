#!/usr/bin/env bash
# Set up .venv from the pinned requirements (idempotent), lint, and run the test suite.
# Usage: bash tools/run_tests.sh [--fast] [pytest args]
#   --fast   skip the tests marked slow (the inner loop; CI runs everything)
set -euo pipefail
cd "$(dirname "$0")/.."
marker=()
if [ "${1:-}" = "--fast" ]; then
  marker=(-m "not slow")
  shift
fi
bash tools/setup_env.sh
.venv/bin/ruff check .
.venv/bin/isort --check-only --diff segearth_ov tests tools benchmarks setup.py
exec .venv/bin/python -m pytest -q tests "${marker[@]}" "$@"
