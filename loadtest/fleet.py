#!/usr/bin/env python3
"""Fleet load tests: N Sluice replicas on loopback behind haproxy, proving limits hold across
replicas and measuring throughput. Starts everything itself (Redis and PostgreSQL come from
scripts/stack-up.sh), tears all of it down, and writes results.json and report.md under
loadtest/results/<time>/.

    loadtest/fleet.py                 # full run (several minutes)
    loadtest/fleet.py --short         # the CI version: short scenarios 1-4 and 6, debug build

Scenarios: 1 request limits (burst of 10·L from 512 clients; paced 2x overload in the full
run), 2 token limits with refunds, 3 concurrency limits with `kill -9` of a replica mid-stream
(2+ replicas; the killed replica was also answering paced load: every answered request must be
billed once), 4 revocation time, 5 throughput vs nginx (full run).
6 Redis paused / SCRIPT FLUSHed / restarted under load (2 replicas; policies closed, open and
local in the full run, closed in the short one). PNG charts come from loadtest/charts.py.

    loadtest/fleet.py --scenarios redis_trouble --replicas 2    # a subset
    loadtest/fleet.py --short --redis cluster   # against the stack's Redis Cluster
"""
import argparse
import json
import os
import platform
import random
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import datetime, timezone

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SECRET = "fleet-admin-secret-0123456789abcdef"
PEPPER = "fleet-pepper-0123456789"


def sh(*args, **kwargs):
    return subprocess.run(args, check=True, capture_output=True, text=True, **kwargs).stdout.strip()


def stack_env():
    out = sh("bash", "-c", "source scripts/stack-env.sh && env", cwd=ROOT)
    return dict(line.split("=", 1) for line in out.splitlines() if line.startswith("SLUICE_"))


_handed_out = set()


def free_port():
    """A free port below the kernel's ephemeral range: a port from that range can be taken by one
    of the load's thousands of outgoing connections before the server binds it."""
    low = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
    while True:
        port = random.randrange(max(1024, low - 12_000), low)
        if port in _handed_out:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port


def wait_ready(url, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url, timeout=1)
            return
        except Exception:
            time.sleep(0.1)
    raise RuntimeError(f"not ready: {url}")


class Fleet:
    """The mock model server, N replicas and haproxy; stop() leaves nothing running."""

    def __init__(self, bin_dir, env, replicas, workdir, policy="closed"):
        self.bin, self.env, self.n, self.dir, self.policy = bin_dir, env, replicas, workdir, policy
        self.processes = []
        self.mock_port = free_port()
        self.slow_mock_port = free_port()
        self.lease_seconds = 5
        self.settle_deadline_seconds = 8
        self.balancer_port = free_port()
        self.ports = [(free_port(), free_port()) for _ in range(replicas)]

    def spawn(self, args, log):
        self.processes.append(subprocess.Popen(args, env=self.env, stdout=open(os.path.join(self.dir, log), "a"),
                                               stderr=subprocess.STDOUT))
        return self.processes[-1]

    def start(self):
        """Starts everything and waits until it answers; on failure stops what it started and
        shows the tail of each log."""
        try:
            return self._start()
        except Exception:
            self.stop()
            for log in sorted(os.listdir(self.dir)):
                if log.endswith(".log"):
                    with open(os.path.join(self.dir, log)) as f:
                        print(f"--- {log} (last lines)\n" + "".join(f.readlines()[-15:]), file=sys.stderr)
            raise

    def _start(self):
        self.spawn([f"{self.bin}/sluice-mock-upstream", "--port", str(self.mock_port), "--models", "fleet-model",
                    "--tokens", "16"], "mock.log")
        self.spawn([f"{self.bin}/sluice-mock-upstream", "--port", str(self.slow_mock_port), "--models", "slow-model",
                    "--tokens", "600", "--tokens-per-second", "10"], "slow-mock.log")
        self.replica_processes = []
        for index, (port, admin) in enumerate(self.ports):
            config = os.path.join(self.dir, f"replica{index}.yaml")
            with open(config, "w") as f:
                f.write(f"listen: 127.0.0.1:{port}\nadmin_listen: 127.0.0.1:{admin}\n"
                        f"expected_replicas: {self.n}\nlease_seconds: {self.lease_seconds}\nfailure_policy: {self.policy}\n"
                        f"settle_deadline_seconds: {self.settle_deadline_seconds}\n"
                        f"models:\n  - name: fleet-model\n"
                        f"    backends:\n      - url: http://127.0.0.1:{self.mock_port}\n"
                        f"  - name: slow-model\n    backends:\n      - url: http://127.0.0.1:{self.slow_mock_port}\n")
            # Default settings (the access log on, as users run it), logged to a file.
            self.replica_processes.append(
                self.spawn([f"{self.bin}/sluice", "serve", "--config", config], f"replica{index}.log"))
        servers = "\n".join(f"    server r{i} 127.0.0.1:{port}" for i, (port, _) in enumerate(self.ports))
        cfg = os.path.join(self.dir, "haproxy.cfg")
        with open(cfg, "w") as f:
            f.write(f"""global
    maxconn 4096
defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    option http-keep-alive
frontend fleet
    bind 127.0.0.1:{self.balancer_port}
    default_backend replicas
backend replicas
    balance roundrobin
{servers}
""")
        self.spawn(["haproxy", "-f", cfg, "-db"], "haproxy.log")
        for port in (self.mock_port, self.slow_mock_port):
            wait_ready(f"http://127.0.0.1:{port}/health")
        for _, admin in self.ports:
            wait_ready(f"http://127.0.0.1:{admin}/readyz")
        return self

    def stop(self):
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=40)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    @property
    def balancer(self):
        return f"http://127.0.0.1:{self.balancer_port}"


