# Sourced by the stack scripts and CI: where the development stack lives and listens.
# Override any of these in the environment before running the scripts.
: "${SLUICE_STACK_DIR:=/tmp/sluice-stack}"
: "${SLUICE_STACK_REDIS_PORT:=16379}"
: "${SLUICE_STACK_PG_PORT:=15432}"
# A Redis Cluster (three masters, three replicas): client ports from here, bus ports 20 above.
: "${SLUICE_STACK_CLUSTER_PORT:=$((SLUICE_STACK_REDIS_PORT + 100))}"
export SLUICE_STACK_DIR SLUICE_STACK_REDIS_PORT SLUICE_STACK_PG_PORT SLUICE_STACK_CLUSTER_PORT
export SLUICE_TEST_REDIS_URL="${SLUICE_TEST_REDIS_URL:-redis://127.0.0.1:${SLUICE_STACK_REDIS_PORT}/0}"
export SLUICE_TEST_DATABASE_URL="${SLUICE_TEST_DATABASE_URL:-postgres://sluice:sluice@127.0.0.1:${SLUICE_STACK_PG_PORT}/sluice}"
cluster_port="$SLUICE_STACK_CLUSTER_PORT"
export SLUICE_TEST_REDIS_CLUSTER_URL="${SLUICE_TEST_REDIS_CLUSTER_URL:-redis+cluster://127.0.0.1:${cluster_port},127.0.0.1:$((cluster_port + 1)),127.0.0.1:$((cluster_port + 2))}"
unset cluster_port
