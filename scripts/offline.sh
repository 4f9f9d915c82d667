#!/usr/bin/env bash
# Run a command with no network but loopback (a fresh network namespace), so tests prove that nothing
# downloads at run time. Falls back to running it normally where namespaces are not allowed
# (non-root without user namespaces); FER_OFFLINE_SANDBOX tells the tests which case they are in.
if unshare -n true 2>/dev/null && command -v ip >/dev/null 2>&1; then
    exec unshare -n sh -c 'ip link set lo up && FER_OFFLINE_SANDBOX=1 exec "$@"' sh "$@"
fi
echo "note: cannot create a network namespace here; running with the network available" >&2
FER_OFFLINE_SANDBOX=0 exec "$@"
