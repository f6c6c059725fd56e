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
# the explore page's test drives Debian's Chromium; install it where this user may (root,
# apt-get), else that one test skips and says why
if ! command -v chromedriver >/dev/null 2>&1 && [ "$(id -u)" = 0 ] \
    && command -v apt-get >/dev/null 2>&1; then
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
      chromium chromium-driver; } >/dev/null 2>&1 \
    || echo "warning: could not install chromium; the browser test will skip" >&2
fi
.venv/bin/ruff check .
.venv/bin/isort --check-only --diff segearth_ov tests tools benchmarks setup.py
exec .venv/bin/python -m pytest -q tests "${marker[@]}" "$@"
