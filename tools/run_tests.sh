#!/usr/bin/env bash
# Set up .venv from the pinned requirements (idempotent) and run the test suite.
# Usage: bash tools/run_tests.sh [pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup_env.sh
exec .venv/bin/python -m pytest -q tests "$@"
