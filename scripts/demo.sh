#!/usr/bin/env bash
# The one command: installs what is missing, starts Redis and PostgreSQL (scripts/stack-up.sh),
# builds Sluice (release), starts a mock model server and one Sluice replica, creates a demo
# tenant and API key, prints how to call it, and runs until Ctrl-C (which stops Sluice and
# the mock; `scripts/stack-down.sh` stops the databases).
#
# Ports: SLUICE_DEMO_PORT (8080), SLUICE_DEMO_ADMIN_PORT (8081), SLUICE_DEMO_MOCK_PORT (9000).
set -euo pipefail
cd "$(dirname "$0")/.."
port="${SLUICE_DEMO_PORT:-8080}"
admin_port="${SLUICE_DEMO_ADMIN_PORT:-8081}"
mock_port="${SLUICE_DEMO_MOCK_PORT:-9000}"

bash scripts/stack-up.sh >/dev/null
source scripts/stack-env.sh
command -v curl >/dev/null || { apt-get update -qq && apt-get install -y -qq curl >/dev/null; }

echo "building Sluice (release; the first build takes several minutes)..." >&2
swift build -c release --product sluice >/dev/null
swift build -c release --product sluice-mock-upstream >/dev/null
bin="$(swift build -c release --show-bin-path)"

# Demo secrets, made once and kept with the stack's data.
secrets="$SLUICE_STACK_DIR/demo-secrets.env"
if [ ! -f "$secrets" ]; then
    umask 077
    { echo "export SLUICE_ADMIN_JWT_SECRET=$(openssl rand -hex 32)"; echo "export SLUICE_KEY_PEPPER=$(openssl rand -hex 32)"; } > "$secrets"
fi
source "$secrets"
export SLUICE_DATABASE_URL="$SLUICE_TEST_DATABASE_URL" SLUICE_REDIS_URL="$SLUICE_TEST_REDIS_URL"

config="$SLUICE_STACK_DIR/demo.yaml"
cat > "$config" <<YAML
listen: 127.0.0.1:$port
admin_listen: 127.0.0.1:$admin_port
failure_policy: closed
models:
  - name: demo-model
    default_output_tokens: 256
    input_usd_per_million: 0.10
    output_usd_per_million: 0.20
    backends:
      - url: http://127.0.0.1:$mock_port
YAML

"$bin/sluice" migrate
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM
"$bin/sluice-mock-upstream" --port "$mock_port" --models demo-model --tokens 32 --tokens-per-second 40 --tokens-per-chunk 2 &
pids+=($!)
"$bin/sluice" serve --config "$config" > "$SLUICE_STACK_DIR/sluice.log" &
sluice_pid=$!
pids+=($sluice_pid)
for _ in $(seq 1 100); do
    curl -fs "http://127.0.0.1:$admin_port/readyz" >/dev/null 2>&1 && break
    kill -0 "$sluice_pid" 2>/dev/null || { echo "sluice exited; see $SLUICE_STACK_DIR/sluice.log" >&2; exit 1; }
    sleep 0.2
done
curl -fs "http://127.0.0.1:$admin_port/readyz" >/dev/null || { echo "sluice is not ready; see $SLUICE_STACK_DIR/sluice.log" >&2; exit 1; }

tenant="$("$bin/sluice" admin create-tenant --name "Demo Tenant" --rpm 60 --tpm 100000)"
key="$("$bin/sluice" admin create-key --tenant "$tenant" --name demo)"
admin_token="$("$bin/sluice" admin token --role tenant_admin --tenant "$tenant" --ttl 12h)"

cat <<EOT

Sluice is running: public API http://127.0.0.1:$port/v1, admin API http://127.0.0.1:$admin_port
(access log: $SLUICE_STACK_DIR/sluice.log). Demo tenant $tenant, 60 requests/minute.

API key (shown once):  $key

  curl http://127.0.0.1:$port/v1/chat/completions \\
    -H "Authorization: Bearer $key" -H "Content-Type: application/json" \\
    -d '{"model": "demo-model", "messages": [{"role": "user", "content": "Hello"}]}' -i

  curl -N http://127.0.0.1:$port/v1/chat/completions \\
    -H "Authorization: Bearer $key" -H "Content-Type: application/json" \\
    -d '{"model": "demo-model", "stream": true, "messages": [{"role": "user", "content": "Hello"}]}'

With the OpenAI SDK (pip install openai):

python3 - <<'PY'
from openai import OpenAI
c = OpenAI(base_url="http://127.0.0.1:$port/v1", api_key="$key")
print(c.chat.completions.create(model="demo-model", messages=[{"role": "user", "content": "Hello"}]).choices[0].message.content)
PY

Admin API (tenant_admin token, 12 h):
  curl -H "Authorization: Bearer $admin_token" http://127.0.0.1:$admin_port/admin/v1/tenants/$tenant/keys
  curl -H "Authorization: Bearer $admin_token" "http://127.0.0.1:$admin_port/admin/v1/tenants/$tenant/usage?group_by=day"
  curl http://127.0.0.1:$admin_port/metrics

Admin web UI: http://127.0.0.1:$admin_port/admin/ui/ (sign in with the tenant_admin token above).

Realtime over WebSocket (pip install websockets):

python3 - <<'PY'
import asyncio, json, websockets
async def main():
    async with websockets.connect("ws://127.0.0.1:$port/v1/realtime?model=demo-model",
                                  additional_headers={"Authorization": "Bearer $key"}) as ws:
        await ws.send(json.dumps({"type": "response.create"}))
        while (event := json.loads(await ws.recv()))["type"] != "response.done":
            pass
        print(event["response"]["usage"])
asyncio.run(main())
PY

Ctrl-C stops Sluice and the mock model server; scripts/stack-down.sh stops Redis and PostgreSQL.
EOT
wait "$sluice_pid"
