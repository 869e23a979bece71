# Sourced by the benchmark scripts: release build of the benchmark driver and a private
# redis-server that is stopped when the script exits.

# Builds sluice-bench (release) and sets $bench to its path.
build_bench() {
    swift build -c release --product sluice-bench >/dev/null
    bench="$(swift build -c release --show-bin-path)/sluice-bench"
}

# Starts redis-server on 127.0.0.1:$1 without persistence; sets $redis_pid.
start_private_redis() {
    redis-server --bind 127.0.0.1 --port "$1" --save "" --appendonly no --daemonize no --loglevel warning >/dev/null &
    redis_pid=$!
    trap 'kill $redis_pid 2>/dev/null || true' EXIT
    for _ in $(seq 1 100); do redis-cli -p "$1" ping >/dev/null 2>&1 && return 0; sleep 0.05; done
    echo "redis-server did not start on port $1" >&2
    return 1
}
