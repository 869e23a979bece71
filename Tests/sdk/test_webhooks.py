"""Webhooks end to end: real `sluice serve` processes, a receiver that checks every signature
with the `standardwebhooks` package and fails the first attempts, a restart of the gateway in
the middle of the retries, and an endpoint that never answers well being disabled."""
import json
import os
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks import Webhook

from conftest import free_port, running_gateway

FAST_RETRIES = """webhooks:
  allow_private_networks: true
  first_retry_ms: 300
  max_retry_ms: 600
  poll_interval_ms: 50
  give_up_after_seconds: {give_up}
"""


class Receiver:
    """An HTTP endpoint: verifies each delivery's signature, answers 500 to the first
    `fail_first` attempts of every message (or to all, with fail_first=None)."""

    def __init__(self, fail_first):
        self.fail_first = fail_first
        self.hold = False    # while set, every attempt fails too
        self.secret = None
        self.attempts = {}   # webhook-id -> attempts seen
        self.accepted = {}   # webhook-id -> verified payload, once
        self.bad_signatures = 0
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["content-length"]))
                headers = {k.lower(): v for k, v in self.headers.items()}
                try:
                    payload = Webhook(receiver.secret).verify(body, headers)
                except Exception:
                    with receiver.lock:
                        receiver.bad_signatures += 1
                    self.send_response(400)
                    self.end_headers()
                    return
                message = headers["webhook-id"]
                with receiver.lock:
                    receiver.attempts[message] = receiver.attempts.get(message, 0) + 1
                    fail = receiver.fail_first is None or receiver.hold or receiver.attempts[message] <= receiver.fail_first
                    if not fail:
                        assert message not in receiver.accepted, "a delivered message was sent again"
                        receiver.accepted[message] = payload
                self.send_response(500 if fail else 204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.port = free_port()
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}/hooks?source=sluice"

    def close(self):
        self.server.shutdown()


def admin(gateway, method, path, body=None):
    request = urllib.request.Request(gateway["admin_url"] + path, method=method,
                                     data=json.dumps(body).encode() if body is not None else None,
                                     headers={"authorization": "Bearer " + gateway["admin_token"],
                                              "content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read() or b"null")


def wait_for(condition, seconds, what):
    deadline = time.time() + seconds
    while not condition():
        if time.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_signed_deliveries_survive_failures_and_a_restart():
    database = os.environ["SLUICE_TEST_DATABASE_URL"]
    receiver = Receiver(fail_first=3)
    receiver.hold = True  # nothing is delivered before the restart, however slow the machine
    try:
        with running_gateway(database, FAST_RETRIES.format(give_up=120)) as gateway:
            tenant = admin(gateway, "POST", "/admin/v1/tenants", {"name": "webhooks"})["id"]
            endpoint = admin(gateway, "POST", f"/admin/v1/tenants/{tenant}/webhooks",
                             {"url": receiver.url, "events": ["key.created", "key.revoked"]})
            assert endpoint["secret"].startswith("whsec_")
            receiver.secret = endpoint["secret"]
            listed = admin(gateway, "GET", f"/admin/v1/tenants/{tenant}/webhooks")["data"]
            assert [e["id"] for e in listed] == [endpoint["id"]] and "secret" not in listed[0]
            key = admin(gateway, "POST", f"/admin/v1/tenants/{tenant}/keys", {"name": "hooked"})
            # The first attempt fails; the gateway stops in the middle of the retries.
            wait_for(lambda: sum(receiver.attempts.values()) >= 1, 10, "a first attempt")
        assert not receiver.accepted, "delivered before the restart: the test proves nothing"
        with running_gateway(database, FAST_RETRIES.format(give_up=120)) as gateway:
            receiver.hold = False
            wait_for(lambda: len(receiver.accepted) == 1, 30, "the delivery after the restart")
            admin(gateway, "POST", f"/admin/v1/keys/{key['id']}/revoke")
            wait_for(lambda: len(receiver.accepted) == 2, 30, "the revocation's delivery")
            log = admin(gateway, "GET", f"/admin/v1/webhooks/{endpoint['id']}/deliveries")["data"]
        assert receiver.bad_signatures == 0
        assert sorted(p["type"] for p in receiver.accepted.values()) == ["key.created", "key.revoked"]
        created = next(p for p in receiver.accepted.values() if p["type"] == "key.created")
        assert created["data"]["key_id"] == key["id"] and created["data"]["tenant_id"] == tenant.lower()
        assert all(count >= 4 for count in receiver.attempts.values()), receiver.attempts
        assert [d["status"] for d in log] == ["delivered", "delivered"]
        for delivery in log:  # every attempt failed but the last, which was taken once
            statuses = [a["status"] for a in delivery["attempts"]]
            assert len(statuses) >= 4 and statuses[-1] == 204 and set(statuses[:-1]) == {500}, statuses
    finally:
        receiver.close()


def test_an_endpoint_that_keeps_failing_is_disabled_and_an_event_says_so():
    database = os.environ["SLUICE_TEST_DATABASE_URL"]
    broken, watcher = Receiver(fail_first=None), Receiver(fail_first=0)
    try:
        with running_gateway(database, FAST_RETRIES.format(give_up=2)) as gateway:
            tenant = admin(gateway, "POST", "/admin/v1/tenants", {"name": "webhooks-broken"})["id"]
            failing = admin(gateway, "POST", f"/admin/v1/tenants/{tenant}/webhooks", {"url": broken.url})
            broken.secret = failing["secret"]
            watching = admin(gateway, "POST", f"/admin/v1/tenants/{tenant}/webhooks",
                             {"url": watcher.url, "events": ["webhook.endpoint_disabled"]})
            watcher.secret = watching["secret"]
            admin(gateway, "POST", f"/admin/v1/tenants/{tenant}/keys", {"name": "k"})
            wait_for(lambda: len(watcher.accepted) == 1, 30, "the endpoint_disabled event")
            event = next(iter(watcher.accepted.values()))
            assert event["type"] == "webhook.endpoint_disabled" and event["data"]["endpoint_id"] == failing["id"]
            endpoints = {e["id"]: e for e in admin(gateway, "GET", f"/admin/v1/tenants/{tenant}/webhooks")["data"]}
            assert endpoints[failing["id"]]["enabled"] is False and endpoints[failing["id"]]["disabled_reason"]
            assert endpoints[watching["id"]]["enabled"] is True
            log = admin(gateway, "GET", f"/admin/v1/webhooks/{failing['id']}/deliveries")["data"]
            assert log[0]["status"] == "failed" and len(log[0]["attempts"]) >= 2
            # Re-enabled, it is an endpoint like any other again.
            assert admin(gateway, "PATCH", f"/admin/v1/webhooks/{failing['id']}", {"enabled": True})["enabled"] is True
    finally:
        broken.close()
        watcher.close()
