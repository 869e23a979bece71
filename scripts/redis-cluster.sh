#!/usr/bin/env bash
# A local Redis Cluster of three masters and three replicas on loopback, for tests and load
# tests: `redis-cluster.sh start DIR PORT` uses client ports PORT..PORT+5 and cluster bus ports
# PORT+20..PORT+25; `redis-cluster.sh stop DIR`. Safe to run again: a healthy cluster is kept.
set -euo pipefail
command="${1:?usage: redis-cluster.sh start|stop DIR [PORT]}"
dir="${2:?usage: redis-cluster.sh start|stop DIR [PORT]}"
base="${3:-17000}"

stop() {
    for pidfile in "$dir"/node-*/redis.pid; do
        [ -f "$pidfile" ] || continue
        kill "$(cat "$pidfile")" 2>/dev/null || true
    done
    rm -rf "$dir"
}

healthy() {
    redis-cli -p "$base" cluster info 2>/dev/null | grep -q '^cluster_state:ok'
}

case "$command" in
stop) stop; exit 0 ;;
start) ;;
*) echo "usage: redis-cluster.sh start|stop DIR [PORT]" >&2; exit 2 ;;
esac

if healthy; then
    echo "redis cluster already running on $base..$((base + 5))" >&2
    exit 0
fi
stop
nodes=()
for i in 0 1 2 3 4 5; do
    port=$((base + i))
    mkdir -p "$dir/node-$i"
    redis-server --bind 127.0.0.1 --port "$port" --cluster-enabled yes --cluster-port $((port + 20)) \
        --cluster-config-file "$dir/node-$i/nodes.conf" --cluster-node-timeout 1000 \
        --cluster-replica-validity-factor 0 \
        --dir "$dir/node-$i" --pidfile "$dir/node-$i/redis.pid" --logfile "$dir/node-$i/redis.log" \
        --save "" --appendonly no --daemonize yes </dev/null >/dev/null 2>&1  # the daemon keeps no caller's pipe open
    nodes+=("127.0.0.1:$port")
done
for i in 0 1 2 3 4 5; do
    for _ in $(seq 1 100); do
        redis-cli -p $((base + i)) ping >/dev/null 2>&1 && break
        sleep 0.05
    done
done
redis-cli --cluster create "${nodes[@]}" --cluster-replicas 1 --cluster-yes >"$dir/create.log" 2>&1 \
    || { cat "$dir/create.log" >&2; exit 1; }
# Every node agrees the cluster is up and every replica has synced.
for _ in $(seq 1 200); do
    ok=1
    for i in 0 1 2 3 4 5; do
        redis-cli -p $((base + i)) cluster info 2>/dev/null | grep -q '^cluster_state:ok' || ok=0
    done
    synced=0
    for i in 0 1 2 3 4 5; do
        redis-cli -p $((base + i)) info replication 2>/dev/null | grep -q '^master_link_status:up' && synced=$((synced + 1))
    done
    [ "$synced" -eq 3 ] || ok=0
    [ $ok -eq 1 ] && break
    sleep 0.1
done
[ $ok -eq 1 ] || { echo "redis cluster did not come up" >&2; exit 1; }
echo "redis cluster started on $base..$((base + 5))" >&2
