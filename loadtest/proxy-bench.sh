#!/usr/bin/env bash
# Proxy throughput in one run (release builds, wrk): the mock model server direct, nginx as a
# plain reverse proxy to it, Sluice with a key but no limits, and Sluice with request and token
# limits (both scripts per request). Prints requests/s, p50/p99 latency, the ratio to nginx,
# and CPU per request of Sluice and of Redis. Needs the development stack (scripts/stack-up.sh).
#   loadtest/proxy-bench.sh [seconds=10] [connections=64]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-10}"
connections="${2:-64}"
source scripts/stack-env.sh
command -v wrk >/dev/null && command -v nginx >/dev/null || {
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk nginx >/dev/null
}
swift build -c release --product sluice >/dev/null
swift build -c release --product sluice-mock-upstream >/dev/null
bin="$(swift build -c release --show-bin-path)"
work="$(mktemp -d)"
mock_port=19100; nginx_port=19101; port=19102; admin_port=19103
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

"$bin/sluice-mock-upstream" --port "$mock_port" --models bench-model --tokens 16 & pids+=($!)
cat > "$work/nginx.conf" <<NGINX
worker_processes auto;
pid $work/nginx.pid;
error_log $work/nginx-error.log;
events { worker_connections 4096; }
http {
    access_log off;
    upstream mock { server 127.0.0.1:$mock_port; keepalive 128; }
    server {
        listen 127.0.0.1:$nginx_port;
        location / { proxy_pass http://mock; proxy_http_version 1.1; proxy_set_header Connection ""; }
    }
}
NGINX
nginx -c "$work/nginx.conf" -g "daemon off;" & pids+=($!)

export SLUICE_ADMIN_JWT_SECRET=bench-admin-secret-0123456789abcdef SLUICE_KEY_PEPPER=bench-pepper-0123456789
export SLUICE_DATABASE_URL="$SLUICE_TEST_DATABASE_URL" SLUICE_REDIS_URL="$SLUICE_TEST_REDIS_URL"
cat > "$work/sluice.yaml" <<YAML
listen: 127.0.0.1:$port
admin_listen: 127.0.0.1:$admin_port
models:
  - name: bench-model
    backends:
      - url: http://127.0.0.1:$mock_port
YAML
"$bin/sluice" migrate >/dev/null
"$bin/sluice" serve --config "$work/sluice.yaml" --log-level warning > "$work/sluice.log" & sluice_pid=$!; pids+=($sluice_pid)
for _ in $(seq 1 100); do curl -fs "http://127.0.0.1:$admin_port/readyz" >/dev/null 2>&1 && break; sleep 0.1; done
tenant="$("$bin/sluice" admin create-tenant --name bench)"
plain_key="$("$bin/sluice" admin create-key --tenant "$tenant" --name plain)"
limited_tenant="$("$bin/sluice" admin create-tenant --name bench-limited --rpm 100000000 --tpm 1000000000)"
limited_key="$("$bin/sluice" admin create-key --tenant "$limited_tenant" --name limited --rpm 100000000)"
redis_pid="$(redis-cli -p "$SLUICE_STACK_REDIS_PORT" info server | awk -F: '/^process_id/ {print $2}' | tr -d '\r')"

body='{"model": "bench-model", "messages": [{"role": "user", "content": "Say something short."}], "max_tokens": 16}'
run() {  # name port key -> "name rps p50 p99 sluice_us redis_us"
    local name="$1" target="$2" key="$3"
    cat > "$work/post.lua" <<LUA
wrk.method = "POST"
wrk.body = '$body'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer $key"
LUA
    local s0 r0 out rps
    s0="$(awk '{print $14 + $15}' /proc/$sluice_pid/stat)"; r0="$(awk '{print $14 + $15}' /proc/$redis_pid/stat)"
    out="$(wrk -t2 -c"$connections" -d"${seconds}s" --latency -s "$work/post.lua" "http://127.0.0.1:$target/v1/chat/completions")"
    local s1 r1
    s1="$(awk '{print $14 + $15}' /proc/$sluice_pid/stat)"; r1="$(awk '{print $14 + $15}' /proc/$redis_pid/stat)"
    rps="$(echo "$out" | awk '/Requests\/sec/ {print $2}')"
    local total; total="$(echo "$out" | awk '/requests in/ {print $1}')"
    local hz; hz="$(getconf CLK_TCK)"
    printf "%-22s %10s rps  p50 %8s  p99 %8s  sluice %6.1f µs/req  redis %6.1f µs/req  non-2xx %s\n" "$name" "$rps" \
        "$(echo "$out" | awk '$1 == "50%" {print $2}')" "$(echo "$out" | awk '$1 == "99%" {print $2}')" \
        "$(echo "($s1 - $s0) * 1000000 / $hz / $total" | bc -l)" "$(echo "($r1 - $r0) * 1000000 / $hz / $total" | bc -l)" \
        "$(echo "$out" | awk '/Non-2xx/ {print $4}')"
    echo "$rps" > "$work/rps-$name"
}
run warmup "$port" "$plain_key" >/dev/null
run mock-direct "$mock_port" none
run nginx "$nginx_port" none
run sluice-no-limits "$port" "$plain_key"
run sluice-limits "$port" "$limited_key"
nginx_rps="$(cat "$work/rps-nginx")"
echo "ratio to nginx: sluice without limits $(echo "scale=2; $(cat "$work/rps-sluice-no-limits") / $nginx_rps" | bc -l)," \
     "with limits $(echo "scale=2; $(cat "$work/rps-sluice-limits") / $nginx_rps" | bc -l)"
