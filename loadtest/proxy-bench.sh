#!/usr/bin/env bash
# Proxy overhead measured honestly, in one run (release builds, wrk -t1):
#   - the upstream is nginx answering a fixed ~300-byte chat completion (or a fixed SSE stream
#     whose chunks carry "usage": null, as vLLM sends when usage is requested) with `return 200`,
#     so it is never the bottleneck; the script checks that it is at least 2x faster than the
#     nginx proxy in front of it and says so;
#   - the baseline is nginx as a plain reverse proxy to that upstream;
#   - Sluice runs in its default configuration (access log on, written to a file), governed:
#     tenant limits and key rpm + tpm limits, metering on;
#   - nginx and Sluice are measured interleaved, ROUNDS x SECONDS each, and CPU microseconds per
#     request are printed for Sluice, Redis and the nginx proxy beside the ratio.
# Needs the development stack (scripts/stack-up.sh).
#   loadtest/proxy-bench.sh [seconds=8] [connections=32] [rounds=3] [mode=complete|stream|both]
# SLUICE_BENCH_BEFORE_BIN=<release bin dir of another build> adds that build as a fourth target
# in the same interleaved run (its own database), for before/after figures from one run;
# SLUICE_BENCH_BEFORE_ARGS adds `sluice serve` arguments to it (e.g. `--log-level notice` with the
# same build, to measure what the access log costs).
# SLUICE_BENCH_PERF=<path prefix> records a perf profile of Sluice's runs, SLUICE_BENCH_STRACE=<path
# prefix> counts its syscalls (strace -c; the file ends with the run's request count); both cost
# CPU: figures from such a run are not comparable.
# SLUICE_BENCH_SCRIPTS=<path prefix> logs every Redis command of Sluice's (and the other build's)
# runs (SLOWLOG at 0 µs)
# and prints, per script (admit, settle), its calls, requests per call and µs per call and per
# request as Redis timed them (what `usec_per_call` in INFO commandstats would say per script).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-8}"
connections="${2:-32}"
rounds="${3:-3}"
mode="${4:-both}"
source scripts/stack-env.sh
command -v wrk >/dev/null && command -v nginx >/dev/null || {
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk nginx >/dev/null
}
swift build -c release --product sluice >/dev/null
bin="$(swift build -c release --show-bin-path)"
work="$(mktemp -d)"
upstream_port=19100; nginx_port=19101; port=19102; admin_port=19103
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

# The upstream: fixed answers, no work. One worker, as the proxy: a second one only takes a core
# from the proxies under test (it made nginx's proxy 15 % slower), and alone the upstream is then
# as fast as one wrk thread can ask (the check below is capped by wrk, not by the upstream). A completion with usage; an SSE stream of 16 content
# chunks with "usage": null, a finish chunk and a usage chunk.
completion='{"id":"chatcmpl-bench","object":"chat.completion","created":1700000000,"model":"bench-model","choices":[{"index":0,"message":{"role":"assistant","content":"A fixed answer of about sixteen tokens from the benchmark upstream."},"finish_reason":"stop"}],"usage":{"prompt_tokens":12,"completion_tokens":16,"total_tokens":28}}'
chunk='data: {"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1700000000,"model":"bench-model","choices":[{"index":0,"delta":{"content":"tok "},"finish_reason":null}],"usage":null}\n\n'
stream=""
for _ in $(seq 1 16); do stream+="$chunk"; done
stream+='data: {"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1700000000,"model":"bench-model","choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"usage":null}\n\n'
stream+='data: {"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1700000000,"model":"bench-model","choices":[],"usage":{"prompt_tokens":12,"completion_tokens":16,"total_tokens":28}}\n\n'
stream+='data: [DONE]\n\n'
chunks_per_stream=16
# Two upstream ports (answers, streams) and a proxy port in front of each: Sluice forwards no
# client header that could tell the upstream which answer is wanted, so the model does.
upstream_stream_port=19104; nginx_stream_port=19105
cat > "$work/upstream.conf" <<NGINX
worker_processes 1;
pid $work/upstream.pid;
error_log $work/upstream-error.log;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 1000000;
    server {
        listen 127.0.0.1:$upstream_port;
        location = /health { return 200 'ok'; }
        location / { default_type application/json; return 200 '$completion'; }
    }
    server {
        listen 127.0.0.1:$upstream_stream_port;
        location = /health { return 200 'ok'; }
        location / { default_type text/event-stream; return 200 '$stream'; }
    }
}
NGINX
nginx -c "$work/upstream.conf" -g "daemon off;" & pids+=($!)
cat > "$work/nginx.conf" <<NGINX
worker_processes 1;
pid $work/nginx.pid;
error_log $work/nginx-error.log;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 1000000;
    upstream up { server 127.0.0.1:$upstream_port; keepalive 128; }
    upstream up_stream { server 127.0.0.1:$upstream_stream_port; keepalive 128; }
    server {
        listen 127.0.0.1:$nginx_port;
        location / { proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection ""; }
    }
    server {
        listen 127.0.0.1:$nginx_stream_port;
        location / { proxy_pass http://up_stream; proxy_http_version 1.1; proxy_set_header Connection ""; proxy_buffering off; }
    }
}
NGINX
nginx -c "$work/nginx.conf" -g "daemon off;" & nginx_master=$!; pids+=($nginx_master)