def admin(env, bin_dir, *args):
    return sh(f"{bin_dir}/sluice", "admin", *args, env=env)


def new_key(env, bin_dir, rpm=None, tpm=None, concurrency=None):
    tenant = admin(env, bin_dir, "create-tenant", "--name", "fleet",
                   *(["--rpm", str(rpm)] if rpm else []), *(["--tpm", str(tpm)] if tpm else []))
    return tenant, admin(env, bin_dir, "create-key", "--tenant", tenant, "--name", "fleet",
                         *(["--concurrency", str(concurrency)] if concurrency else []))


def load(bin_dir, *args):
    """Runs the driver; its last line is the result."""
    return json.loads(sh(f"{bin_dir}/sluice-load", *args).splitlines()[-1])


def cumulative(times, seconds):
    """How many of `times` fall before the end of each second 1..seconds."""
    times = sorted(times)
    counts, index = [], 0
    for second in range(1, seconds + 1):
        while index < len(times) and times[index] < second:
            index += 1
        counts.append(index)
    return counts


def scenario_request_limits(ctx, fleet, short):
    limit = 60 if short else 120
    _, key = new_key(ctx["env"], ctx["bin"], rpm=limit)
    burst = load(ctx["bin"], "burst", "--url", fleet.balancer, "--key", key, "--count", str(10 * limit),
                 "--concurrency", "256" if short else "512")
    # Exactly `limit`: the driver opens its connections first so the burst ends within one
    # emission interval (60/limit s), before the limiter's first refill is due.
    result = {"replicas": fleet.n, "limit_per_minute": limit, "burst": burst, "emission_interval_s": 60 / limit,
              "pass": burst["admitted"] == limit and burst["statuses"].get("0", 0) == 0}
    if not short:
        # Paced overload at twice the rate, after the burst drained the bucket.
        seconds = 180
        paced = load(ctx["bin"], "paced", "--url", fleet.balancer, "--key", key, "--rate", str(2 * limit / 60),
                     "--seconds", str(seconds))
        expected = seconds * limit / 60
        outcomes = paced.pop("outcomes")
        paced.pop("codes")
        result["paced"] = dict(paced, expected=expected,
                               admitted_by_second=cumulative([row[0] for row in outcomes if row[1] == 200], seconds))
        result["pass"] = result["pass"] and abs(paced["admitted"] - expected) <= 0.01 * expected + 1
    return result


def scenario_token_limits(ctx, fleet, short):
    tpm = 3000
    _, key = new_key(ctx["env"], ctx["bin"], tpm=tpm)
    first = load(ctx["bin"], "burst", "--url", fleet.balancer, "--key", key, "--count", "150", "--concurrency", "64",
                 "--max-tokens", "30")
    second = load(ctx["bin"], "burst", "--url", fleet.balancer, "--key", key, "--count", "150", "--concurrency", "64",
                  "--max-tokens", "30")
    refill = int((first["seconds"] + second["seconds"]) * tpm / 60) + 1
    # The verdict: real usage (below each reservation) never exceeds the limit plus the refill during
    # the run. How many requests the refunds let in depends on timing (reported, not judged here;
    # the Swift limiter tests check refund arithmetic exactly).
    return {"replicas": fleet.n, "tokens_per_minute": tpm, "first_burst": first, "second_burst": second,
            "pass": first["tokens_admitted"] + second["tokens_admitted"] <= tpm + refill}


