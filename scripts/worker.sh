#!/usr/bin/env bash
# The main job, from a fresh clone: set up .venv and run the reference worker on ./workspace
# (session "default"). Extra arguments go to tsr-worker (see tsr-worker --help).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$root/scripts/setup-venv.sh" "worker"
exec "$root/.venv/bin/tsr-worker" "$@"