export SLUICE_ADMIN_JWT_SECRET=bench-admin-secret-0123456789abcdef SLUICE_KEY_PEPPER=bench-pepper-0123456789
export SLUICE_DATABASE_URL="$SLUICE_TEST_DATABASE_URL" SLUICE_REDIS_URL="$SLUICE_TEST_REDIS_URL"
cat > "$work/sluice.yaml" <<YAML
listen: 127.0.0.1:$port
admin_listen: 127.0.0.1:$admin_port
models:
  - name: bench-model
    backends:
      - url: http://127.0.0.1:$upstream_port
  - name: bench-stream
    backends:
      - url: http://127.0.0.1:$upstream_stream_port
YAML
# start_sluice BIN_DIR PORT ADMIN_PORT DATABASE_URL [SERVE_ARGS] -> sets $started_pid, $started_key, $started_tenant
start_sluice() {
    local dir="$1" listen="$2" admin="$3" database="$4" extra="${5:-}"
    sed -e "s/:$port\$/:$listen/" -e "s/:$admin_port\$/:$admin/" "$work/sluice.yaml" > "$work/sluice-$listen.yaml"
    SLUICE_DATABASE_URL="$database" "$dir/sluice" migrate >/dev/null
    # Default settings: the access log (info) stays on; it goes to a file as a container's would.
    # shellcheck disable=SC2086
    SLUICE_DATABASE_URL="$database" "$dir/sluice" serve --config "$work/sluice-$listen.yaml" $extra > "$work/sluice-$listen.log" &
    started_pid=$!; pids+=($started_pid)
    for _ in $(seq 1 100); do curl -fs "http://127.0.0.1:$admin/readyz" >/dev/null 2>&1 && break; sleep 0.1; done
    local tenant
    tenant="$(SLUICE_DATABASE_URL="$database" "$dir/sluice" admin create-tenant --name bench-governed --rpm 100000000 --tpm 1000000000)"
    started_key="$(SLUICE_DATABASE_URL="$database" "$dir/sluice" admin create-key --tenant "$tenant" --name governed --rpm 100000000 --tpm 1000000000)"
    started_tenant="$tenant"
}
start_sluice "$bin" "$port" "$admin_port" "$SLUICE_TEST_DATABASE_URL"
sluice_pid=$started_pid; key=$started_key; tenant=$started_tenant
before_bin="${SLUICE_BENCH_BEFORE_BIN:-}"
before_port=19106; before_admin_port=19107
if [ -n "$before_bin" ]; then
    before_db="sluice_bench_before"
    psql "$SLUICE_TEST_DATABASE_URL" -qc "DROP DATABASE IF EXISTS $before_db WITH (FORCE)" >/dev/null
    psql "$SLUICE_TEST_DATABASE_URL" -qc "CREATE DATABASE $before_db" >/dev/null
    start_sluice "$before_bin" "$before_port" "$before_admin_port" "${SLUICE_TEST_DATABASE_URL%/*}/$before_db" \
        "${SLUICE_BENCH_BEFORE_ARGS:-}"
    before_pid=$started_pid; before_key=$started_key; before_tenant=$started_tenant
