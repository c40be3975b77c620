#!/usr/bin/env bash
# Make bindfs available for the FUSE tests (tests/worker/test_netfs_fuse.py), from the
# distribution's packages, as root. Idempotent and quiet, and it never fails the run:
# where it cannot (no /dev/fuse, not root, no apt-get, the package index unreachable) it
# says why, and those tests skip with the same reason.
set -u
command -v bindfs >/dev/null 2>&1 && exit 0
say() { echo "setup-fuse: $*; the FUSE tests will skip" >&2; exit 0; }
[ -e /dev/fuse ] || say "no /dev/fuse"
[ "$(id -u)" = 0 ] || say "not root, cannot install bindfs (apt-get install bindfs)"
command -v apt-get >/dev/null 2>&1 || say "no apt-get to install bindfs with"
log="$(mktemp)"
if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends bindfs; } >"$log" 2>&1; then
    tail -n 3 "$log" >&2
    rm -f "$log"
    say "apt-get install bindfs failed"
fi
rm -f "$log"
