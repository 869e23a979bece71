#!/usr/bin/env python3
"""Metering cost per active tenant (issue 13): 10,000 tenants, 100 of them sending traffic,
4 replicas (release builds) over the development stack.

Measures, per replica, the Redis commands its metering worker sends per second
(`sluice_metering_redis_commands_total`; target <= 200) and the settle-to-ledger lag
(`sluice_metering_lag_seconds` sampled on every replica twice a second; target p99 <= 2 s), and
checks that every admitted request reached the ledger once.

    loadtest/metering-bench.py [--tenants 10000] [--active 100] [--replicas 4] [--rate 200] [--seconds 30]
Needs the development stack (scripts/stack-up.sh); builds the release binaries.
"""
import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid

from fleet import ROOT, free_port, stack_env, wait_ready


def metric(text, name):
    match = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--tenants", type=int, default=10_000)
    parser.add_argument("--active", type=int, default=100)
    parser.add_argument("--replicas", type=int, default=4)
    parser.add_argument("--rate", type=float, default=200, help="requests per second over all active tenants")
    parser.add_argument("--seconds", type=int, default=30)
    args = parser.parse_args()

    env = dict(os.environ, **stack_env())
    subprocess.run(["swift", "build", "-c", "release", "--product", "sluice"], cwd=ROOT, check=True, capture_output=True)
    subprocess.run(["swift", "build", "-c", "release", "--product", "sluice-mock-upstream"], cwd=ROOT, check=True,
                   capture_output=True)
    bin_dir = subprocess.run(["swift", "build", "-c", "release", "--show-bin-path"], cwd=ROOT, capture_output=True,
                             text=True, check=True).stdout.strip()

    base = env["SLUICE_TEST_DATABASE_URL"]
    database = f"sluice_metering_{uuid.uuid4().hex[:8]}"
    subprocess.run(["psql", base, "-qc", f"CREATE DATABASE {database}"], check=True, capture_output=True)
    env["SLUICE_DATABASE_URL"] = base.rsplit("/", 1)[0] + "/" + database
    env["SLUICE_REDIS_URL"] = env["SLUICE_TEST_REDIS_URL"]
    env["SLUICE_ADMIN_JWT_SECRET"] = "metering-bench-secret-0123456789abcdef"
    env["SLUICE_KEY_PEPPER"] = "metering-bench-pepper-0123"
    processes = []
    work = tempfile.mkdtemp()
    try:
        subprocess.run([f"{bin_dir}/sluice", "migrate"], env=env, check=True, capture_output=True)
        subprocess.run(["psql", env["SLUICE_DATABASE_URL"], "-qc",
                        f"INSERT INTO tenants (id, name) SELECT gen_random_uuid(), 'bench-' || n "
                        f"FROM generate_series(1, {args.tenants - args.active}) n"], check=True, capture_output=True)
        keys = []
        for n in range(args.active):
            tenant = subprocess.run([f"{bin_dir}/sluice", "admin", "create-tenant", "--name", f"active-{n}"], env=env,
                                    check=True, capture_output=True, text=True).stdout.strip()
            keys.append(subprocess.run([f"{bin_dir}/sluice", "admin", "create-key", "--tenant", tenant], env=env,
                                       check=True, capture_output=True, text=True).stdout.strip())
        mock = free_port()
        processes.append(subprocess.Popen([f"{bin_dir}/sluice-mock-upstream", "--port", str(mock), "--models", "bench"],
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        replicas = []
        for r in range(args.replicas):
            port, admin = free_port(), free_port()
            config = os.path.join(work, f"r{r}.yaml")
            with open(config, "w") as file:
                file.write(f"listen: 127.0.0.1:{port}\nadmin_listen: 127.0.0.1:{admin}\nmodels:\n"
                           f"  - name: bench\n    backends: [{{url: 'http://127.0.0.1:{mock}'}}]\n")
            processes.append(subprocess.Popen([f"{bin_dir}/sluice", "serve", "--config", config, "--log-level", "notice"],
                                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            replicas.append((port, admin))
        for _, admin in replicas:
            wait_ready(f"http://127.0.0.1:{admin}/readyz")

        def scrape(admin):
            return urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics", timeout=5).read().decode()

        # Let the workers settle into their rhythm (tenant lists loaded), then measure.
        time.sleep(3)
        before = [metric(scrape(a), "sluice_metering_redis_commands_total") for _, a in replicas]
        started = time.time()
        admitted, failures, lags = [0], [0], []
        lock = threading.Lock()
        stop = threading.Event()

        def client(worker, workers):
            body = json.dumps({"model": "bench", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}).encode()
            sent = 0
            while not stop.is_set():
                index = worker + sent * workers
                due = started + index / args.rate
                if due > started + args.seconds:
                    return
                time.sleep(max(0, due - time.time()))
                port = replicas[index % len(replicas)][0]
                request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/chat/completions", data=body, headers={
                    "authorization": f"Bearer {keys[index % len(keys)]}", "content-type": "application/json"})
                try:
                    with urllib.request.urlopen(request, timeout=10) as answer:
                        ok = answer.status == 200
                except (urllib.error.URLError, OSError):
                    ok = False
                with lock:
                    (admitted if ok else failures)[0] += 1
                sent += 1

        def sampler():
            while not stop.is_set():
                for _, admin in replicas:
                    lags.append(metric(scrape(admin), "sluice_metering_lag_seconds"))
                time.sleep(0.5)

        threads = [threading.Thread(target=client, args=(w, 16)) for w in range(16)] + [threading.Thread(target=sampler)]
        for thread in threads:
            thread.start()
        for thread in threads[:-1]:
            thread.join()
        elapsed = time.time() - started
        after = [metric(scrape(a), "sluice_metering_redis_commands_total") for _, a in replicas]
        time.sleep(3)  # the last usage reaches the ledger
        stop.set()
        threads[-1].join()
        rows = int(subprocess.run(["psql", env["SLUICE_DATABASE_URL"], "-Atc", "SELECT count(*) FROM usage_ledger"],
                                  capture_output=True, text=True, check=True).stdout)
        per_second = [(a - b) / elapsed for a, b in zip(after, before)]
        lags.sort()
        p99 = lags[int(len(lags) * 0.99) - 1] if lags else 0
        print(f"{args.tenants:,} tenants, {args.active} active, {args.replicas} replicas, {admitted[0]:,} requests admitted "
              f"in {elapsed:.1f} s ({admitted[0] / elapsed:.0f}/s), {failures[0]} failed")
        print("metering Redis commands per second, per replica: " + ", ".join(f"{v:.0f}" for v in per_second)
              + f" (target <= 200): {'OK' if max(per_second) <= 200 else 'NOT OK'}")
        print(f"settle-to-ledger lag (sluice_metering_lag_seconds, {len(lags)} samples): p50 {lags[len(lags) // 2]:.2f} s, "
              f"p99 {p99:.2f} s, max {lags[-1]:.2f} s (target p99 <= 2 s): {'OK' if p99 <= 2 else 'NOT OK'}")
        print(f"ledger rows {rows:,} for {admitted[0]:,} admitted: {'OK' if rows == admitted[0] else 'NOT OK'}")
        return 0 if max(per_second) <= 200 and p99 <= 2 and rows == admitted[0] else 1
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=30)
        subprocess.run(["psql", base, "-qc", f"DROP DATABASE IF EXISTS {database} WITH (FORCE)"], capture_output=True)


if __name__ == "__main__":
    sys.exit(main())
