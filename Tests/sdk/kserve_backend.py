"""A mock KServe v2 gRPC model server (Triton's protocol, from tritonclient's own service
definition) for one model, `INPUT0` INT32 in, `OUTPUT0` = 2 × `INPUT0` out. It records the
metadata each model call arrived with, and can hold `ModelInfer` calls until released."""
import threading
from concurrent import futures

import grpc
import numpy as np
from tritonclient.grpc import service_pb2, service_pb2_grpc


class MockKServeBackend(service_pb2_grpc.GRPCInferenceServiceServicer):
    def __init__(self, model, port):
        self.model = model
        self.calls = []  # (method, metadata dict) per model call
        self.hold = threading.Event()
        self.hold.set()  # set: calls go through; cleared: ModelInfer waits (at most 10 s)
        self.entered = threading.Semaphore(0)
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(self, self.server)
        self.server.add_insecure_port(f"127.0.0.1:{port}")

    def __enter__(self):
        self.server.start()
        return self

    def __exit__(self, *exc):
        self.hold.set()
        self.server.stop(grace=None)

    def hold_calls(self):
        """From now on ModelInfer calls wait for `hold.set()`; `entered` counts those arriving."""
        self.entered = threading.Semaphore(0)
        self.hold.clear()

    def _record(self, method, context):
        self.calls.append((method, dict(context.invocation_metadata())))

    def _known(self, name, context):
        if name != self.model:
            context.abort(grpc.StatusCode.NOT_FOUND, f"Request for unknown model: '{name}' is not found")

    def ServerLive(self, request, context):
        return service_pb2.ServerLiveResponse(live=True)

    def ServerReady(self, request, context):
        self._record("ServerReady", context)
        return service_pb2.ServerReadyResponse(ready=True)

    def ModelReady(self, request, context):
        self._record("ModelReady", context)
        return service_pb2.ModelReadyResponse(ready=request.name == self.model)

    def ModelMetadata(self, request, context):
        self._record("ModelMetadata", context)
        self._known(request.name, context)
        tensor = service_pb2.ModelMetadataResponse.TensorMetadata
        return service_pb2.ModelMetadataResponse(
            name=self.model, versions=["1"], platform="mock",
            inputs=[tensor(name="INPUT0", datatype="INT32", shape=[-1])],
            outputs=[tensor(name="OUTPUT0", datatype="INT32", shape=[-1])])

    def ModelInfer(self, request, context):
        self._record("ModelInfer", context)
        self.entered.release()
        self.hold.wait(10)
        self._known(request.model_name, context)
        if len(request.inputs) != 1 or request.inputs[0].datatype != "INT32" or len(request.raw_input_contents) != 1:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "expected one INT32 input, INPUT0, as raw contents")
        doubled = np.frombuffer(request.raw_input_contents[0], dtype=np.int32) * 2
        output = service_pb2.ModelInferResponse.InferOutputTensor(name="OUTPUT0", datatype="INT32", shape=[len(doubled)])
        return service_pb2.ModelInferResponse(model_name=self.model, model_version="1", id=request.id,
                                              outputs=[output], raw_output_contents=[doubled.astype(np.int32).tobytes()])
