#!/usr/bin/env bash
# Create (or refresh) .venv with tsr installed in editable mode and the given extras.
# Usage: scripts/setup-venv.sh [EXTRAS]   (default: dev)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
extras="${1:-dev}"
venv="$root/.venv"
py="${PYTHON:-python3}"
if [ ! -x "$venv/bin/python" ]; then
    "$py" -m venv "$venv"
fi
stamp="$venv/.tsr-installed-$extras"
# Reinstall only when the project's requirements changed since the last install.
if [ ! -f "$stamp" ] || [ "$root/pyproject.toml" -nt "$stamp" ] || [ "$root/constraints.txt" -nt "$stamp" ]; then
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
        -c "$root/constraints.txt" -e "$root[$extras]"
    touch "$stamp"
fi
