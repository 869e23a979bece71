#!/usr/bin/env bash
# Runs the whole test suite against a real Redis and PostgreSQL: starts the development stack
# (installing what is missing), runs `swift test`, then the end-to-end tests with the official
# OpenAI Python SDK (Tests/sdk, pytest). Exits non-zero when any test fails. Arguments go to
# `swift test`; SLUICE_SKIP_SDK_TESTS=1 skips the Python part.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/stack-up.sh >/dev/null
source scripts/stack-env.sh
swift build
swift test "$@"
if [ "${SLUICE_SKIP_SDK_TESTS:-0}" != "1" ]; then
    venv="${SLUICE_STACK_DIR}/venv"
    [ -x "$venv/bin/pytest" ] || { python3 -m venv "$venv" && "$venv/bin/pip" install -q openai pytest; }
    SLUICE_BIN_DIR="$(swift build --show-bin-path)" "$venv/bin/pytest" -q Tests/sdk
fi