def scenario_concurrency(ctx, fleet, short):
    """Long streams hold a key's slots across replicas; `kill -9` of the replica serving them
    frees the slots within the lease. Meanwhile that replica answers paced traffic of another
    tenant: every request a client saw answered reaches the ledger exactly once, although the
    replica died before settling some of them (the sweep bills those at their reservation)."""
    limit = 4
    _, key = new_key(ctx["env"], ctx["bin"], concurrency=limit)
    billed_tenant, billed_key = new_key(ctx["env"], ctx["bin"])
    replica = [f"http://127.0.0.1:{port}" for port, _ in fleet.ports]
    hold = subprocess.Popen([f"{ctx['bin']}/sluice-load", "hold", "--url", replica[0], "--key", key, "--count", str(limit),
                             "--model", "slow-model", "--seconds", "120"], stdout=subprocess.PIPE, text=True)
    paced = None
    try:
        started = json.loads(hold.stdout.readline() or "{}")
        refused = load(ctx["bin"], "burst", "--url", replica[1], "--key", key, "--count", "1", "--concurrency", "1")
        paced = subprocess.Popen([f"{ctx['bin']}/sluice-load", "paced", "--url", replica[0], "--key", billed_key,
                                  "--rate", "100", "--seconds", "4"], stdout=subprocess.PIPE, text=True)
        time.sleep(2)  # half-way through the paced load
        fleet.replica_processes[0].kill()  # SIGKILL: no settle, no goodbye
        killed = time.time()
        freed_after = None
        while time.time() - killed < fleet.lease_seconds + 20:
            if load(ctx["bin"], "burst", "--url", replica[1], "--key", key, "--count", "1", "--concurrency", "1")["admitted"]:
                freed_after = time.time() - killed
                break
            time.sleep(0.2)
    finally:
        hold.kill()
        hold.wait()
    answered = json.loads(paced.communicate(timeout=60)[0].splitlines()[-1])
    paced_statuses = {}
    for _, status, _ in answered["outcomes"]:
        paced_statuses[str(int(status))] = paced_statuses.get(str(int(status)), 0) + 1
    # Billed: the answered requests, plus those cut by the kill after admission (billed at their
    # reservation), never one twice (the ledger is unique per tenant and request id). The sweep
    # runs on the surviving replica every few seconds once the deadline has passed.
    ledgered, deadline = 0, time.time() + fleet.settle_deadline_seconds + 30
    while time.time() < deadline:
        ledgered = ledger_rows(ctx, billed_tenant)
        if ledgered >= answered["admitted"]:
            break
        time.sleep(0.5)
    cut = sum(count for status, count in paced_statuses.items() if status != "200")
    # Rows the sweep billed at their reservation (the mock reports usage, so settled rows are 'backend').
    swept = int(sh("psql", ctx["env"]["SLUICE_DATABASE_URL"], "-Atc",
                   f"SELECT count(*) FROM usage_ledger WHERE tenant_id = '{billed_tenant}' AND usage_source = 'estimated'"))
    return {"replicas": fleet.n, "limit": limit, "streams_started": started.get("started", 0),
            "extra_request_statuses": refused["statuses"], "lease_seconds": fleet.lease_seconds,
            "freed_after_seconds": freed_after,
            "killed_replica_answered": answered["admitted"], "killed_replica_statuses": paced_statuses,
            "ledger_rows": ledgered, "billed_at_reservation": swept,
            "pass": started.get("started") == limit and refused["statuses"] == {"429": 1}
                    and freed_after is not None and freed_after <= fleet.lease_seconds + 2
                    and answered["admitted"] > 0 and answered["admitted"] <= ledgered <= answered["admitted"] + cut}


def scenario_revocation(ctx, fleet, short):
    tenant, key = new_key(ctx["env"], ctx["bin"])
    key_id = key.split("_")[1]
    token = admin(ctx["env"], ctx["bin"], "token", "--role", "platform_admin", "--ttl", "10m")
    urls = ",".join(f"http://127.0.0.1:{port}" for port, _ in fleet.ports)
    result = load(ctx["bin"], "revoke", "--urls", urls, "--key", key, "--key-id", key_id,
                  "--admin", f"http://127.0.0.1:{fleet.ports[0][1]}", "--token", token)
    return {"replicas": fleet.n, **result, "pass": 0 <= result["slowest_ms"] < 1000}


