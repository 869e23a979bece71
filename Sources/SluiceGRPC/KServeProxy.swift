import GRPCCore
import GRPCProtobuf
import Logging
import NIOCore
import NIOPosix
import SluiceDataPlane
import SluiceUpstream
import SwiftProtobuf

/// `inference.GRPCInferenceService` in front of the models' gRPC backends. Every call needs a
/// key (`authorization: Bearer <key>` metadata) whose scope allows the service; model calls
/// need the model allowed to the key; `ModelInfer` is admitted against the request,
/// concurrency and budget limits and billed, one ledger row per call. The client's metadata
/// is not passed on: the backend sees the gateway's credentials and the request id.
public struct KServeProxy: Inference_GRPCInferenceService.ServiceProtocol {
    let pipeline: InferencePipeline
    let backends: KServeBackendClients
    /// The most one backend call may take (the upstream's total timeout).
    let timeout: Duration
    let group: MultiThreadedEventLoopGroup

    public init(pipeline: InferencePipeline, backends: KServeBackendClients, timeout: Duration,
                group: MultiThreadedEventLoopGroup = .singleton) {
        self.pipeline = pipeline
        self.backends = backends
        self.timeout = timeout
        self.group = group
    }

    /// The gateway is live when it answers; a valid key is still required.
    public func serverLive(request: ServerRequest<Inference_ServerLiveRequest>,
                           context: ServerContext) async throws -> ServerResponse<Inference_ServerLiveResponse> {
        _ = try await open(.serverLive, model: "", request.metadata, context)
        return ServerResponse(message: .with { $0.live = true })
    }

    /// Ready when a gRPC backend of a model the key may use says it is ready.
    public func serverReady(request: ServerRequest<Inference_ServerReadyRequest>,
                            context: ServerContext) async throws -> ServerResponse<Inference_ServerReadyResponse> {
        guard case .server(let candidates) = try await open(.serverReady, model: "", request.metadata, context) else {
            return ServerResponse(message: .init())
        }
        let healthyFirst = candidates.filter { $0.isHealthy() } + candidates.filter { !$0.isHealthy() }
        for backend in healthyFirst.prefix(3) {
            guard let client = backends.client(for: backend) else { continue }
            var options = CallOptions.defaults
            options.timeout = .seconds(2)
            options.waitForReady = false
            let ready = try? await client.unary(
                request: ClientRequest(message: request.message, metadata: Self.backendMetadata(backend, requestID: nil)),
                descriptor: Inference_GRPCInferenceService.Method.ServerReady.descriptor,
                serializer: ProtobufSerializer<Inference_ServerReadyRequest>(),
                deserializer: ProtobufDeserializer<Inference_ServerReadyResponse>(),
                options: options) { try $0.message.ready }
            if ready == true { return ServerResponse(message: .with { $0.ready = true }) }
        }
        return ServerResponse(message: .with { $0.ready = false })
    }

    public func modelReady(request: ServerRequest<Inference_ModelReadyRequest>,
                           context: ServerContext) async throws -> ServerResponse<Inference_ModelReadyResponse> {
        try await forward(.modelReady, model: request.message.name, request, context,
                          Inference_GRPCInferenceService.Method.ModelReady.descriptor)
    }

    public func modelMetadata(request: ServerRequest<Inference_ModelMetadataRequest>,
                              context: ServerContext) async throws -> ServerResponse<Inference_ModelMetadataResponse> {
        try await forward(.modelMetadata, model: request.message.name, request, context,
                          Inference_GRPCInferenceService.Method.ModelMetadata.descriptor)
    }

    public func modelInfer(request: ServerRequest<Inference_ModelInferRequest>,
                           context: ServerContext) async throws -> ServerResponse<Inference_ModelInferResponse> {
        try await forward(.modelInfer, model: request.message.modelName, request, context,
                          Inference_GRPCInferenceService.Method.ModelInfer.descriptor)
    }

    /// Decides the call (`KServeRefusal`s become the client's status).
    private func open(_ method: KServeMethod, model: String, _ metadata: Metadata,
                      _ context: ServerContext) async throws -> KServeOpening {
        let call = KServeCall(method: method, authorization: metadata[stringValues: "authorization"].first(where: { _ in true }),
                              model: model, requestID: RequestID.make(),
                              clientRequestID: metadata[stringValues: "x-request-id"].first(where: { _ in true })
                                  .flatMap(RequestID.clientGiven),
                              origin: ClientOrigin(peer: Self.peer(context.remotePeer)))
        do {
            return try await pipeline.openKServe(call, on: group.next())
        } catch {
            throw KServeStatus.error(error)
        }
    }

