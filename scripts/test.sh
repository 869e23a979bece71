#!/usr/bin/env bash
# Runs the whole test suite against a real Redis and PostgreSQL: starts the development stack
# (installing what is missing), runs `swift test`, then the end-to-end tests with the official
# OpenAI Python SDK (Tests/sdk, pytest; promtool checks /metrics and the alert rules there) and
# the short fleet load test (loadtest/fleet.py --short: 1 and 2 replicas behind haproxy). Exits
# non-zero when any test fails. Arguments go to `swift test`; SLUICE_SKIP_SDK_TESTS=1 skips the Python part, SLUICE_SKIP_FLEET=1 the fleet;
# SLUICE_CONTAINER_TEST=1 adds deploy/container-test.sh (podman).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/stack-up.sh >/dev/null
source scripts/stack-env.sh
swift build
# Every part runs under a time limit: a hung test fails the run with its name instead of
# eating CI's budget (normal runs take a few minutes each).
limit() { timeout -k 30 "$@"; }
swift_log="$SLUICE_STACK_DIR/swift-test.log"
status=0
# A crash prints only the crashed thread (the tail CI shows must hold it, not 10 idle threads).
export SWIFT_BACKTRACE="${SWIFT_BACKTRACE:-enable=yes,interactive=no,threads=crashed,registers=none,images=none}"
limit "${SLUICE_SWIFT_TEST_TIMEOUT:-900}" swift test "$@" 2>&1 | tee "$swift_log" || status=${PIPESTATUS[0]}
if [ "$status" -ne 0 ]; then
    # Last in the output, where a truncated CI log still shows it: what crashed or hung, and
    # the tests that started and never finished ("◇ Test name() started." without a later
    # "✔ Test name() …" or "✘ Test name() failed …").
    [ "$status" -eq 124 ] || [ "$status" -eq 137 ] && echo "swift test did not finish in time." >&2
    sed -nE 's/^.*◇ Test ([^ ]+) started\.$/\1/p' "$swift_log" | grep -vx run | sort -u > "$swift_log.started"
    sed -nE 's/^.*[✔✘] Test ([^ ]+)( with [0-9]+ test cases?)? (passed|failed|skipped).*$/\1/p' "$swift_log" | sort -u > "$swift_log.ended"
    echo "tests that started and never finished:" >&2
    comm -23 "$swift_log.started" "$swift_log.ended" | sed 's/^/  /' >&2
    echo "failures, fatal errors and crashes:" >&2
    grep -aE "✘ Test .* (recorded an issue|failed)|Fatal error|Precondition failed|Assertion failed|crashed|unexpected signal" "$swift_log" \
        | cut -c1-400 | head -40 | sed 's/^/  /' >&2
fi
[ "$status" -eq 0 ] || exit "$status"
if [ "${SLUICE_SKIP_SDK_TESTS:-0}" != "1" ]; then
    # promtool checks /metrics and deploy/prometheus-alerts.yaml in the SDK suite.
    command -v promtool >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null; }
    venv="${SLUICE_STACK_DIR}/venv"
    [ -x "$venv/bin/pytest" ] && [ -x "$venv/bin/schemathesis" ] && [ -x "$venv/bin/kubernetes-validate" ] && "$venv/bin/python" -c "import opentelemetry.proto, standardwebhooks, selenium, websockets, tritonclient.grpc" 2>/dev/null \
        || { python3 -m venv "$venv" && "$venv/bin/pip" install -q openai pytest schemathesis kubernetes-validate pyyaml opentelemetry-proto standardwebhooks selenium websockets 'tritonclient[grpc]'; }
    # The admin UI's test drives Debian's chromium.
    command -v chromium >/dev/null && command -v chromedriver >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null; }
    SLUICE_BIN_DIR="$(swift build --show-bin-path)" timeout -k 30 600 "$venv/bin/pytest" -q Tests/sdk
fi
if [ "${SLUICE_SKIP_FLEET:-0}" != "1" ]; then
    command -v haproxy >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq haproxy >/dev/null; }
    limit 360 python3 loadtest/fleet.py --short --output "$SLUICE_STACK_DIR/fleet-short"
    # The same limits through the stack's Redis Cluster (2 replicas; the Swift tests kill and
    # reshard nodes of private clusters).
    limit 360 python3 loadtest/fleet.py --short --redis cluster --replicas 2 --scenarios request_limits,token_limits,revocation \
        --output "$SLUICE_STACK_DIR/fleet-short-cluster"
fi
if [ "${SLUICE_CONTAINER_TEST:-0}" = "1" ]; then
    # The container image with podman (about 5 minutes after the first run): behind a flag.
    bash deploy/container-test.sh
fi
