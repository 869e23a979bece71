import Foundation
import NIOCore
import SluiceBilling
import SluiceLimiter
import SluiceTenancy
import SluiceUpstream

/// A Realtime session's handshake as the listener hands it over (`GET /v1/realtime?model=…`
/// with a WebSocket upgrade): no HTTP framework types.
public struct RealtimeCall: Sendable {
    public var authorization: String?
    /// `Sec-WebSocket-Protocol` values, as offered. Browsers cannot set headers, so they send
    /// the key as `openai-insecure-api-key.<key>`.
    public var subprotocols: [String]
    public var model: String?
    /// Client headers that pass to the backend (`openai-beta`).
    public var passHeaders: [(String, String)]
    public var requestID: String
    public var clientRequestID: String?
    public var eventLoop: (any EventLoop)?
    public var origin: ClientOrigin?

    public init(authorization: String?, subprotocols: [String], model: String?, passHeaders: [(String, String)],
                requestID: String, clientRequestID: String?, eventLoop: (any EventLoop)?, origin: ClientOrigin?) {
        self.authorization = authorization
        self.subprotocols = subprotocols
        self.model = model
        self.passHeaders = passHeaders
        self.requestID = requestID
        self.clientRequestID = clientRequestID
        self.eventLoop = eventLoop
        self.origin = origin
    }

    static let keyProtocolPrefix = "openai-insecure-api-key."

    /// The key, from the header or else the subprotocol.
    var credentials: String? {
        if let authorization { return authorization }
        return subprotocols.first { $0.hasPrefix(Self.keyProtocolPrefix) }.map { "Bearer " + $0.dropFirst(Self.keyProtocolPrefix.count) }
    }

    /// The subprotocol the server names back: `realtime` when offered (never the key's).
    var chosenSubprotocol: String? { subprotocols.contains("realtime") ? "realtime" : nil }
}

public enum RealtimeOpening: Sendable {
    /// Answer the handshake with this HTTP response instead of upgrading.
    case rejected(InferenceResult)
    /// Upgrade (naming `subprotocol`), then `run` the session on the upgraded connection.
    case accepted(RealtimeSession, subprotocol: String?)
}

/// How long a Realtime session may last and idle, and how large one message may be.
public struct RealtimeSettings: Sendable {
    public var idleTimeout: Duration = .seconds(300)
    public var maxSession: Duration = .seconds(1_800)
    public var maxMessageBytes = 16 * 1024 * 1024

    public init() {}
}

extension InferencePipeline {
    /// Decides a Realtime handshake from its headers: the key, its scope, the model, then the
    /// session's admission (one request, no tokens yet, one concurrency slot held for the whole
    /// session), then the backend's WebSocket. Any refusal is an HTTP answer in OpenAI's shape.
    public func openRealtime(_ call: RealtimeCall) async -> RealtimeOpening {
        var record = AccessRecord(requestID: call.requestID, clientRequestID: call.clientRequestID, endpoint: Self.realtimePath)
        do {
            let key = try await authenticate(call.credentials, &record)
            try checkScope(key, path: Self.realtimePath, origin: call.origin)
            guard let model = call.model, !model.isEmpty else {
                throw OpenAIError.invalidRequest("name the model: GET /v1/realtime?model=<model>", param: "model")
            }
            record.model = model
            let route = try route(model, for: key)
            let price = prices.price(for: model)
            let admission = try await decide(AdmitRequest(
                requestID: call.requestID, tenantID: key.tenantID, keyID: key.keyID, model: model, tokensToReserve: 0,
                priceID: price?.id, tenantLimits: key.tenantLimits, keyLimits: key.keyLimits,
                modelLimits: key.modelLimits[model] ?? .none), &record)
            let settler = Settler(limiter: limiter, admission: admission, price: price, promptEstimate: 0,
                                  clientRequestID: call.clientRequestID, fallback: usageFallback, logger: logger)
            guard let backend = selector.acquire(from: route.backends) else {
                await settler.settle(.nothing, status: 503)
                throw OpenAIError.upstream(503, "upstream_unavailable", "no backend for '\(model)' is available")
            }
            record.backend = backend.url
            let query = "?model=" + (model.addingPercentEncoding(withAllowedCharacters: .urlQueryAllowed.subtracting(["&", "+", "="])) ?? model)
            let socket: RealtimeBackendConnection.Socket
            do {
                socket = try await upstream.realtimeSocket(to: backend, pathAndQuery: Self.realtimePath + query,
                                                           headers: call.passHeaders, on: call.eventLoop,
                                                           maxMessageBytes: settings.realtime.maxMessageBytes)
                backend.recordSuccess()
            } catch {
                backend.releaseSlot()
                backend.recordFailure()
                metrics.backendFailed(backend.url, kind: "realtime_handshake")
                await settler.settle(.nothing, status: 502)
                throw OpenAIError.upstream(502, "upstream_error", "the model server did not open a Realtime session")
            }
            record.status = 101
            let session = RealtimeSession(pipeline: self, key: key, admission: admission, settler: settler, price: price,
                                          backend: backend, socket: socket, record: record)
            return .accepted(session, subprotocol: call.chosenSubprotocol)
        } catch {
            return .rejected(finish(error, &record))
        }
    }

    static let realtimePath = "/v1/realtime"
}
