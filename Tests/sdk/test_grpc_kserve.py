"""KServe v2 inference over gRPC through the gateway, with Triton's own client
(`tritonclient[grpc]`) against a mock gRPC model server: success end to end and in the
ledger, the backend's credentials (never the client's key), UNAUTHENTICATED, a request and a
concurrency limit as RESOURCE_EXHAUSTED with retry information, a scope and an unknown model
refused, a backend's own refusal passed through, and a dead backend as UNAVAILABLE."""
import json
import os
import select
import socket
import threading
import time
import urllib.request

import grpc
import numpy as np
import pytest
import tritonclient.grpc as triton
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from conftest import free_port, key_usage, running_gateway
from kserve_backend import MockKServeBackend

MODEL = "kserve-model"
BACKEND_KEY = "backend-secret-for-the-mock"


@pytest.fixture(scope="module")
def kserve():
    backend_port, grpc_port, dead_port = free_port(), free_port(), free_port()
    os.environ["SLUICE_TEST_KSERVE_BACKEND_KEY"] = BACKEND_KEY
    extra = f"""  - name: {MODEL}
    backends:
      - url: grpc://127.0.0.1:{backend_port}
        api_key_env: SLUICE_TEST_KSERVE_BACKEND_KEY
  - name: kserve-dead
    backends:
      - url: grpc://127.0.0.1:{dead_port}
grpc_listen: 127.0.0.1:{grpc_port}
"""
    with MockKServeBackend(MODEL, backend_port) as backend, \
            running_gateway(os.environ["SLUICE_TEST_DATABASE_URL"], extra) as gateway:
        gateway["grpc_url"] = f"127.0.0.1:{grpc_port}"
        gateway["backend"] = backend
        yield gateway


def new_key(gateway, *flags):
    return gateway["cli"]("create-key", "--tenant", gateway["tenant"], "--name", "kserve", *flags)


def headers(key):
    return {"authorization": f"Bearer {key}"}


def infer(gateway, key, values=(1, 2, 3, 4), model=MODEL, datatype="INT32"):
    client = triton.InferenceServerClient(url=gateway["grpc_url"])
    tensor = triton.InferInput("INPUT0", [len(values)], datatype)
    tensor.set_data_from_numpy(np.array(values, dtype=np.int32 if datatype == "INT32" else np.float32))
    return client.infer(model, [tensor], headers=headers(key), client_timeout=20)


def refusal(call):
    with pytest.raises(InferenceServerException) as refused:
        call()
    return refused.value.status(), refused.value.message()


def test_triton_client_calls_pass_and_inference_is_billed(kserve):
    key = new_key(kserve)
    client = triton.InferenceServerClient(url=kserve["grpc_url"])
    assert client.is_server_live(headers=headers(key))
    assert client.is_server_ready(headers=headers(key))
    assert client.is_model_ready(MODEL, headers=headers(key))
    metadata = client.get_model_metadata(MODEL, headers=headers(key), as_json=True)
    assert metadata["inputs"][0]["name"] == "INPUT0" and metadata["platform"] == "mock"

    for values in ([1, 2, 3], [5, 6, 7, 8, 9]):
        assert infer(kserve, key, values).as_numpy("OUTPUT0").tolist() == [2 * v for v in values]
    # One ledger row per inference (tensors are not tokens), none for the metadata calls.
    row = key_usage(kserve, key, rows_wanted=2)
    assert row["requests"] == 2 and row["prompt_tokens"] == 0 and row["completion_tokens"] == 0

    # The backend saw the gateway's credentials and a request id, never the client's key.
    model_calls = [seen for method, seen in kserve["backend"].calls if method == "ModelInfer"]
    assert model_calls and all(seen.get("authorization") == f"Bearer {BACKEND_KEY}" for seen in model_calls)
    assert all(key not in json.dumps(seen) for _, seen in kserve["backend"].calls)
    assert all(seen.get("x-request-id") for seen in model_calls)


@pytest.mark.parametrize("key", [None, "slk_AAAAAAAAAAAA_" + "x" * 40, "Bearer"])
def test_a_missing_or_forged_key_is_unauthenticated(kserve, key):
    client = triton.InferenceServerClient(url=kserve["grpc_url"])
    given = {} if key is None else headers(key)
    status, _ = refusal(lambda: client.is_server_live(headers=given))
    assert status == "StatusCode.UNAUTHENTICATED"
    status, message = refusal(lambda: client.infer(MODEL, [], headers=given))
    assert status == "StatusCode.UNAUTHENTICATED" and "API key" in message


