#!/usr/bin/env bash
# admit+settle pairs per second through the SluiceLimiter API versus a trivial EVALSHA through
# the same client, same redis-server, same run; and Redis's CPU time per operation.
#   loadtest/limiter-bench.sh [concurrency=64] [requests=100000]
set -euo pipefail
cd "$(dirname "$0")/.."
concurrency="${1:-64}"
requests="${2:-100000}"
port=16398

source loadtest/lib.sh
build_bench
start_private_redis "$port"

hz="$(getconf CLK_TCK)"
cpu_ticks() { awk '{print $14 + $15}' "/proc/$redis_pid/stat"; }
run() {  # prints "rps redis_cpu_us_per_op"
    local before after out rps
    before="$(cpu_ticks)"
    out="$("$bench" --mode "$1" --url "redis://127.0.0.1:$port/0" --concurrency "$concurrency" --requests "$requests")"
    after="$(cpu_ticks)"
    rps="$(echo "$out" | grep -Eo 'rps=[0-9]+' | cut -d= -f2)"
    echo "$rps $(echo "scale=1; ($after - $before) * 1000000 / $hz / $requests" | bc -l)"
}
for round in 1 2 3; do
    read -r e_rps e_cpu < <(run evalsha)
    read -r l_rps l_cpu < <(run limiter)
    echo "round $round: evalsha ${e_rps}/s (redis ${e_cpu} µs/op), admit+settle ${l_rps} pairs/s (redis ${l_cpu} µs/pair), ratio $(echo "scale=3; $l_rps / $e_rps" | bc -l)"
done