fi
redis_pid="$(redis-cli -p "$SLUICE_STACK_REDIS_PORT" info server | awk -F: '/^process_id/ {print $2}' | tr -d '\r')"
nginx_workers() { pgrep -P "$nginx_master" | tr '\n' ' '; }
evalsha_stats() { redis-cli -p "$SLUICE_STACK_REDIS_PORT" info commandstats | awk -F'[:=,]' '/^cmdstat_evalsha:/ {print $3, $5}'; }
cpu_ticks() { local sum=0 pid; for pid in "$@"; do sum=$((sum + $(awk '{print $14 + $15}' "/proc/$pid/stat"))); done; echo "$sum"; }
hz="$(getconf CLK_TCK)"
# Entries of TENANT's usage streams not yet in the ledger (read or not), either stream name.
metering_backlog() {
    local total=0 stream fields
    for stream in "sl:{t:$1}:usage:batched" "sl:{t:$1}:usage"; do
        fields="$(redis-cli -p "$SLUICE_STACK_REDIS_PORT" xinfo groups "$stream" 2>/dev/null | tr '\n' ' ')"
        total=$((total + $(echo "$fields" | awk '{for (i = 1; i < NF; i++) if ($i == "lag" || $i == "pending") s += $(i + 1)} END {print s + 0}')))
    done
    echo "$total"
}
# Waits (up to 60 s) until the tenant's usage is all in the ledger; prints the seconds it took. A
# request's CPU includes its metering: a run ends when its usage is ledgered, not when wrk stops.
wait_for_metering() {
    local started=$SECONDS
    while [ "$(metering_backlog "$1")" -gt 0 ] && [ $((SECONDS - started)) -lt 60 ]; do sleep 0.2; done
    echo $((SECONDS - started))
}

