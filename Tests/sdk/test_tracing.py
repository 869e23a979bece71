"""Traces as an OTLP/HTTP collector receives them: a small receiver decodes the protobuf
(opentelemetry-proto) and the test checks the span tree, the GenAI attributes, the continued
`traceparent`, the one the backend gets, and a failed request's error status.
"""
import json
import os
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from conftest import free_port, running_gateway

trace_service = pytest.importorskip("opentelemetry.proto.collector.trace.v1.trace_service_pb2")
SERVER, CLIENT = 2, 3  # Span.SpanKind
ERROR = 2  # Status.StatusCode


def reply(handler, status, content_type, body):
    handler.send_response(status)
    handler.send_header("content-type", content_type)
    handler.send_header("content-length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


class Receiver:
    """OTLP/HTTP traces endpoint (POST /v1/traces, application/x-protobuf)."""

    def __init__(self):
        self.spans = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["content-length"]))
                request = trace_service.ExportTraceServiceRequest.FromString(body)
                for resource in request.resource_spans:
                    for scope in resource.scope_spans:
                        receiver.spans.extend(scope.spans)
                reply(self, 200 if self.path == "/v1/traces" else 404, "application/x-protobuf",
                      trace_service.ExportTraceServiceResponse().SerializeToString())

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def trace(self, trace_id, count, timeout=20):
        deadline = time.time() + timeout
        while time.time() < deadline:
            mine = [s for s in self.spans if s.trace_id.hex() == trace_id]
            if len(mine) >= count:
                return mine
            time.sleep(0.1)
        return [s for s in self.spans if s.trace_id.hex() == trace_id]


class Backend:
    """An OpenAI-shaped model server that remembers the traceparent of each request."""

    def __init__(self):
        self.traceparents = []
        backend = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):  # health checks
                reply(self, 200, "text/plain", b"ok")

            def do_POST(self):
                self.rfile.read(int(self.headers["content-length"]))
                backend.traceparents.append(self.headers.get("traceparent"))
                body = json.dumps({"id": "x", "object": "chat.completion", "model": "traced-model", "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}}).encode()
                reply(self, 200, "application/json", body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def attributes(span):
    values = {}
    for attribute in span.attributes:
        value = attribute.value
        values[attribute.key] = getattr(value, value.WhichOneof("value"))
    return values


def print_tree(spans):
    """The trace as received (shown with `pytest -s`)."""
    children = {}
    for span in spans:
        children.setdefault(span.parent_span_id, []).append(span)
    ids = {span.span_id for span in spans}

    def show(span, depth):
        took = (span.end_time_unix_nano - span.start_time_unix_nano) / 1e6
        print(f"{'  ' * depth}{span.name} [{('internal', 'internal', 'server', 'client')[min(span.kind, 3)]}] {took:.2f} ms "
              f"{ {k: v for k, v in attributes(span).items() if not k.startswith('sluice.request')} }")
        for child in sorted(children.get(span.span_id, []), key=lambda s: s.start_time_unix_nano):
            show(child, depth + 1)
    for root in (s for s in spans if s.parent_span_id not in ids):
        print(f"trace {root.trace_id.hex()} (parent from the client's traceparent: {root.parent_span_id.hex()})")
        show(root, 1)


def chat(gateway, model, headers=None):
    request = urllib.request.Request(
        gateway["base_url"] + "/chat/completions",
        data=json.dumps({"model": model, "messages": [{"role": "user", "content": "hi"}]}).encode(),
        headers={"authorization": f"Bearer {gateway['key']}", "content-type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status
    except urllib.error.HTTPError as error:
        return error.code


@pytest.fixture(scope="module")
def traced():
    receiver, backend = Receiver(), Backend()
    extra = f"""  - name: traced-model
    backends:
      - url: http://127.0.0.1:{backend.server.server_port}
  - name: dead-model
    backends:
      - url: http://127.0.0.1:{free_port()}
tracing:
  otlp_endpoint: http://127.0.0.1:{receiver.server.server_port}
  sampling_ratio: 1.0
"""
    with running_gateway(os.environ["SLUICE_TEST_DATABASE_URL"], extra_config=extra) as gateway:
        yield gateway, receiver, backend
    receiver.server.shutdown()
    backend.server.shutdown()


def test_a_request_is_one_server_span_with_its_steps_as_children(traced):
    gateway, receiver, backend = traced
    trace_id, parent_id = os.urandom(16).hex(), os.urandom(8).hex()
    assert chat(gateway, "traced-model", {"traceparent": f"00-{trace_id}-{parent_id}-01"}) == 200

    spans = receiver.trace(trace_id, 5)
    by_name = {span.name: span for span in spans}
    assert {"chat traced-model", "key lookup", "admit", "upstream", "settle"} <= set(by_name), sorted(by_name)
    server = by_name["chat traced-model"]
    assert server.kind == SERVER and server.parent_span_id.hex() == parent_id, "the client's trace is continued"
    for step in ("key lookup", "admit", "upstream", "settle"):
        assert by_name[step].parent_span_id == server.span_id, step

    server_attributes = attributes(server)
    assert server_attributes["gen_ai.operation.name"] == "chat"
    assert server_attributes["gen_ai.request.model"] == "traced-model"
    assert server_attributes["gen_ai.response.model"] == "traced-model"
    assert server_attributes["gen_ai.usage.input_tokens"] == 5 and server_attributes["gen_ai.usage.output_tokens"] == 3
    assert server_attributes["sluice.tenant.id"] and server_attributes["sluice.key.id"]
    assert server.status.code != ERROR
    everything = json.dumps([attributes(span) for span in spans], default=str)
    assert gateway["key"] not in everything and gateway["key"].split("_")[-1] not in everything, "a key in a span"

    assert server_attributes["server.address"] == "127.0.0.1"
    assert server_attributes["server.port"] == backend.server.server_port
    print_tree(spans)

    upstream = by_name["upstream"]
    assert upstream.kind == CLIENT
    assert attributes(upstream)["server.address"] == "127.0.0.1"
    assert attributes(upstream)["server.port"] == backend.server.server_port
    assert backend.traceparents[-1] == f"00-{trace_id}-{upstream.span_id.hex()}-01", "the backend continues the upstream span"


def test_a_failed_request_has_an_error_status(traced):
    gateway, receiver, _ = traced
    trace_id = os.urandom(16).hex()
    status = chat(gateway, "dead-model", {"traceparent": f"00-{trace_id}-{os.urandom(8).hex()}-01"})
    assert status in (502, 503)
    server = next(s for s in receiver.trace(trace_id, 3) if s.kind == SERVER)
    assert server.status.code == ERROR
    assert attributes(server)["http.response.status_code"] == status