def retry_delay(trailers):
    """`google.rpc.RetryInfo.retry_delay` (seconds) from `grpc-status-details-bin`, read with a
    minimal protobuf walker (Status.details → Any → RetryInfo → Duration)."""
    def fields(data):
        i = 0
        while i < len(data):
            tag, i = varint(data, i)
            if tag & 7 == 0:
                value, i = varint(data, i)
            else:
                length, i = varint(data, i)
                value, i = data[i:i + length], i + length
            yield tag >> 3, value

    def varint(data, i):
        shift = result = 0
        while True:
            byte = data[i]
            result |= (byte & 0x7F) << shift
            i, shift = i + 1, shift + 7
            if byte < 0x80:
                return result, i

    status = dict(trailers)["grpc-status-details-bin"]
    for number, detail in fields(status):
        if number == 3:
            any_ = dict(fields(detail))
            if any_[1] == b"type.googleapis.com/google.rpc.RetryInfo":
                duration = dict(fields(dict(fields(any_[2]))[1]))
                return duration.get(1, 0) + duration.get(2, 0) / 1e9
    return None


def test_a_request_limit_is_resource_exhausted_with_retry_information(kserve):
    key = new_key(kserve, "--rpm", "1")
    infer(kserve, key)
    status, message = refusal(lambda: infer(kserve, key))
    assert status == "StatusCode.RESOURCE_EXHAUSTED" and "rate limit" in message

    # The status details carry RetryInfo; the trailers say the same for plain clients.
    stub = service_pb2_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(kserve["grpc_url"]))
    with pytest.raises(grpc.RpcError) as refused:
        stub.ModelInfer(service_pb2.ModelInferRequest(model_name=MODEL), metadata=[("authorization", f"Bearer {key}")],
                        timeout=10)
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    trailers = refused.value.trailing_metadata()
    delay = retry_delay(trailers)
    assert delay is not None and 0 < delay <= 60
    assert 1 <= int(dict(trailers)["retry-after"]) <= 60
    assert dict(trailers)["x-ratelimit-limit-requests"] == "1"


def test_a_concurrency_limit_holds_across_a_running_call(kserve):
    key = new_key(kserve, "--concurrency", "1")
    backend = kserve["backend"]
    backend.hold_calls()
    results = []
    first = threading.Thread(target=lambda: results.append(infer(kserve, key).as_numpy("OUTPUT0").tolist()))
    first.start()
    try:
        assert backend.entered.acquire(timeout=10), "the first call never reached the backend"
        status, message = refusal(lambda: infer(kserve, key))
        assert status == "StatusCode.RESOURCE_EXHAUSTED" and "concurrent" in message
    finally:
        backend.hold.set()
        first.join(20)
    assert results == [[2, 4, 6, 8]]
    # The slot is free once the first call ended.
    assert infer(kserve, key).as_numpy("OUTPUT0").tolist() == [2, 4, 6, 8]


def test_scopes_models_and_the_backends_refusals(kserve):
    key = new_key(kserve)
    client = triton.InferenceServerClient(url=kserve["grpc_url"])
    status, _ = refusal(lambda: client.get_model_metadata("no-such-model", headers=headers(key)))
    assert status == "StatusCode.NOT_FOUND"
    # A hostile model name is refused before any lookup, and never echoed back whole.
    status, message = refusal(lambda: client.is_model_ready("m" * 100_000, headers=headers(key)))
    assert status == "StatusCode.INVALID_ARGUMENT" and len(message) < 200
    # An OpenAI-only model is not served over gRPC.
    status, message = refusal(lambda: infer(kserve, key, model="sdk-model"))
    assert status == "StatusCode.NOT_FOUND" and "gRPC" in message
    # The backend's own refusal of a bad tensor passes through as it said it.
    status, message = refusal(lambda: infer(kserve, key, datatype="FP32"))
    assert status == "StatusCode.INVALID_ARGUMENT" and "INT32" in message

    # A key scoped to embeddings may not use the gRPC service at all.
    key_id = key.split("_")[1]
    request = urllib.request.Request(f"{kserve['admin_url']}/admin/v1/keys/{key_id}", method="PATCH",
                                     data=json.dumps({"scope": {"endpoints": ["/v1/embeddings"]}}).encode(),
                                     headers={"authorization": "Bearer " + kserve["admin_token"],
                                              "content-type": "application/json"})
    urllib.request.urlopen(request, timeout=10).close()
    deadline = time.time() + 10
    while True:
        try:
            infer(kserve, key)
        except InferenceServerException as refused:
            assert refused.status() == "StatusCode.PERMISSION_DENIED"
            break
        assert time.time() < deadline, "the scope change never reached the gateway"
        time.sleep(0.2)


