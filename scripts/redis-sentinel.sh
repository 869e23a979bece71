#!/usr/bin/env bash
# A local Redis master, one replica and three sentinels on loopback, for tests:
# `redis-sentinel.sh start DIR PORT` puts the master on PORT, the replica on PORT+1 and the
# sentinels on PORT+10..PORT+12 (master name "sluice"); `redis-sentinel.sh stop DIR`.
set -euo pipefail
command="${1:?usage: redis-sentinel.sh start|stop DIR [PORT]}"
dir="${2:?usage: redis-sentinel.sh start|stop DIR [PORT]}"
base="${3:-18000}"

stop() {
    for pidfile in "$dir"/*/redis.pid; do
        [ -f "$pidfile" ] || continue
        kill "$(cat "$pidfile")" 2>/dev/null || true
    done
    rm -rf "$dir"
}

case "$command" in
stop) stop; exit 0 ;;
start) ;;
*) echo "usage: redis-sentinel.sh start|stop DIR [PORT]" >&2; exit 2 ;;
esac

stop
server() {  # name port [extra arguments]
    local name="$1" port="$2"; shift 2
    mkdir -p "$dir/$name"
    redis-server --bind 127.0.0.1 --port "$port" --dir "$dir/$name" --pidfile "$dir/$name/redis.pid" \
        --logfile "$dir/$name/redis.log" --save "" --appendonly no --daemonize yes "$@" </dev/null >/dev/null 2>&1
}
server master "$base"
server replica $((base + 1)) --replicaof 127.0.0.1 "$base"
for i in 0 1 2; do
    port=$((base + 10 + i))
    mkdir -p "$dir/sentinel-$i"
    cat >"$dir/sentinel-$i/sentinel.conf" <<CONF
bind 127.0.0.1
port $port
dir $dir/sentinel-$i
pidfile $dir/sentinel-$i/redis.pid
logfile $dir/sentinel-$i/redis.log
daemonize yes
sentinel monitor sluice 127.0.0.1 $base 2
sentinel down-after-milliseconds sluice 1000
sentinel failover-timeout sluice 5000
sentinel parallel-syncs sluice 1
CONF
    redis-server "$dir/sentinel-$i/sentinel.conf" --sentinel </dev/null >/dev/null 2>&1
done
# Up when the replica has synced and every sentinel knows the replica and the other sentinels.
for _ in $(seq 1 200); do
    ok=1
    redis-cli -p $((base + 1)) info replication 2>/dev/null | grep -q '^master_link_status:up' || ok=0
    for i in 0 1 2; do
        info="$(redis-cli -p $((base + 10 + i)) sentinel master sluice 2>/dev/null | tr '\n' ' ')"
        echo "$info" | grep -q 'num-slaves 1' || ok=0
        echo "$info" | grep -q 'num-other-sentinels 2' || ok=0
    done
    [ $ok -eq 1 ] && break
    sleep 0.1
done
[ $ok -eq 1 ] || { echo "redis sentinel setup did not come up" >&2; exit 1; }
echo "redis master $base, replica $((base + 1)), sentinels $((base + 10))..$((base + 12))" >&2
