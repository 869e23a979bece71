#!/usr/bin/env bash
# Stops the development stack started by stack-up.sh. Keeps the data unless --wipe is given.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
source "$here/stack-env.sh"

redis-cli -p "$SLUICE_STACK_REDIS_PORT" shutdown nosave >/dev/null 2>&1 || true
"$here/redis-cluster.sh" stop "$SLUICE_STACK_DIR/redis-cluster"
pgdata="$SLUICE_STACK_DIR/pg/data"
if [ -f "$pgdata/PG_VERSION" ]; then
    pgbin="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)"
    as_pg() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
    as_pg "$pgbin/pg_ctl" -D "$pgdata" -m fast -w stop >/dev/null 2>&1 || true
fi
if [ "${1:-}" = "--wipe" ]; then rm -rf "$SLUICE_STACK_DIR"; fi
echo "stack stopped" >&2