class PrivateRedis:
    """A Redis of the scenario's own, so it can be paused and restarted. AOF persistence is on, as
    in production: a restart keeps the usage streams, but never the script cache. The AOF is
    fsynced only at shutdown (`appendfsync no`): on a disk busy with a build, `everysec` fsyncs
    can stall Redis for seconds, which would test the disk, not Sluice."""

    def __init__(self, workdir):
        self.port, self.dir, self.process = free_port(), workdir, None

    @property
    def url(self):
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self):
        self.process = subprocess.Popen(["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                         "--appendonly", "yes", "--appendfsync", "no",
                                         "--appendfilename", f"fleet-{self.port}.aof", "--dir", self.dir], stdout=subprocess.DEVNULL)
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("private redis-server did not start")

    def stop(self):
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.terminate()
            self.process.wait(timeout=10)

    def command(self, *args):
        return sh("redis-cli", "-p", str(self.port), *args)


# Scenario 6's schedule, in seconds after the first request: (event, start, end).
REDIS_TROUBLE = [("pause", 4, 9), ("script_flush", 14, 14), ("restart", 19, 21)]
# The longest a request may take while Redis misbehaves: the key's cache lookup, the admit and
# the settle, each capped by the 1 s Redis command timeout (none is retried after a timeout),
# plus a second of slack.
REDIS_TROUBLE_BOUND_MS = 4_000


def scenario_redis_trouble(ctx, policy, replicas, workdir, short):
    """Under steady load through the balancer, Redis is paused (SIGSTOP), its scripts flushed,
    and it is restarted (its script cache empty). Judged against the failure policy: `closed`
    refuses with 503 while Redis is unreachable and recovers; `open` and `local` keep admitting.
    No request may take longer than the timeouts allow or fail at the transport, and every
    admitted request must reach the billing ledger once."""
    redis = PrivateRedis(workdir).start()
    env = dict(ctx["env"], SLUICE_REDIS_URL=redis.url)
    try:
        fleet = Fleet(ctx["bin"], env, replicas, workdir, policy=policy).start()
    except Exception:
        redis.stop()
        raise
    seconds, rate = 30, 40 if short else 100
    try:
        tenant, key = new_key(ctx["env"], ctx["bin"], rpm=1_000_000, tpm=100_000_000)
        driver = subprocess.Popen([f"{ctx['bin']}/sluice-load", "paced", "--url", fleet.balancer, "--key", key,
                                   "--rate", str(rate), "--seconds", str(seconds)], stdout=subprocess.PIPE, text=True)
        json.loads(driver.stdout.readline())
        started = time.time()
        happened = {}
        for event, begin, end in REDIS_TROUBLE:
            time.sleep(max(0, started + begin - time.time()))
            happened[event] = [round(time.time() - started, 3)]
            if event == "pause":
                redis.process.send_signal(signal.SIGSTOP)
                time.sleep(max(0, started + end - time.time()))
                redis.process.send_signal(signal.SIGCONT)
            elif event == "script_flush":
                redis.command("SCRIPT", "FLUSH")
            else:
                redis.stop()
                time.sleep(max(0, started + end - time.time()))
                redis.start()
            happened[event].append(round(time.time() - started, 3))
        result = json.loads(driver.communicate(timeout=seconds + 60)[0].splitlines()[-1])
        # The metering workers drain the usage streams every 500 ms; give them time.
        deadline = time.time() + 15
        while ledger_rows(ctx, tenant) < result["admitted"] and time.time() < deadline:
            time.sleep(0.5)
    finally:
        if redis.process.poll() is None:
            redis.process.send_signal(signal.SIGCONT)
        fleet.stop()  # graceful: each replica writes its pending fallback usage
        redis.stop()
    result["ledger_rows"] = ledger_rows(ctx, tenant)
    outcomes = [(start, int(status), ms, code) for (start, status, ms), code in zip(result.pop("outcomes"), result.pop("codes"))]
    return judge_redis_trouble(policy, replicas, rate, happened, outcomes, result)


def ledger_rows(ctx, tenant):
    """Requests of this tenant in the billing ledger."""
    return int(sh("psql", ctx["env"]["SLUICE_DATABASE_URL"], "-Atc",
                  f"SELECT count(*) FROM usage_ledger WHERE tenant_id = '{tenant}'"))


