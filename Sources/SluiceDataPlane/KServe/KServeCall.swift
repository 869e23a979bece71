import Foundation
import NIOCore
import SluiceBilling
import SluiceLimiter
import SluiceTenancy
import SluiceUpstream
import Synchronization

/// The KServe v2 (Open Inference Protocol) gRPC methods the gateway serves.
public enum KServeMethod: String, Sendable, CaseIterable {
    case serverLive = "ServerLive"
    case serverReady = "ServerReady"
    case modelReady = "ModelReady"
    case modelMetadata = "ModelMetadata"
    case modelInfer = "ModelInfer"

    public static let service = "inference.GRPCInferenceService"
    /// The scope endpoint that lets a key use the gRPC service (all of its methods).
    public static let scopeEndpoint = "/" + service

    /// The access log's and the metrics' endpoint: the gRPC path.
    public var path: String { "/\(Self.service)/\(rawValue)" }

    /// Inference is admitted against the key's limits and billed, one ledger row per call;
    /// readiness and metadata need a valid key only.
    public var isMetered: Bool { self == .modelInfer }
}

/// One gRPC call as the gRPC listener hands it over: no gRPC types.
public struct KServeCall: Sendable {
    public var method: KServeMethod
    /// The `authorization` metadata: `Bearer <key>`.
    public var authorization: String?
    /// The model the call names (empty for the server-wide methods).
    public var model: String
    public var requestID: String
    public var clientRequestID: String?
    public var origin: ClientOrigin?

    public init(method: KServeMethod, authorization: String?, model: String, requestID: String, clientRequestID: String?,
                origin: ClientOrigin?) {
        self.method = method
        self.authorization = authorization
        self.model = model
        self.requestID = requestID
        self.clientRequestID = clientRequestID
        self.origin = origin
    }
}

/// A call the gateway refused, with what a client needs to retry (rate limits).
public struct KServeRefusal: Error, Sendable {
    public let error: OpenAIError
    /// When a limit refused it: how long until a retry can succeed.
    public let retryAfter: Duration?
    /// The `x-ratelimit-*` and `retry-after` fields, for the trailing metadata.
    public let rateLimitFields: [(String, String)]
}

/// How a proxied call ended, as the access log, the metrics and the ledger's `status` see it:
/// the HTTP status of the same outcome (200, 400 for the client's mistake, 502/503/504 for the
/// backend's).
public struct KServeOutcome: Sendable {
    public var status: Int
    public var errorCode: String?
    /// Whether it counts against the backend's health (it failed, not the client).
    public var backendFailed: Bool

    public init(status: Int, errorCode: String? = nil, backendFailed: Bool = false) {
        self.status = status
        self.errorCode = errorCode
        self.backendFailed = backendFailed
    }

    public static let answered = KServeOutcome(status: 200)
}

/// An admitted call on its way to `backend`. `finish` exactly once: it frees the backend's
/// slot, settles the admission (one ledger row for `ModelInfer`) and logs the call.
public final class KServeTicket: Sendable {
    public let backend: Backend
    public let requestID: String
    private let pipeline: InferencePipeline
    private let settler: Settler?
    private let renewal: RepeatedTask?
    private let record: Mutex<AccessRecord?>

    init(pipeline: InferencePipeline, backend: Backend, settler: Settler?, record: AccessRecord, eventLoop: any EventLoop) {
        self.pipeline = pipeline
        self.backend = backend
        self.settler = settler
        self.requestID = record.requestID
        self.record = Mutex(record)
        // An inference may outlast the lease of its concurrency slot.
        self.renewal = settler?.keepLeaseAlive(on: eventLoop)
    }

    /// The rate-limit fields of the admission, for the response's initial metadata.
    public var rateLimitFields: [(String, String)] { record.withLock { $0?.rateLimitHeaders ?? [] } }

    public func finish(_ outcome: KServeOutcome) async {
        guard var record = record.withLock({ $0.take() }) else { return }
        renewal?.cancel()
        backend.releaseSlot()
        if outcome.backendFailed {
            backend.recordFailure()
            pipeline.metrics.backendFailed(backend.url, kind: "grpc_\(outcome.status)")
        } else {
            backend.recordSuccess()
        }
        record.status = outcome.status
        if let code = outcome.errorCode { record.errorCode = code }
        // Tensors are not tokens: the ledger counts the call (its status says how it ended).
        await settler?.settle(.nothing, status: outcome.status)
        pipeline.emit(record)
    }
}

/// What may go ahead of a call the gateway accepted.
public enum KServeOpening: Sendable {
    /// A server-wide call (`ServerLive`, `ServerReady`): the gRPC backends of the models the
    /// key may use, for the caller to answer from.
    case server([Backend])
    /// A model's call, admitted, with its backend.
    case model(KServeTicket)
}

extension InferencePipeline {
    /// Decides a gRPC call before it reaches a backend: the key, its scope, then for the
    /// model-wide methods the model (known, allowed, with a gRPC backend), for `ModelInfer`
    /// the admission (request, concurrency and budget limits), and a backend slot.
    public func openKServe(_ call: KServeCall, on eventLoop: any EventLoop) async throws(KServeRefusal) -> KServeOpening {
        var record = AccessRecord(requestID: call.requestID, clientRequestID: call.clientRequestID, endpoint: call.method.path)
        do {
            let key = try await authenticate(call.authorization, &record)
            try checkScope(key, path: KServeMethod.scopeEndpoint, origin: call.origin)
            guard call.method != .serverLive, call.method != .serverReady else {
                return .server(catalog.routes.values.filter { key.allows(model: $0.name) }.flatMap(\.grpcBackends))
            }
            guard !call.model.isEmpty, call.model.utf8.count <= 256 else {
                throw OpenAIError.invalidRequest("name the model (at most 256 bytes)", param: "model_name")
            }
            record.model = call.model
            let route = try route(call.model, for: key, overGRPC: true)
            var settler: Settler?
            if call.method.isMetered {
                let price = prices.price(for: call.model)
                let admission = try await decide(AdmitRequest(
                    requestID: call.requestID, tenantID: key.tenantID, keyID: key.keyID, model: call.model, tokensToReserve: 0,
                    priceID: price?.id, tenantLimits: key.tenantLimits, keyLimits: key.keyLimits,
                    modelLimits: key.modelLimits[call.model] ?? .none), &record)
                record.rateLimitHeaders = RateLimitHeaderFields.fields(admission.headers)
                settler = Settler(limiter: limiter, admission: admission, price: price, promptEstimate: 0,
                                  clientRequestID: call.clientRequestID, fallback: usageFallback, logger: logger)
            }
            guard let backend = selector.acquire(from: route.grpcBackends) else {
                await settler?.settle(.nothing, status: 503)
                throw OpenAIError.upstream(503, "upstream_unavailable", "no backend for '\(call.model)' is available")
            }
            record.backend = backend.url
            return .model(KServeTicket(pipeline: self, backend: backend, settler: settler, record: record, eventLoop: eventLoop))
        } catch {
            // No HTTP body to render: the listener answers with a gRPC status.
            let failure = recordFailure(error, &record)
            let retryAfter = record.rateLimitHeaders.first { $0.0 == "retry-after" }.flatMap { Int($0.1) }
            throw KServeRefusal(error: failure, retryAfter: retryAfter.map { .seconds($0) },
                                rateLimitFields: record.rateLimitHeaders)
        }
    }
}
