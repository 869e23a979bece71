#!/usr/bin/env bash
# The ledger on one PostgreSQL (the development stack's server, a scratch database dropped at
# the end), release build:
#   1. insert throughput: sluice-bench --mode ledger (UsageLedger.insert, the metering worker's
#      500-row batches, a tenth of each batch ids already written), then a check that every id
#      is in the ledger exactly once;
#   2. the usage report's three queries (by model, key, day; one tenant, one month) on
#      LEDGER_ROWS rows (default 10 million, 1,000 tenants, 3 months), p50/p99 from pgbench.
#   loadtest/ledger-bench.sh [batches=2000] [concurrency=4]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here/.."
source scripts/stack-env.sh
batches="${1:-2000}"
concurrency="${2:-4}"
rows="${LEDGER_ROWS:-10000000}"
database="sluice_ledger_bench"
base="${SLUICE_TEST_DATABASE_URL%/*}"
url="$base/$database"
pgbin="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)"
psql_main() { psql "$SLUICE_TEST_DATABASE_URL" -v ON_ERROR_STOP=1 -qAt "$@"; }
psql_bench() { psql "$url" -v ON_ERROR_STOP=1 -qAt "$@"; }

psql_main -c "DROP DATABASE IF EXISTS $database WITH (FORCE)" -c "CREATE DATABASE $database"
trap 'psql_main -c "DROP DATABASE IF EXISTS $database WITH (FORCE)" >/dev/null 2>&1 || true' EXIT
config="${SLUICE_BENCH_CONFIG:-release}"   # debug for a quick check of the script itself
swift build -c "$config" --product sluice-bench >/dev/null
bin="$(swift build -c "$config" --show-bin-path)"

echo "== 1. inserts: $batches batches of 500 from $concurrency callers"
"$bin/sluice-bench" --mode ledger --database-url "$url" --requests "$batches" --concurrency "$concurrency"

echo "== 2. report queries on $rows rows"
psql_bench -c "SELECT sluice_ledger_partitions(now() - interval '2 months', now() + interval '2 months')" >/dev/null
started=$(date +%s)
psql_bench <<SQL
INSERT INTO usage_request_ids (tenant_id, request_id, at)
SELECT ('00000000-0000-4000-8000-' || lpad((g % 1000)::text, 12, '0'))::uuid, 'fill-' || g,
       now() - (g % 7776000) * interval '1 second'
FROM generate_series(1, $rows) g;
INSERT INTO usage_ledger (request_id, tenant_id, key_id, model, prompt_tokens, completion_tokens, cost_micro_usd, at)
SELECT request_id, tenant_id, 'key-' || (hashtext(request_id) & 7), 'model-' || (hashtext(request_id) & 3), 100, 50, 75, at
FROM usage_request_ids WHERE request_id LIKE 'fill-%';
ANALYZE usage_ledger; ANALYZE usage_request_ids;
SQL
echo "filled in $(( $(date +%s) - started )) s: $(psql_bench -c "SELECT count(*) FROM usage_ledger") rows in $(psql_bench -c "SELECT count(*) FROM pg_inherits WHERE inhparent = 'usage_ledger'::regclass") partitions"
work="$(mktemp -d)"
for grouping in model key day; do
    case $grouping in
    model) select="model" ;;
    key) select="key_id" ;;
    day) select="to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD')" ;;
    esac
    cat >"$work/$grouping.sql" <<SQL
\set tenant random(0, 999)
SELECT $select, count(*)::bigint, sum(prompt_tokens)::bigint, sum(completion_tokens)::bigint, sum(cost_micro_usd)::bigint
FROM usage_ledger
WHERE tenant_id = ('00000000-0000-4000-8000-' || lpad(:tenant::text, 12, '0'))::uuid
  AND at >= date_trunc('month', now()) - interval '1 month' AND at < date_trunc('month', now())
GROUP BY 1 ORDER BY 1;
SQL
    (cd "$work" && "$pgbin/pgbench" -n -c 2 -T 10 -f "$grouping.sql" --log --log-prefix="$grouping" "$url" >/dev/null 2>&1)
    cat "$work"/"$grouping".* | awk -v name="$grouping" '{ print $3 }' | sort -n | awk -v name="$grouping" '
        { v[NR] = $1 } END { printf "report by %-5s %6d queries: p50 %.2f ms, p99 %.2f ms\n", name, NR, v[int(NR*0.5)]/1000, v[int(NR*0.99)]/1000 }'
done
rm -rf "$work"
