"""How a streamed answer is written to the client: what the backend sent together goes out
together (one TCP segment: head, events and the end of a short answer), and what the backend
has not sent yet never holds back what it has (the head goes at once while the model thinks).

The backend here is a raw socket server, so what it sends together is known: one `sendall`.
Segments are counted with the client socket's TCP_INFO (`tcpi_data_segs_in`, Linux >= 4.6;
loopback with TCP_NODELAY sends a segment per write).
"""
import json
import os
import socket
import struct
import threading

from conftest import running_gateway

EVENTS = [
    {"choices": [{"index": 0, "delta": {"content": word}, "finish_reason": None}], "usage": None}
    for word in ("one ", "two ", "three")
] + [{"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}}]
SSE = b"".join(b"data: " + json.dumps({"id": "c1", "object": "chat.completion.chunk", "model": "burst-model", **event}).encode()
               + b"\n\n" for event in EVENTS) + b"data: [DONE]\n\n"
HEAD = (b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-length: %d\r\n\r\n" % len(SSE))


class Backend:
    """Answers every request with HEAD + SSE; `hold_body` makes it send the head, then wait for
    `release` before the body."""

    def __init__(self, hold_body=False):
        self.hold_body = hold_body
        self.release = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self):
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self.answer, args=(connection,), daemon=True).start()

    def answer(self, connection):
        with connection:
            buffered = b""
            while True:
                while b"\r\n\r\n" not in buffered:
                    data = connection.recv(65536)
                    if not data:
                        return
                    buffered += data
                head, _, rest = buffered.partition(b"\r\n\r\n")
                length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), 0)
                while len(rest) < length:
                    rest += connection.recv(65536)
                buffered = rest[length:]
                if b"/health" in head.split(b"\r\n")[0]:
                    connection.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                elif self.hold_body:
                    connection.sendall(HEAD)
                    self.release.wait(10)
                    connection.sendall(SSE)
                else:
                    connection.sendall(HEAD + SSE)

    def close(self):
        self.listener.close()


def stream_request(gateway):
    body = json.dumps({"model": "burst-model", "stream": True, "max_tokens": 3,
                       "messages": [{"role": "user", "content": "hi"}]}).encode()
    port = int(gateway["base_url"].split(":")[2].split("/")[0])
    client = socket.create_connection(("127.0.0.1", port), timeout=10)
    client.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: sluice\r\ncontent-type: application/json\r\n"
                   b"authorization: Bearer " + gateway["key"].encode() + b"\r\ncontent-length: %d\r\n\r\n" % len(body) + body)
    return client


def read_until(client, marker, received=b""):
    while marker not in received:
        data = client.recv(65536)
        assert data, f"connection closed before {marker!r}; got {received!r}"
        received += data
    return received


def data_segments_in(client):
    info = client.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
    return struct.unpack_from("I", info, 152)[0]  # tcpi_data_segs_in


def gateway_with(backend):
    extra = f"""  - name: burst-model
    backends:
      - url: http://127.0.0.1:{backend.port}
"""
    return running_gateway(os.environ["SLUICE_TEST_DATABASE_URL"], extra)


def test_a_short_stream_the_backend_sent_at_once_reaches_the_client_in_one_write():
    backend = Backend()
    try:
        with gateway_with(backend) as gateway:
            for _ in range(3):  # the first request also opens the backend connection
                client = stream_request(gateway)
                with client:
                    received = read_until(client, b"\r\n0\r\n\r\n")
                    assert received.startswith(b"HTTP/1.1 200")
                    assert b"data: [DONE]" in received and b"three" in received
                    assert data_segments_in(client) == 1, "head, events and end were written separately"
    finally:
        backend.close()


def test_the_head_does_not_wait_for_a_model_that_has_not_answered_yet():
    backend = Backend(hold_body=True)
    try:
        with gateway_with(backend) as gateway:
            client = stream_request(gateway)
            with client:
                # The backend holds its body until the client has the head: no sleep, a signal.
                head = read_until(client, b"\r\n\r\n")
                assert head.startswith(b"HTTP/1.1 200") and b"text/event-stream" in head
                backend.release.set()
                received = read_until(client, b"\r\n0\r\n\r\n", head)
                assert b"data: [DONE]" in received
    finally:
        backend.close()
