#!/usr/bin/env bash
# Starts the development stack: Redis and PostgreSQL in a private folder on private ports.
# Installs the Debian packages it needs when they are missing. Safe to run again: whatever
# already runs is left alone. Prints the environment the tests read.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
source "$here/stack-env.sh"

need=()
command -v redis-server >/dev/null || need+=(redis-server)
[ -f /usr/include/hiredis/hiredis.h ] || need+=(libhiredis-dev)
ls -d /usr/lib/postgresql/*/bin >/dev/null 2>&1 || need+=(postgresql)
if [ ${#need[@]} -gt 0 ]; then
    echo "installing: ${need[*]}" >&2
    sudo_cmd=""; [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
    $sudo_cmd apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${need[@]}" >/dev/null
fi
# The Debian packages start system-wide services on the default ports; the stack does not use them.

mkdir -p "$SLUICE_STACK_DIR/redis"
if redis-cli -p "$SLUICE_STACK_REDIS_PORT" ping >/dev/null 2>&1; then
    echo "redis already running on $SLUICE_STACK_REDIS_PORT" >&2
else
    redis-server --bind 127.0.0.1 --port "$SLUICE_STACK_REDIS_PORT" --daemonize yes \
        --dir "$SLUICE_STACK_DIR/redis" --pidfile "$SLUICE_STACK_DIR/redis/redis.pid" \
        --logfile "$SLUICE_STACK_DIR/redis/redis.log" --save "" --appendonly no
    for _ in $(seq 1 100); do
        redis-cli -p "$SLUICE_STACK_REDIS_PORT" ping >/dev/null 2>&1 && break
        sleep 0.1
    done
    redis-cli -p "$SLUICE_STACK_REDIS_PORT" ping >/dev/null
    echo "redis started on $SLUICE_STACK_REDIS_PORT" >&2
fi

"$here/redis-cluster.sh" start "$SLUICE_STACK_DIR/redis-cluster" "$SLUICE_STACK_CLUSTER_PORT"

pgbin="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)"
pgdata="$SLUICE_STACK_DIR/pg/data"
pgsock="$SLUICE_STACK_DIR/pg/socket"
# PostgreSQL refuses to run as root: run it as the postgres user then.
as_pg() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
mkdir -p "$SLUICE_STACK_DIR/pg/socket"
[ "$(id -u)" -eq 0 ] && chown -R postgres:postgres "$SLUICE_STACK_DIR/pg"
if [ ! -f "$pgdata/PG_VERSION" ]; then
    pwfile="$(mktemp)"; echo postgres > "$pwfile"; chmod 644 "$pwfile"
    as_pg "$pgbin/initdb" -D "$pgdata" -U postgres --auth-local=trust --auth-host=scram-sha-256 \
        --pwfile="$pwfile" -E UTF8 >/dev/null
    rm -f "$pwfile"
fi
if as_pg "$pgbin/pg_ctl" -D "$pgdata" status >/dev/null 2>&1; then
    echo "postgresql already running on $SLUICE_STACK_PG_PORT" >&2
else
    as_pg "$pgbin/pg_ctl" -D "$pgdata" -l "$SLUICE_STACK_DIR/pg/postgres.log" -w -t 60 \
        -o "-p $SLUICE_STACK_PG_PORT -k $pgsock -c listen_addresses=127.0.0.1 -c max_connections=200 -c fsync=off" start >/dev/null
    echo "postgresql started on $SLUICE_STACK_PG_PORT" >&2
fi
psql_pg() { as_pg psql -h "$pgsock" -p "$SLUICE_STACK_PG_PORT" -U postgres -v ON_ERROR_STOP=1 -qtA "$@"; }
if [ "$(psql_pg -c "select 1 from pg_roles where rolname='sluice'")" != "1" ]; then
    psql_pg -c "create role sluice login password 'sluice'"
fi
# CREATEDB: the migration test builds a scratch database at an old schema version.
psql_pg -c "alter role sluice createdb" >/dev/null
if [ "$(psql_pg -c "select 1 from pg_database where datname='sluice'")" != "1" ]; then
    psql_pg -c "create database sluice owner sluice"
fi

echo "export SLUICE_TEST_REDIS_URL=$SLUICE_TEST_REDIS_URL"
echo "export SLUICE_TEST_DATABASE_URL=$SLUICE_TEST_DATABASE_URL"
echo "export SLUICE_TEST_REDIS_CLUSTER_URL=$SLUICE_TEST_REDIS_CLUSTER_URL"
