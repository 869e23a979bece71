# Sourced by the stack scripts and CI: where the development stack lives and listens.
# Override any of these in the environment before running the scripts.
: "${SLUICE_STACK_DIR:=/tmp/sluice-stack}"
: "${SLUICE_STACK_REDIS_PORT:=16379}"
: "${SLUICE_STACK_PG_PORT:=15432}"
export SLUICE_STACK_DIR SLUICE_STACK_REDIS_PORT SLUICE_STACK_PG_PORT
export SLUICE_TEST_REDIS_URL="${SLUICE_TEST_REDIS_URL:-redis://127.0.0.1:${SLUICE_STACK_REDIS_PORT}/0}"
export SLUICE_TEST_DATABASE_URL="${SLUICE_TEST_DATABASE_URL:-postgres://sluice:sluice@127.0.0.1:${SLUICE_STACK_PG_PORT}/sluice}"
