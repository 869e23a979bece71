#!/usr/bin/env bash
# Key resolution per tier: replica memory, the Redis cache, PostgreSQL. Needs the development
# stack (scripts/stack-up.sh). Prints authentications per second and mean latency per call,
# at concurrency 1 (latency) and 32 (throughput).
#   loadtest/key-bench.sh [requests=20000]
set -euo pipefail
cd "$(dirname "$0")/.."
requests="${1:-20000}"
source scripts/stack-env.sh
source loadtest/lib.sh
build_bench
for mode in key-memory key-redis key-postgres; do
    for concurrency in 1 32; do
        "$bench" --mode "$mode" --url "$SLUICE_TEST_REDIS_URL" --database-url "$SLUICE_TEST_DATABASE_URL" \
            --concurrency "$concurrency" --requests "$requests" | sed 's/^sluice-bench //'
    done
done