def judge_redis_trouble(policy, replicas, rate, happened, outcomes, result):
    """Outcomes are (start s, status, ms, error code). A request counts as "before" the trouble
    only if it ended before the pause, and as hit by an outage if it overlapped one."""
    (pause_start, pause_end), (flush, _), (down, up) = happened["pause"], happened["script_flush"], happened["restart"]
    overlaps = lambda o, begin, end: o[0] < end and o[0] + o[2] / 1000 >= begin
    def recovered_after(end, until):
        """Seconds from `end` until every later request (before `until`) was admitted."""
        failures = [o[0] for o in outcomes if end <= o[0] < until and o[1] != 200]
        return round(max(failures) - end, 2) if failures else 0.0
    label = lambda o: str(o[1]) + (f" {o[3]}" if o[3] else "")
    before = [o for o in outcomes if o[0] + o[2] / 1000 < pause_start]
    during = [o for o in outcomes if overlaps(o, pause_start, pause_end) or overlaps(o, down, up)]
    after_flush = [o for o in outcomes if flush <= o[0] < flush + 3]
    slowest = max(o[2] for o in outcomes)
    recovery = {"pause": recovered_after(pause_end, flush), "restart": recovered_after(up, float("inf"))}
    count = lambda group: {name: sum(1 for o in group if label(o) == name) for name in sorted({label(o) for o in group})}
    if policy == "closed":
        # Unreachable Redis means 503 limiter_unavailable (a request admitted before may finish).
        policy_ok = {label(o) for o in during} <= {"200", "503 limiter_unavailable"} \
                    and any(o[1] == 503 for o in during) and max(recovery.values()) <= 5
    else:
        policy_ok = {o[1] for o in during} == {200}
    checks = {"steady_before": all(o[1] == 200 for o in before), "policy_during_outage": policy_ok,
              "script_flush_transparent": all(o[1] == 200 for o in after_flush),
              "no_transport_errors": all(o[1] != 0 for o in outcomes),
              # Every admitted request billed once: through the Redis stream, or directly when Redis could not take it.
              "usage_all_ledgered": result["ledger_rows"] == result["admitted"],
              "no_hang": slowest <= REDIS_TROUBLE_BOUND_MS}
    # For a failed check: the requests that broke it (at most 10 each), to read in the report.
    offending = {"steady_before": [o for o in before if o[1] != 200],
                 "script_flush_transparent": [o for o in after_flush if o[1] != 200],
                 "no_transport_errors": [o for o in outcomes if o[1] == 0],
                 "no_hang": [o for o in outcomes if o[2] > REDIS_TROUBLE_BOUND_MS]}
    evidence = {name: offending[name][:10] for name, ok in checks.items() if not ok and name in offending}
    return {"policy": policy, "replicas": replicas, "rate_per_second": rate, "events": happened,
            "statuses": count(outcomes), "statuses_during_outage": count(during), "recovered_after_s": recovery,
            "slowest_ms": slowest, "bound_ms": REDIS_TROUBLE_BOUND_MS, "latency": result["latency"], "checks": checks,
            "admitted": result["admitted"], "ledger_rows": result["ledger_rows"], "evidence": evidence,
            "per_second": per_second(outcomes), "pass": all(checks.values())}


def per_second(outcomes):
    """[second, admitted, refused or failed, slowest ms] for each second of a run."""
    rows = {}
    for start, status, ms, _ in outcomes:
        row = rows.setdefault(int(start), [int(start), 0, 0, 0.0])
        row[1 if status == 200 else 2] += 1
        row[3] = max(row[3], ms)
    return [rows[second] for second in sorted(rows)]


def wrk(url, key, seconds, connections=128):
    script = tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False)
    script.write('wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
                 f'wrk.headers["Authorization"] = "Bearer {key}"\n'
                 'wrk.body = \'{"model": "fleet-model", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 16}\'\n'
                 'function done(summary, latency, requests) io.write(string.format("p999_us %d\\n", latency:percentile(99.9))) end\n')
    script.close()
    out = sh("wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", script.name, f"{url}/v1/chat/completions")
    os.unlink(script.name)
    def percentile(name):
        match = re.search(rf"^\s+{name}\s+([\d.]+)(us|ms|s)", out, re.M)
        if not match:
            return None
        value, unit = float(match.group(1)), match.group(2)
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value
    return {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
            "p50_ms": percentile("50%"), "p99_ms": percentile("99%"),
            "p999_ms": int(re.search(r"^p999_us (\d+)", out, re.M).group(1)) / 1000,
            "non_2xx": int(m.group(1)) if (m := re.search(r"Non-2xx or 3xx responses: (\d+)", out)) else 0}


