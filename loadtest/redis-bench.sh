#!/usr/bin/env bash
# EVALSHA round trips per second: SluiceRedis vs redis-benchmark, same redis-server, same
# concurrency, same run. Prints both rates and their ratio.
# Sluice's default pool multiplexes all callers over 2 pipelined connections; with pool=C it
# uses one connection per caller, as redis-benchmark does.
#   loadtest/redis-bench.sh [concurrency=64] [requests=200000] [pool=2]
set -euo pipefail
cd "$(dirname "$0")/.."
concurrency="${1:-64}"
requests="${2:-200000}"
pool="${3:-2}"
port=16399

source loadtest/lib.sh
build_bench
start_private_redis "$port"
sha="$(redis-cli -p "$port" script load 'return 1')"


run_reference() {
    redis-benchmark -p "$port" -c "$concurrency" -n "$requests" -q EVALSHA "$sha" 0 \
        | tr '\r' '\n' | grep -Eo '[0-9.]+ requests per second' | tail -1 | cut -d' ' -f1
}
run_sluice() {
    "$bench" --url "redis://127.0.0.1:$port/0" --concurrency "$concurrency" --requests "$requests" --pool "$pool" \
        | grep -Eo 'rps=[0-9]+' | cut -d= -f2
}

# Alternate the two drivers so drift on a noisy machine hits both alike.
ref_total=0; sl_total=0
for round in 1 2 3; do
    ref="$(run_reference)"; sl="$(run_sluice)"
    echo "round $round: redis-benchmark ${ref} rps, sluice ${sl} rps"
    ref_total="$(echo "$ref_total + $ref" | bc -l)"; sl_total="$(echo "$sl_total + $sl" | bc -l)"
done
echo "ratio sluice/redis-benchmark (mean of 3 rounds, concurrency $concurrency, pool $pool): $(echo "scale=3; $sl_total / $ref_total" | bc -l)"