# run LABEL PORT STREAM [KEY] [PID] -> appends "rps p50_ms p99_ms sluice_us redis_us nginx_us evalsha_calls evalsha_us
# ledger_s" to $work/LABEL (ledger_s: seconds after the run until its usage was all in the ledger;
# the CPU figures include that time)
run() {
    local label="$1" target="$2" streamed="$3" bearer="${4:-$key}" measured="${5:-$sluice_pid}" body
    if [ "$streamed" = 1 ]; then
        body='{"model": "bench-stream", "messages": [{"role": "user", "content": "Say something short."}], "max_tokens": 16, "stream": true}'
    else
        body='{"model": "bench-model", "messages": [{"role": "user", "content": "Say something short."}], "max_tokens": 16}'
    fi
    cat > "$work/post.lua" <<LUA
wrk.method = "POST"
wrk.body = '$body'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer $bearer"
LUA
    local workers s0 r0 n0 out s1 r1 n1 total
    workers="$(nginx_workers)"
    s0="$(cpu_ticks "$measured")"; r0="$(cpu_ticks "$redis_pid")"; n0="$(cpu_ticks $workers)"
    local e0 e1; e0="$(evalsha_stats)"
    local profiler=""
    if [ -n "${SLUICE_BENCH_PERF:-}" ] && [ "$label" = sluice ]; then  # a CPU profile of Sluice's run
        perf record -F 499 -g -p "$measured" -o "$SLUICE_BENCH_PERF-$streamed.data" -- sleep "$seconds" >/dev/null 2>&1 & profiler=$!
    fi
    local tracer=""
    if [ -n "${SLUICE_BENCH_STRACE:-}" ] && [ "$label" = sluice ]; then  # syscalls per request (slows the run)
        timeout -s INT "$seconds" strace ${SLUICE_BENCH_STRACE_ARGS:--c} -f -p "$measured" -o "$SLUICE_BENCH_STRACE-$streamed.txt" & tracer=$!
    fi
    local scripts=""
    if [ -n "${SLUICE_BENCH_SCRIPTS:-}" ] && { [ "$label" = sluice ] || [ "$label" = before ]; }; then
        scripts="$SLUICE_BENCH_SCRIPTS-$label-$streamed.json"
        redis-cli -p "$SLUICE_STACK_REDIS_PORT" config set slowlog-max-len 1000000 >/dev/null
        redis-cli -p "$SLUICE_STACK_REDIS_PORT" config set slowlog-log-slower-than 0 >/dev/null
        redis-cli -p "$SLUICE_STACK_REDIS_PORT" slowlog reset >/dev/null
    fi
    out="$(wrk -t1 -c"$connections" -d"${seconds}s" --latency -s "$work/post.lua" "http://127.0.0.1:$target/v1/chat/completions")"
    [ -n "$profiler" ] && wait "$profiler"
    if [ -n "$scripts" ]; then
        redis-cli -p "$SLUICE_STACK_REDIS_PORT" config set slowlog-log-slower-than 10000 >/dev/null
        redis-cli -p "$SLUICE_STACK_REDIS_PORT" --json slowlog get -1 > "$scripts"
        redis-cli -p "$SLUICE_STACK_REDIS_PORT" config set slowlog-max-len 128 >/dev/null
        echo "$label:" >&2
        python3 loadtest/script-cost.py "$scripts" "$(echo "$out" | awk '/requests in/ {print $1}')" >&2
    fi
    if [ -n "$tracer" ]; then
        wait "$tracer" || true
        echo "requests: $(echo "$out" | awk '/requests in/ {print $1}')" >> "$SLUICE_BENCH_STRACE-$streamed.txt"
    fi
    local caught_up=0
    case "$label" in
        sluice|warmup-sluice) caught_up="$(wait_for_metering "$tenant")" ;;
        before|warmup-before) caught_up="$(wait_for_metering "$before_tenant")" ;;
    esac
    s1="$(cpu_ticks "$measured")"; r1="$(cpu_ticks "$redis_pid")"; n1="$(cpu_ticks $workers)"
    e1="$(evalsha_stats)"
    total="$(echo "$out" | awk '/requests in/ {print $1}')"
    if echo "$out" | grep -q "Non-2xx"; then echo "$label: non-2xx answers: $(echo "$out" | grep Non-2xx)" >&2; fi
    echo "$(echo "$out" | awk '/Requests\/sec/ {print $2}') $(echo "$out" | awk '$1 == "50%" {print $2}') $(echo "$out" | awk '$1 == "99%" {print $2}')" \
         "$(echo "($s1 - $s0) * 1000000 / $hz / $total" | bc -l)" "$(echo "($r1 - $r0) * 1000000 / $hz / $total" | bc -l)" \
         "$(echo "($n1 - $n0) * 1000000 / $hz / $total" | bc -l)" \
         "$(echo "(${e1% *} - ${e0% *}) / $total" | bc -l)" "$(echo "(${e1#* } - ${e0#* }) / (${e1% *} - ${e0% *} + 0.000001)" | bc -l)" \
         "$caught_up" >> "$work/$label"
}

report() {  # streamed
    local streamed="$1" unit="req/s" factor=1
    [ "$streamed" = 1 ] && { unit="chunks/s"; factor=$chunks_per_stream; }
    : > "$work/upstream"; : > "$work/nginx"; : > "$work/sluice"; : > "$work/before"
    local up_port="$upstream_port" proxy_port="$nginx_port"
    [ "$streamed" = 1 ] && { up_port="$upstream_stream_port"; proxy_port="$nginx_stream_port"; }
    run warmup-nginx "$proxy_port" "$streamed"; run warmup-sluice "$port" "$streamed"
    [ -n "$before_bin" ] && run warmup-before "$before_port" "$streamed" "$before_key" "$before_pid"
    for _ in $(seq 1 "$rounds"); do
        run upstream "$up_port" "$streamed"
        run nginx "$proxy_port" "$streamed"
        run sluice "$port" "$streamed"
        [ -n "$before_bin" ] && run before "$before_port" "$streamed" "$before_key" "$before_pid"
    done
    python3 - "$work" "$factor" "$unit" "$streamed" <<'PY'
import statistics, sys
work, factor, unit, streamed = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4] == "1"
def ms(text):
    return float(text[:-2]) if text.endswith("ms") else float(text[:-2]) / 1000 if text.endswith("us") else float(text[:-1]) * 1000
rows = {}
for label in ("upstream", "nginx", "sluice", "before"):
    runs = [line.split() for line in open(f"{work}/{label}") if line.strip()]
    if not runs:
        continue
    rows[label] = dict(rps=statistics.median(float(r[0]) for r in runs), p50=statistics.median(ms(r[1]) for r in runs),
                       p99=statistics.median(ms(r[2]) for r in runs), sluice=statistics.median(float(r[3]) for r in runs),
                       redis=statistics.median(float(r[4]) for r in runs), nginx=statistics.median(float(r[5]) for r in runs),
                       evalsha=statistics.median(float(r[6]) for r in runs), evalsha_us=statistics.median(float(r[7]) for r in runs),
                       ledger=max(float(r[8]) for r in runs),
                       each=[float(r[0]) for r in runs])
up, ng, sl = rows["upstream"], rows["nginx"], rows["sluice"]
print(f"\n{'streaming' if streamed else 'complete answers'}: median of {len(sl['each'])} interleaved runs; rates in {unit}")
print(f"{'target':<28}{unit:>12}{'p50 ms':>9}{'p99 ms':>9}{'CPU µs/req':>12}{'Redis µs/req':>14}{'ratio':>8}")
print(f"{'upstream alone (nginx return)':<28}{up['rps'] * factor:>12,.0f}{up['p50']:>9.2f}{up['p99']:>9.2f}{'':>12}{'':>14}{up['rps'] / ng['rps']:>8.2f}")
print(f"{'nginx, plain proxy':<28}{ng['rps'] * factor:>12,.0f}{ng['p50']:>9.2f}{ng['p99']:>9.2f}{ng['nginx']:>12.1f}{'':>14}{1:>8.2f}")
print(f"{'Sluice, default settings':<28}{sl['rps'] * factor:>12,.0f}{sl['p50']:>9.2f}{sl['p99']:>9.2f}{sl['sluice']:>12.1f}{sl['redis']:>14.1f}{sl['rps'] / ng['rps']:>8.3f}")
if "before" in rows:
    bf = rows["before"]
    print(f"{'Sluice before (other build)':<28}{bf['rps'] * factor:>12,.0f}{bf['p50']:>9.2f}{bf['p99']:>9.2f}{bf['sluice']:>12.1f}{bf['redis']:>14.1f}{bf['rps'] / ng['rps']:>8.3f}")
print(f"CPU per request: Sluice {sl['sluice'] / ng['nginx']:.1f}x nginx's, Redis {sl['redis'] / ng['nginx']:.1f}x nginx's")
for label, row in (("Sluice", sl), ("Sluice before", rows.get("before"))):
    if row:
        print(f"{label}: {row['evalsha']:.2f} EVALSHA per request (admit + settle batches), {row['evalsha_us']:.1f} usec_per_call; "
              f"its usage was all in the ledger at most {row['ledger']:.0f} s after a run (CPU figures include that time)")
verdict = "OK" if up["rps"] >= 2 * ng["rps"] else "NOT OK: the baseline may be capped by its upstream"
print(f"upstream alone is {up['rps'] / ng['rps']:.2f}x the nginx proxy (needs >= 2): {verdict}")
print("runs (req/s): " + "; ".join(f"{k} " + ", ".join(f"{v:,.0f}" for v in rows[k]['each']) for k in rows))
PY
}
# Latency at half of Sluice's peak: the same paced load on nginx and on Sluice, p99 compared
# (target: Sluice's p99 within nginx's + 2 ms). wrk paces with its `delay()` hook: 64
# connections, each waiting a fixed delay between requests, so both targets get about the same
# rate (printed) and neither is pushed to saturation the way a closed loop would.
half_peak() {
    local rate pace_connections=64 delay target
    rate="$(python3 -c "import statistics; print(int(statistics.median(float(l.split()[0]) for l in open('$work/sluice') if l.strip()) / 2))")"
    delay="$(( pace_connections * 1000 / rate ))"; [ "$delay" -ge 1 ] || delay=1
    cat > "$work/paced.lua" <<LUA
function delay() return $delay end
wrk.method = "POST"
wrk.body = '{"model": "bench-model", "messages": [{"role": "user", "content": "Say something short."}], "max_tokens": 16}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer $key"
LUA
    for target in nginx:$nginx_port sluice:$port; do
        wrk -t1 -c"$pace_connections" -d"${seconds}s" --latency -s "$work/paced.lua" \
            "http://127.0.0.1:${target#*:}/v1/chat/completions" > "$work/paced-${target%%:*}"
    done
    python3 - "$work" "$rate" "$delay" <<'PY'
import sys
work, rate, delay = sys.argv[1], int(sys.argv[2]), sys.argv[3]
def ms(text):
    return float(text[:-2]) if text.endswith("ms") else float(text[:-2]) / 1000 if text.endswith("us") else float(text[:-1]) * 1000
rows = {}
for label in ("nginx", "sluice"):
    lines = open(f"{work}/paced-{label}").read().splitlines()
    pick = lambda key: next(l.split()[1] for l in lines if l.split() and l.split()[0] == key)
    rows[label] = {"rps": float(pick("Requests/sec:")), "p50": ms(pick("50%")), "p99": ms(pick("99%"))}
    errors = [l.strip() for l in lines if "Non-2xx" in l or "Socket errors" in l]
    rows[label]["errors"] = "; ".join(errors) or "none"
print(f"\nlatency at half of Sluice's peak (~{rate:,} req/s wanted): wrk, 64 connections, {delay} ms between requests on each")
for label, row in rows.items():
    print(f"{label:<8} {row['rps']:>9,.0f} req/s  p50 {row['p50']:.2f} ms  p99 {row['p99']:.2f} ms  errors: {row['errors']}")
gap = rows["sluice"]["p99"] - rows["nginx"]["p99"]
print(f"Sluice p99 - nginx p99 = {gap:.2f} ms (target <= 2 ms): {'OK' if gap <= 2 else 'NOT OK'}")
PY
}
[ "$mode" = stream ] || { report 0; half_peak; }
[ "$mode" = complete ] || report 1