def nginx_baseline(mock_port, workdir, seconds):
    """nginx as a plain reverse proxy to the same mock, for the ratio in the same run."""
    port = free_port()
    conf = os.path.join(workdir, "nginx.conf")
    with open(conf, "w") as f:
        f.write(f"""worker_processes auto;
pid {workdir}/nginx.pid;
error_log {workdir}/nginx-error.log;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    upstream mock {{ server 127.0.0.1:{mock_port}; keepalive 128; }}
    server {{
        listen 127.0.0.1:{port};
        location / {{ proxy_pass http://mock; proxy_http_version 1.1; proxy_set_header Connection ""; }}
    }}
}}
""")
    nginx = subprocess.Popen(["nginx", "-c", conf, "-g", "daemon off;"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_ready(f"http://127.0.0.1:{port}/health")
        return wrk(f"http://127.0.0.1:{port}", "none", seconds)
    finally:
        nginx.terminate()
        nginx.wait(timeout=10)


SCENARIOS = ["request_limits", "token_limits", "concurrency", "revocation", "throughput", "redis_trouble"]


def machine():
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    memory = next((int(line.split()[1]) // 1024 for line in open("/proc/meminfo") if line.startswith("MemTotal")), 0)
    return {"cpus": os.cpu_count(), "cpu": cpu, "memory_mib": memory, "platform": platform.platform()}


def run(args):
    env = dict(os.environ, **stack_env(), SLUICE_ADMIN_JWT_SECRET=SECRET, SLUICE_KEY_PEPPER=PEPPER)
    env["SLUICE_DATABASE_URL"], env["SLUICE_REDIS_URL"] = env["SLUICE_TEST_DATABASE_URL"], env["SLUICE_TEST_REDIS_URL"]
    if args.redis == "cluster":
        # The stack's cluster (three masters, three replicas); settles wait for a replica.
        env["SLUICE_REDIS_URL"], env["SLUICE_REDIS_SETTLE_REPLICAS"] = env["SLUICE_TEST_REDIS_CLUSTER_URL"], "1"
    config = "debug" if args.short else "release"
    for product in ("sluice", "sluice-mock-upstream", "sluice-load"):
        sh("swift", "build", "-c", config, "--product", product, cwd=ROOT)
    bin_dir = sh("swift", "build", "-c", config, "--show-bin-path", cwd=ROOT)
    sh(f"{bin_dir}/sluice", "migrate", env=env)
    ctx = {"env": env, "bin": bin_dir}
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    out_dir = args.output or os.path.join(ROOT, "loadtest", "results", ("short-" if args.short else "") + stamp)
    os.makedirs(out_dir, exist_ok=True)
    try:
        commit = sh("git", "describe", "--always", "--dirty", cwd=ROOT)
    except (subprocess.CalledProcessError, FileNotFoundError):
        commit = "unknown"  # not a git checkout
    results = {"command": " ".join(["loadtest/fleet.py"] + sys.argv[1:]), "started": stamp, "build": config, "commit": commit,
               "redis": args.redis,
               "machine": machine(), "scenarios": {name: [] for name in SCENARIOS}}
    wanted = set(args.scenarios.split(",")) if args.scenarios else set(SCENARIOS)
    unknown = wanted - set(SCENARIOS)
    if unknown:
        sys.exit(f"unknown scenarios {sorted(unknown)}; known: {', '.join(SCENARIOS)}")
    replica_counts = [int(n) for n in args.replicas.split(",")] if args.replicas else [1, 2] if args.short else [1, 2, 4, 8]
    fleet_scenarios = [("request_limits", scenario_request_limits), ("token_limits", scenario_token_limits),
                       ("revocation", scenario_revocation)]
    with tempfile.TemporaryDirectory() as workdir:
        for n in replica_counts:
            if not wanted & {"request_limits", "token_limits", "revocation", "concurrency", "throughput"}:
                break
            fleet = Fleet(bin_dir, env, n, workdir).start()
            try:
                for name, scenario in fleet_scenarios:
                    if name in wanted:
                        results["scenarios"][name].append(scenario(ctx, fleet, args.short))
                if "throughput" in wanted and not args.short and n in (1, 2, 4):
                    results["scenarios"]["throughput"].append(scenario_throughput(ctx, fleet, workdir))
                if "concurrency" in wanted and n >= 2:
                    # Last: it kills a replica.
                    results["scenarios"]["concurrency"].append(scenario_concurrency(ctx, fleet, args.short))
            finally:
                fleet.stop()
        # The trouble scenario stops and pauses one private redis-server; a cluster's failover has its
        # own test (ClusterFailoverTests).
        if "redis_trouble" in wanted and args.redis == "standalone":
            for policy in ["closed"] if args.short else ["closed", "open", "local"]:
                results["scenarios"]["redis_trouble"].append(scenario_redis_trouble(ctx, policy, 2, workdir, args.short))
    verdicts = {name: all(r.get("pass", True) for r in runs) for name, runs in results["scenarios"].items()
                if runs and name != "throughput"}
    results["verdicts"] = verdicts
    with open(os.path.join(out_dir, "results.json"), "w") as f:
        json.dump(results, f, indent=1, sort_keys=True)
    charts = draw_charts(out_dir) if args.charts or not args.short else []
    with open(os.path.join(out_dir, "report.md"), "w") as f:
        f.write(report(results, charts))
    print(report(results, charts))
    passed = sum(verdicts.values())
    print(f"fleet: {passed} passed, {len(verdicts) - passed} failed")
    return 0 if all(verdicts.values()) else 1


def scenario_throughput(ctx, fleet, workdir):
    _, key = new_key(ctx["env"], ctx["bin"], rpm=100_000_000, tpm=1_000_000_000)
    entry = {"replicas": fleet.n, "sluice": wrk(fleet.balancer, key, 10)}
    if fleet.n == 1:
        entry["nginx"] = nginx_baseline(fleet.mock_port, workdir, 10)
    return entry


def draw_charts(out_dir):
    """PNG charts through loadtest/charts.py, in a venv of its own with matplotlib from PyPI."""
    venv = os.path.join(stack_env().get("SLUICE_STACK_DIR", "/tmp/sluice-stack"), "venv-charts")
    try:
        if not os.path.exists(os.path.join(venv, "bin", "python")):
            sh("python3", "-m", "venv", venv)
        sh(os.path.join(venv, "bin", "pip"), "install", "-q", "matplotlib")
        return sh(os.path.join(venv, "bin", "python"), os.path.join(ROOT, "loadtest", "charts.py"), out_dir).split()
    except subprocess.CalledProcessError as error:
        print(f"charts skipped: {error.stderr.strip()[-500:]}", file=sys.stderr)
        return []


def verdict(run):
    return "PASS" if run["pass"] else "FAIL"


def report(results, charts=()):
    s, m = results["scenarios"], results["machine"]
    redis = ("a Redis Cluster (three masters, three replicas; settles wait for a replica)"
             if results.get("redis") == "cluster" else "one Redis")
    lines = [f"# Sluice fleet load test ({results['started']})", "",
             f"Command: `{results['command']}` ({results['build']} build of {results.get('commit', '?')}). Machine: {m['cpus']} × {m.get('cpu', '?')}, "
             f"{m.get('memory_mib', '?')} MiB, {m['platform']}. Everything on loopback: haproxy (round robin) in front "
             f"of N replicas, {redis}, one PostgreSQL, one mock model server; all share the same CPUs, so more "
             "replicas add contention, not capacity.", "",
             "| scenario | replicas | result | verdict |", "| --- | --- | --- | --- |"]
    for r in s["request_limits"]:
        b = r["burst"]
        detail = (f"limit {r['limit_per_minute']}/min, burst of {b['count']} from {b['concurrency']} clients in "
                  f"{b['seconds']:.2f} s: admitted {b['admitted']} (must be exactly {r['limit_per_minute']}); statuses {b['statuses']}")
        if "paced" in r:
            detail += (f"; paced 2x for {r['paced']['seconds']} s: admitted {r['paced']['admitted']} "
                       f"(expected {r['paced']['expected']:.0f} ±1%)")
        lines.append(f"| 1 request limits | {r['replicas']} | {detail} | {verdict(r)} |")
    for r in s["token_limits"]:
        lines.append(f"| 2 token limits | {r['replicas']} | {r['tokens_per_minute']} tokens/min; real usage admitted "
                     f"{r['first_burst']['tokens_admitted']} + {r['second_burst']['tokens_admitted']}; second burst after refunds "
                     f"admitted {r['second_burst']['admitted']} | {verdict(r)} |")
    for r in s["concurrency"]:
        freed = f"{r['freed_after_seconds']:.1f} s" if r["freed_after_seconds"] is not None else "never"
        lines.append(f"| 3 concurrency | {r['replicas']} | {r['streams_started']} of {r['limit']} streams held on one replica; "
                     f"an extra request via another replica: {r['extra_request_statuses']}; after `kill -9` of the "
                     f"holder the slots freed in {freed} (lease {r['lease_seconds']} s); the killed replica answered "
                     f"{r.get('killed_replica_answered')} paced requests ({r.get('killed_replica_statuses')}), ledger rows "
                     f"{r.get('ledger_rows')} ({r.get('billed_at_reservation')} billed at their reservation) | {verdict(r)} |")
    for r in s["revocation"]:
        lines.append(f"| 4 revocation | {r['replicas']} | every replica refused the key after {r['slowest_ms']:.0f} ms "
                     f"| {verdict(r)} |")
    baseline = next((r["nginx"] for r in s["throughput"] if "nginx" in r), None)
    for r in s["throughput"]:
        t = r["sluice"]
        ratio = f", {t['rps'] / baseline['rps']:.2f}x nginx" if baseline else ""
        lines.append(f"| 5 throughput | {r['replicas']} | Sluice with limits via haproxy: {t['rps']:.0f} req/s{ratio}, "
                     f"p50 {t['p50_ms']} ms, p99 {t['p99_ms']} ms, p999 {t.get('p999_ms')} ms, non-2xx {t['non_2xx']} | measured |")
    if baseline:
        lines.append(f"| 5 throughput | nginx | nginx → the same mock: {baseline['rps']:.0f} req/s, p50 {baseline['p50_ms']} ms, "
                     f"p99 {baseline['p99_ms']} ms, p999 {baseline.get('p999_ms')} ms | baseline |")
    for r in s["redis_trouble"]:
        e = r["events"]
        failed = [name for name, ok in r["checks"].items() if not ok]
        lines.append(f"| 6 Redis trouble, policy `{r['policy']}` | {r['replicas']} | {r['rate_per_second']} req/s; paused "
                     f"{e['pause'][0]:.0f}–{e['pause'][1]:.0f} s, SCRIPT FLUSH at {e['script_flush'][0]:.0f} s, restarted "
                     f"{e['restart'][0]:.0f}–{e['restart'][1]:.0f} s; statuses {r['statuses']}, while unreachable "
                     f"{r['statuses_during_outage']}; all admitted again {r['recovered_after_s']['pause']} s after the pause and "
                     f"{r['recovered_after_s']['restart']} s after the restart; slowest request {r['slowest_ms']:.0f} ms "
                     f"(bound {r['bound_ms']} ms); ledger rows {r['ledger_rows']} for {r['admitted']} admitted"
                     + (f"; failed checks: {', '.join(failed)}; offending (start s, status, ms, code): {r.get('evidence')}"
                        if failed else "")
                     + f" | {verdict(r)} |")
    if charts:
        lines += [""] + [f"![{name}]({name})" for name in charts]
    lines += ["", "How to read it: scenario 1's burst must admit exactly the limit (the driver opens its connections "
              "first, so the burst ends before the first refill is due); scenario 6 expects `closed` to answer 503 "
              "`limiter_unavailable` while Redis is unreachable and to recover within 5 s, and `open`/`local` to keep "
              "admitting; every admitted request must reach the billing ledger exactly once; no request may take longer than a key lookup, an admit and a settle at the 1 s Redis "
              "command timeout each (4 s with slack).", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--short", action="store_true", help="CI version: short scenarios, debug build")
    parser.add_argument("--output", help="results folder (default loadtest/results/<time>)")
    parser.add_argument("--scenarios", help=f"comma-separated subset of {','.join(SCENARIOS)}")
    parser.add_argument("--replicas", help="comma-separated replica counts (default 1,2,4,8; short 1,2)")
    parser.add_argument("--charts", action="store_true", help="draw PNG charts in a short run too")
    parser.add_argument("--redis", choices=["standalone", "cluster"], default="standalone",
                        help="the stack's redis-server, or its Redis Cluster of three masters and three replicas")
    sys.exit(run(parser.parse_args()))
