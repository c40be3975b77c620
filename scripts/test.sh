#!/usr/bin/env bash
# The whole check, from a fresh clone: set up .venv, lint, type-check, run the test suite.
# Extra arguments go to pytest (e.g. scripts/test.sh -k header -x).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
scripts/setup-venv.sh "dev,bench,fuzz,show"
scripts/setup-fuse.sh  # bindfs for the FUSE tests, as root; they skip (saying why) without it
venv="$root/.venv/bin"
echo "== ruff"; "$venv/ruff" check .
"$venv/ruff" format --check --quiet $(git ls-files "*.py")  # Python only: not docs' snippets
echo "== mypy --strict"; "$venv/mypy"
# Windows and macOS (issue 10): type-checked as those platforms, and the codec's
# and worker suites with the Linux-only features deleted from the interpreter
# (tests/platform_strip).
for platform in win32 darwin; do
    echo "== mypy --strict --platform $platform"
    "$venv/mypy" --platform "$platform" --cache-dir ".mypy_cache/$platform" \
        tsr tsr_platform worker/tsr_worker
done
echo "== pytest, stripped platform (the codec and worker suites without Linux-only features)"
TSR_STRIP_PLATFORM=1 PYTHONPATH="$root/tests/platform_strip" "$venv/python" -m pytest -q \
    -p no:cacheprovider tests/codec tests/worker \
    --ignore=tests/worker/test_netfs_fuse.py "$@"
echo "== pytest"; "$venv/python" -m pytest "$@"
