"""The `gateway` fixture: the mock model server and `sluice serve` (built binaries from
SLUICE_BIN_DIR) on free loopback ports over the development stack (SLUICE_TEST_REDIS_URL /
SLUICE_TEST_DATABASE_URL), with a tenant, keys and a platform admin token made by the CLI.
"""
import contextlib
import json
import os
import socket
import subprocess
import tempfile
import time
import urllib.request
import uuid

import pytest

BIN = os.environ.get("SLUICE_BIN_DIR", ".build/debug")
MARKUP = "<img src=x onerror=alert(1)>"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_gateway(database_url, extra_config=""):
    """A mock model server and one `sluice serve` on free ports over `database_url`;
    `extra_config` is appended to its YAML (more models, a tracing section)."""
    env = dict(os.environ)
    env["SLUICE_ADMIN_JWT_SECRET"] = "sdk-test-admin-secret-0123456789abcdef"
    env["SLUICE_KEY_PEPPER"] = "sdk-test-pepper-0123456789"
    env["SLUICE_DATABASE_URL"] = database_url
    env["SLUICE_REDIS_URL"] = os.environ["SLUICE_TEST_REDIS_URL"]
    mock_port, port, admin_port = free_port(), free_port(), free_port()
    config = tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False)
    config.write(f"""listen: 127.0.0.1:{port}
admin_listen: 127.0.0.1:{admin_port}
models:
  - name: sdk-model
    backends:
      - url: http://127.0.0.1:{mock_port}
{extra_config}""")
    config.close()
    log = tempfile.NamedTemporaryFile("w", suffix=".log", delete=False)
    subprocess.run([f"{BIN}/sluice", "migrate"], env=env, check=True, capture_output=True)
    processes = [
        subprocess.Popen([f"{BIN}/sluice-mock-upstream", "--port", str(mock_port), "--models", "sdk-model", "--tokens", "6"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
        subprocess.Popen([f"{BIN}/sluice", "serve", "--config", config.name], env=env,
                         stdout=log, stderr=subprocess.DEVNULL),
    ]
    try:
        deadline = time.time() + 30
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/readyz", timeout=1)
                break
            except Exception:
                if time.time() > deadline:
                    raise RuntimeError("sluice did not become ready")
                time.sleep(0.1)

        def cli(*args):
            return subprocess.run([f"{BIN}/sluice", "admin", *args], env=env, check=True,
                                  capture_output=True, text=True).stdout.strip()

        tenant = cli("create-tenant", "--name", "sdk")
        yield {
            "tenant": tenant,
            "cli": cli,
            "base_url": f"http://127.0.0.1:{port}/v1",
            "admin_url": f"http://127.0.0.1:{admin_port}",
            "key": cli("create-key", "--tenant", tenant, "--name", "main"),
            "limited_key": cli("create-key", "--tenant", tenant, "--name", "limited", "--rpm", "1"),
            "admin_token": cli("token", "--role", "platform_admin", "--ttl", "1h"),
            # A subject that is markup: a UI must show it (header, audit log) as text.
            "markup_admin_token": cli("token", "--role", "platform_admin", "--ttl", "1h", "--sub", MARKUP),
            "log_path": log.name,
        }
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=30)
        os.unlink(config.name)
        log.close()
        os.unlink(log.name)


def key_usage(gateway, key, rows_wanted):
    """The ledger's totals for `key` (admin usage report by key), once it has `rows_wanted` rows."""
    key_id = key.split("_")[1]
    deadline = time.time() + 30
    while True:
        request = urllib.request.Request(
            f"{gateway['admin_url']}/admin/v1/tenants/{gateway['tenant']}/usage?group_by=key",
            headers={"authorization": "Bearer " + gateway["admin_token"]})
        with urllib.request.urlopen(request, timeout=10) as response:
            rows = [row for row in json.load(response)["data"] if row["group"] == key_id]
        if rows and rows[0]["requests"] >= rows_wanted:
            return rows[0]
        assert time.time() < deadline, f"the ledger has {rows} for the key, wanted {rows_wanted} rows"
        time.sleep(0.3)


@pytest.fixture(scope="session")
def gateway():
    with running_gateway(os.environ["SLUICE_TEST_DATABASE_URL"]) as running:
        yield running


@pytest.fixture
def scratch_gateway():
    """A gateway on a database of its own, dropped afterwards: for tests that create many
    tenants (every tenant costs each replica's metering worker some Redis calls)."""
    base = os.environ["SLUICE_TEST_DATABASE_URL"]
    name = f"sluice_scratch_{uuid.uuid4().hex[:8]}"
    subprocess.run(["psql", base, "-qc", f"CREATE DATABASE {name}"], check=True, capture_output=True)
    try:
        with running_gateway(base.rsplit("/", 1)[0] + "/" + name) as running:
            yield running
    finally:
        subprocess.run(["psql", base, "-qc", f"DROP DATABASE {name} WITH (FORCE)"], check=True, capture_output=True)