    /// One model call, admitted, to one backend; its outcome finishes the ticket.
    private func forward<Input: SwiftProtobuf.Message & Sendable, Output: SwiftProtobuf.Message & Sendable>(
        _ method: KServeMethod, model: String, _ request: ServerRequest<Input>, _ context: ServerContext,
        _ descriptor: MethodDescriptor
    ) async throws -> ServerResponse<Output> {
        guard case .model(let ticket) = try await open(method, model: model, request.metadata, context) else {
            throw RPCError(code: .internalError, message: "internal error")
        }
        guard let client = backends.client(for: ticket.backend) else {
            await ticket.finish(KServeOutcome(status: 503, errorCode: "upstream_unavailable", backendFailed: true))
            throw RPCError(code: .unavailable, message: "the model server could not be reached")
        }
        var options = CallOptions.defaults
        // The client's deadline, when it is sooner: the backend stops when the client stops waiting.
        options.timeout = min(timeout, request.metadata[stringValues: "grpc-timeout"].first { _ in true }
            .flatMap(Self.grpcTimeout) ?? timeout)
        // A dead backend answers UNAVAILABLE now, not after the timeout.
        options.waitForReady = false
        options.maxResponseMessageBytes = backends.maxResponseBytes
        let message = request.message
        let metadata = Self.backendMetadata(ticket.backend, requestID: ticket.requestID)
        // The server does not cancel a handler whose client went away or whose deadline passed:
        // it calls the RPC's cancellation handler, which cancels the backend call (and so frees
        // the admission's slot at once).
        let call = Task {
            try await client.unary(request: ClientRequest(message: message, metadata: metadata), descriptor: descriptor,
                                   serializer: ProtobufSerializer<Input>(), deserializer: ProtobufDeserializer<Output>(),
                                   options: options) { try $0.message }
        }
        do {
            let answer = try await withTaskCancellationHandler {
                try await withRPCCancellationHandler { try await call.value } onCancelRPC: { call.cancel() }
            } onCancel: {
                call.cancel()
            }
            let fields = ticket.rateLimitFields
            await ticket.finish(.answered)
            var metadata = Metadata()
            for (name, value) in fields { metadata.addString(value, forKey: name) }
            metadata.addString(ticket.requestID, forKey: "x-request-id")
            return ServerResponse(message: answer, metadata: metadata)
        } catch let error as RPCError {
            let (clientError, outcome) = KServeStatus.backendFailure(error)
            await ticket.finish(outcome)
            throw clientError
        } catch {
            // Cancelled: the client went away.
            await ticket.finish(KServeOutcome(status: 499, errorCode: "client_closed"))
            throw RPCError(code: .cancelled, message: "cancelled")
        }
    }

    /// `grpc-timeout` (an integer of at most 8 digits and a unit: H, M, S, m, u, n).
    static func grpcTimeout(_ text: String) -> Duration? {
        guard let unit = text.last, text.count >= 2, text.count <= 9, let value = Int64(text.dropLast()), value >= 0 else {
            return nil
        }
        switch unit {
        case "H": return .seconds(value * 3_600)
        case "M": return .seconds(value * 60)
        case "S": return .seconds(value)
        case "m": return .milliseconds(value)
        case "u": return .microseconds(value)
        case "n": return .nanoseconds(value)
        default: return nil
        }
    }

    /// What the backend is sent: its own credentials and extra headers, and the request id.
    static func backendMetadata(_ backend: Backend, requestID: String?) -> Metadata {
        var metadata = Metadata()
        for (name, value) in backend.credentialHeaders { metadata.addString(value, forKey: name) }
        if let requestID { metadata.addString(requestID, forKey: "x-request-id") }
        return metadata
    }

    /// gRPC's peer text (`ipv4:127.0.0.1:5000`, `ipv6:[::1]:5000`) as an address.
    static func peer(_ text: String) -> SocketAddress? {
        let host: Substring, port: Substring
        if text.hasPrefix("ipv4:") {
            let rest = text.dropFirst(5)
            guard let colon = rest.lastIndex(of: ":") else { return nil }
            (host, port) = (rest[..<colon], rest[rest.index(after: colon)...])
        } else if text.hasPrefix("ipv6:[") {
            let rest = text.dropFirst(6)
            guard let close = rest.firstIndex(of: "]"), rest[close...].hasPrefix("]:") else { return nil }
            (host, port) = (rest[..<close], rest[rest.index(close, offsetBy: 2)...])
        } else {
            return nil
        }
        guard let number = Int(port), (0...65_535).contains(number) else { return nil }
        return try? SocketAddress(ipAddress: String(host), port: number)
    }
}
