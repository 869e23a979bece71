#!/usr/bin/env bash
# Proves deploy/Dockerfile's image works, with podman on this machine (no registry needed):
#   1. builds the runtime image on a local Debian base (debootstrap) with binaries built here
#      (`--static-swift-stdlib`), through the same Dockerfile users build (BINARIES=prebuilt);
#   2. runs `sluice migrate`, the admin CLI, two mock model servers and three `sluice serve`
#      containers (read-only root, non-root user) against the host's Redis and PostgreSQL;
#   3. sends a burst of 10x a key's request limit through all three: exactly the limit is admitted;
#   4. stops one replica with SIGTERM mid-stream: the stream finishes and the container exits 0.
# Needs root (podman), the network to Debian's archive once (base image), the development stack
# (started here). About 5 minutes after the first run; CI runs it when SLUICE_CONTAINER_TEST=1.
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive
image=localhost/sluice:test
base=localhost/debian:bookworm
static_build="${SLUICE_STATIC_BUILD_DIR:-.build-static}"

command -v podman >/dev/null && command -v debootstrap >/dev/null || {
    apt-get update -qq && apt-get install -y -qq podman buildah runc debootstrap >/dev/null
}
# podman's defaults fail on these machines (crun rlimits, cgroups v1): runc and cgroupfs.
if [ ! -f /etc/containers/containers.conf ]; then
    mkdir -p /etc/containers
    printf '[containers]\ndefault_ulimits = []\n[engine]\ncgroup_manager = "cgroupfs"\nruntime = "runc"\n' \
        > /etc/containers/containers.conf
fi
if ! podman image exists "$base"; then
    echo "--- base image $base (debootstrap, once)"
    mirror="$(grep -rhs '^URIs:.*debian' /etc/apt/sources.list.d/ | head -1 | awk '{print $2}')"
    rootfs="$(mktemp -d)"
    debootstrap --variant=minbase bookworm "$rootfs" "${mirror:-http://deb.debian.org/debian}" >/dev/null
    tar -C "$rootfs" -c . | podman import - "$base" >/dev/null
    rm -rf "$rootfs"
fi

echo "--- binaries (release, static Swift runtime)"
swift build -c release --static-swift-stdlib --scratch-path "$static_build" --product sluice >/dev/null
swift build -c release --static-swift-stdlib --scratch-path "$static_build" --product sluice-mock-upstream >/dev/null
rm -rf deploy/.prebuilt && mkdir -p deploy/.prebuilt
cp "$(swift build -c release --scratch-path "$static_build" --show-bin-path)"/{sluice,sluice-mock-upstream} deploy/.prebuilt/

echo "--- image"
podman build --network host --build-arg BINARIES=prebuilt --build-arg RUNTIME_IMAGE="$base" \
    -t "$image" -f deploy/Dockerfile . >/dev/null
podman image inspect "$image" --format 'user={{.Config.User}} stop={{.Config.StopSignal}} entrypoint={{.Config.Entrypoint}}'

