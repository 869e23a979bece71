#!/usr/bin/env bash
# Runs the whole test suite against a real Redis and PostgreSQL: starts the development stack
# (installing what is missing), then `swift test`. Exits non-zero when any test fails.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/stack-up.sh >/dev/null
source scripts/stack-env.sh
swift test "$@"