def test_a_dead_backend_is_unavailable_at_once(kserve):
    key = new_key(kserve)
    started = time.time()
    status, _ = refusal(lambda: infer(kserve, key, model="kserve-dead"))
    assert status == "StatusCode.UNAVAILABLE"
    assert time.time() - started < 10
    # Admitted, then failed: the ledger has the call, with nothing to bill.
    assert key_usage(kserve, key, rows_wanted=1)["requests"] == 1


def test_a_client_that_gives_up_frees_its_slot(kserve):
    key = new_key(kserve, "--concurrency", "1")
    backend = kserve["backend"]
    backend.hold_calls()
    client = triton.InferenceServerClient(url=kserve["grpc_url"])
    tensor = triton.InferInput("INPUT0", [1], "INT32")
    tensor.set_data_from_numpy(np.array([1], dtype=np.int32))
    try:
        # The backend holds every call for 10 s; the client's 1 s deadline ends the call.
        status, _ = refusal(lambda: client.infer(MODEL, [tensor], headers=headers(key), client_timeout=1))
        assert status == "StatusCode.DEADLINE_EXCEEDED"
        assert backend.entered.acquire(timeout=5), "the first call never reached the backend"
        # The next call is admitted (it reaches the backend) long before the backend would have
        # answered the first: the first one's slot was freed when its client gave up.
        deadline = time.time() + 3
        while True:
            status, _ = refusal(lambda: client.infer(MODEL, [tensor], headers=headers(key), client_timeout=1))
            if status == "StatusCode.DEADLINE_EXCEEDED":
                break
            assert status == "StatusCode.RESOURCE_EXHAUSTED" and time.time() < deadline, status
        assert backend.entered.acquire(timeout=5), "the second call never reached the backend"
    finally:
        backend.hold.set()


def test_unserved_methods_and_oversized_messages_are_refused(kserve):
    key = new_key(kserve)
    client = triton.InferenceServerClient(url=kserve["grpc_url"])
    status, _ = refusal(lambda: client.get_server_metadata(headers=headers(key)))
    assert status == "StatusCode.UNIMPLEMENTED"
    # Over max_request_bytes (4 MiB by default): refused by the listener, never forwarded.
    calls = len(kserve["backend"].calls)
    status, _ = refusal(lambda: infer(kserve, key, values=np.zeros(1_200_000, dtype=np.int32)))
    # The listener answers RESOURCE_EXHAUSTED and resets the stream while the client is still
    # sending; grpcio reports whichever it notices first.
    assert status in ("StatusCode.RESOURCE_EXHAUSTED", "StatusCode.CANCELLED")
    assert len(kserve["backend"].calls) == calls
    assert infer(kserve, key).as_numpy("OUTPUT0").tolist() == [2, 4, 6, 8]


def test_the_connection_cap_covers_the_grpc_listener():
    """`listener.max_connections` counts both listeners' connections: past it a gRPC connection
    is closed as soon as it is accepted, and a freed slot takes the next."""
    backend_port, grpc_port = free_port(), free_port()
    extra = f"""  - name: {MODEL}
    backends:
      - url: grpc://127.0.0.1:{backend_port}
grpc_listen: 127.0.0.1:{grpc_port}
listener:
  max_connections: 2
"""
    with MockKServeBackend(MODEL, backend_port), \
            running_gateway(os.environ["SLUICE_TEST_DATABASE_URL"], extra) as gateway:
        gateway["grpc_url"] = f"127.0.0.1:{grpc_port}"
        key = new_key(gateway)
        # Three connections for a cap of two: one of them (whichever the cap counts last: each
        # is counted on its own event loop) is closed at once, before it is served.
        connections = [socket.create_connection(("127.0.0.1", grpc_port), timeout=5) for _ in range(3)]
        try:
            open_ = list(connections)
            deadline = time.time() + 5
            while len(open_) == 3:
                readable, _, _ = select.select(open_, [], [], max(0, deadline - time.time()))
                assert readable, "no connection was closed: the cap let three in"
                for connection in readable:
                    if not connection.recv(4096):  # end of stream (the server's preface may come first)
                        open_.remove(connection)
            # The two still open hold the cap: a gRPC client cannot connect.
            status, _ = refusal(lambda: infer(gateway, key))
            assert status == "StatusCode.UNAVAILABLE"
        finally:
            for connection in connections:
                connection.close()
        deadline = time.time() + 5
        while True:
            try:
                assert infer(gateway, key).as_numpy("OUTPUT0").tolist() == [2, 4, 6, 8]
                break
            except InferenceServerException as refused:
                assert time.time() < deadline, refused
                time.sleep(0.1)