bash scripts/stack-up.sh >/dev/null
source scripts/stack-env.sh
work="$(mktemp -d)"
chmod 755 "$work"
names=(sluice-ct-mock sluice-ct-slow sluice-ct-1 sluice-ct-2 sluice-ct-3)
cleanup() {
    podman rm -f "${names[@]}" >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT
cleanup
mkdir -p "$work"

cat > "$work/env" <<ENV
SLUICE_DATABASE_URL=$SLUICE_TEST_DATABASE_URL
SLUICE_REDIS_URL=$SLUICE_TEST_REDIS_URL
SLUICE_ADMIN_JWT_SECRET=$(openssl rand -hex 32)
SLUICE_KEY_PEPPER=$(openssl rand -hex 32)
ENV
cat > "$work/sluice.yaml" <<YAML
failure_policy: closed
listener:
  drain_delay_ms: 1000
models:
  - name: ct-model
    backends: [{url: "http://127.0.0.1:19300"}]
  - name: ct-slow
    backends: [{url: "http://127.0.0.1:19301"}]
YAML
chmod 644 "$work/env" "$work/sluice.yaml"
run=(podman run --network host --read-only --env-file "$work/env" -v "$work/sluice.yaml:/etc/sluice/sluice.yaml:ro")

echo "--- migrate, tenant, key"
"${run[@]}" --rm "$image" migrate
tenant="$("${run[@]}" --rm "$image" admin create-tenant --name container-test)"
limit=10
key="$("${run[@]}" --rm "$image" admin create-key --tenant "$tenant" --name burst --rpm "$limit")"
stream_key="$("${run[@]}" --rm "$image" admin create-key --tenant "$tenant" --name stream)"

echo "--- two mock model servers and three replicas"
"${run[@]}" -d --name sluice-ct-mock --entrypoint sluice-mock-upstream "$image" \
    --host 127.0.0.1 --port 19300 --models ct-model >/dev/null
"${run[@]}" -d --name sluice-ct-slow --entrypoint sluice-mock-upstream "$image" \
    --host 127.0.0.1 --port 19301 --models ct-slow --tokens 40 --tokens-per-second 20 >/dev/null
for replica in 1 2 3; do
    "${run[@]}" -d --name "sluice-ct-$replica" -e SLUICE_LISTEN="127.0.0.1:1931$replica" \
        -e SLUICE_ADMIN_LISTEN="127.0.0.1:1932$replica" "$image" >/dev/null
done

python3 - "$key" "$limit" "$stream_key" <<'PY'
import json, subprocess, sys, threading, time, urllib.error, urllib.request
from concurrent.futures import ThreadPoolExecutor

key, limit, stream_key = sys.argv[1], int(sys.argv[2]), sys.argv[3]
replicas = [19311, 19312, 19313]

def wait_ready(port):
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as answer:
                if answer.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError):
            pass
        time.sleep(0.2)
    raise SystemExit(f"replica admin port {port} never became ready")

def chat(port):
    body = json.dumps({"model": "ct-model", "messages": [{"role": "user", "content": "hi"}]}).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/chat/completions", data=body,
                                     headers={"authorization": f"Bearer {key}", "content-type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()

for port in replicas:
    wait_ready(port + 10)
print("three replicas ready")

# 1. A burst of 10x the key's limit through all three replicas at once.
started = time.time()
with ThreadPoolExecutor(max_workers=30) as pool:
    statuses = list(pool.map(lambda i: chat(replicas[i % 3])[0], range(10 * limit)))
elapsed = time.time() - started
admitted, refused = statuses.count(200), statuses.count(429)
print(f"burst: {len(statuses)} requests in {elapsed:.2f} s over 3 replicas: {admitted} admitted, {refused} refused (429), "
      f"limit {limit}/min")
refill = int(elapsed * limit / 60)  # tokens the bucket regains while the burst runs
if not (limit <= admitted <= limit + refill) or admitted + refused != len(statuses):
    raise SystemExit(f"FAIL: expected exactly {limit} admitted (+{refill} refilled), got {admitted}; {statuses}")

# 2. SIGTERM mid-stream: the stream finishes, the container exits 0.
result = {}
first_bytes = threading.Event()
def stream():
    body = json.dumps({"model": "ct-slow", "messages": [{"role": "user", "content": "hi"}], "stream": True}).encode()
    with urllib.request.urlopen(urllib.request.Request(
            "http://127.0.0.1:19311/v1/chat/completions", data=body,
            headers={"authorization": f"Bearer {stream_key}", "content-type": "application/json"}), timeout=60) as answer:
        text = b""
        while chunk := answer.read1(4096):
            text += chunk
            first_bytes.set()
        result["status"], result["body"] = answer.status, text.decode()

reader = threading.Thread(target=stream)
reader.start()
if not first_bytes.wait(20):
    raise SystemExit("FAIL: the stream never started")
stop = subprocess.Popen(["podman", "stop", "--time", "40", "sluice-ct-1"], stdout=subprocess.DEVNULL)
reader.join(60)
stop.wait(60)
code = subprocess.run(["podman", "inspect", "sluice-ct-1", "--format", "{{.State.ExitCode}}"],
                      capture_output=True, text=True).stdout.strip()
tokens = result.get("body", "").count('"content":"')
print(f"sigterm mid-stream: status {result.get('status')}, {tokens} content chunks, ends with [DONE]: "
      f"{result.get('body', '').rstrip().endswith('data: [DONE]')}; container exit code {code}")
if result.get("status") != 200 or not result["body"].rstrip().endswith("data: [DONE]") or code != "0":
    raise SystemExit("FAIL: the stream must finish and the container exit 0")
print("container test: OK")
PY
podman logs sluice-ct-1 2>&1 | grep -E '"draining|"msg":"(public listener started|draining)' | head -3 || true
