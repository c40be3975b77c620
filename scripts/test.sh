#!/usr/bin/env bash
# The whole check, from a fresh clone: set up .venv, lint, type-check, run the test suite.
# Extra arguments go to pytest (e.g. scripts/test.sh -k header -x).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
scripts/setup-venv.sh "dev,bench,fuzz"
scripts/setup-fuse.sh  # bindfs for the FUSE tests, as root; they skip (saying why) without it
venv="$root/.venv/bin"
echo "== ruff"; "$venv/ruff" check .
echo "== mypy --strict"; "$venv/mypy"
echo "== pytest"; "$venv/python" -m pytest "$@"
