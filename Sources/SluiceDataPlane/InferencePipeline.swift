import Foundation
import Logging
import NIOCore
import NIOHTTP1
import SluiceBilling
import SluiceLimiter
import SluiceNet
import SluiceTenancy
import SluiceUpstream
import Tracing

public struct DataPlaneSettings: Sendable {
    public var maxRequestBodyBytes = 4 * 1024 * 1024
    public var maxResponseBodyBytes = 64 * 1024 * 1024
    /// How a client's address is told, for keys limited to source networks.
    public var clientAddress = ClientAddressPolicy()
    /// Realtime sessions over WebSocket.
    public var realtime = RealtimeSettings()

    public init() {}
}

/// One inference call as the listener hands it over: no HTTP framework types. The body is
/// not part of it: the pipeline reads it (`InferenceBodyReader`) only once the headers passed.
public struct InferenceCall: Sendable {
    public var endpoint: InferenceEndpoint
    public var authorization: String?
    /// The server's id for this request: unique, the one limits and the ledger use.
    public var requestID: String
    /// The client's `x-request-id`, sanitised: for correlation only (echoed, logged, sent
    /// upstream, kept on the ledger row), never for a decision or a bill.
    public var clientRequestID: String?
    public var traceparent: String?
    /// The inbound connection's event loop: upstream connections are pooled per loop.
    public var eventLoop: (any EventLoop)?
    public var origin: ClientOrigin?

    public init(endpoint: InferenceEndpoint, authorization: String?, requestID: String,
                clientRequestID: String? = nil, traceparent: String? = nil, eventLoop: (any EventLoop)? = nil,
                origin: ClientOrigin? = nil) {
        self.origin = origin
        self.endpoint = endpoint
        self.authorization = authorization
        self.requestID = requestID
        self.clientRequestID = clientRequestID
        self.traceparent = traceparent
        self.eventLoop = eventLoop
    }
}

/// Reads the whole request body (bounded); throws `OpenAIError` (413, or 400 when it broke off).
public typealias InferenceBodyReader = @Sendable () async throws(OpenAIError) -> ByteBuffer

public enum InferenceResult: Sendable {
    case complete(status: Int, headers: [(String, String)], body: ByteBuffer)
    case stream(headers: [(String, String)], body: InferenceStream)
}

/// The request path: key → body → model → admit → backend → response → settle.
/// Independent of the HTTP listener (which is a thin adapter around `handle`).
public final class InferencePipeline: Sendable {
    let catalog: ModelCatalog
    /// What each model costs (versions from the database; the configuration's until it is read).
    let prices: PriceBook
    let resolver: KeyResolver
    let limiter: Limiter
    let upstream: UpstreamClient
    let usageFallback: any UsageFallback
    let settings: DataPlaneSettings
    let logger: Logger
    let accessLog: any AccessLog
    public let metrics: DataPlaneMetrics
    /// Set when tracing is on (a sampling decision is the tracer's).
    let tracer: (any Tracer)?
    /// Set when the model list follows what the backends serve.
    let modelDirectory: BackendModelDirectory?
    let selector = BackendSelector()

    /// `usageFallback` takes the usage Redis could not (see `Settler`).
    public init(catalog: ModelCatalog, prices: PriceBook? = nil, resolver: KeyResolver, limiter: Limiter,
                upstream: UpstreamClient, usageFallback: any UsageFallback, settings: DataPlaneSettings = .init(),
                metrics: DataPlaneMetrics = .init(), logger: Logger = Logger(label: "sluice.access"),
                accessLog: (any AccessLog)? = nil, tracer: (any Tracer)? = nil,
                modelDirectory: BackendModelDirectory? = nil) {
        self.tracer = tracer
        self.modelDirectory = modelDirectory
        self.catalog = catalog
        self.prices = prices ?? PriceBook(catalog.configuredPrices)
        self.resolver = resolver
        self.limiter = limiter
        self.upstream = upstream
        self.usageFallback = usageFallback
        self.settings = settings
        self.metrics = metrics
        self.logger = logger
        self.accessLog = accessLog ?? LoggerAccessLog(logger: logger)
    }

    /// How Realtime sessions are bounded (the listener sizes its WebSocket frames by it).
    public var realtimeSettings: RealtimeSettings { settings.realtime }

    /// The header the listener passes on in `ClientOrigin.forwardedFor` (nil: none).
    public var forwardingHeader: String? { settings.clientAddress.header }

    /// Decides from the headers first (the key), then reads the body: a caller that will be
    /// refused costs no body buffering.
    public func handle(_ call: InferenceCall, readBody: InferenceBodyReader) async -> InferenceResult {
        var record = AccessRecord(requestID: call.requestID, clientRequestID: call.clientRequestID,
                                  endpoint: call.endpoint.rawValue)
        record.trace = tracer.map { RequestTrace(tracer: $0, traceparent: call.traceparent, endpoint: call.endpoint) }
        do {
            return try await proceed(call, readBody: readBody, &record)
        } catch {
            return finish(error, &record)
        }
    }

    /// An answer for a request refused before the pipeline (e.g. a body over the limit).
    public func reject(_ error: OpenAIError, requestID: String, clientRequestID: String?, endpoint: String) -> InferenceResult {
        var record = AccessRecord(requestID: requestID, clientRequestID: clientRequestID, endpoint: endpoint)
        return finish(error, &record)
    }

    /// `GET /v1/models`: the configured models this key may use; with a directory that has
    /// read the backends, only those a backend serves, with the backend's details.
    public func listModels(authorization: String?, requestID: String, clientRequestID: String?,
                           origin: ClientOrigin? = nil) async -> InferenceResult {
        var record = AccessRecord(requestID: requestID, clientRequestID: clientRequestID, endpoint: "/v1/models")
        do {
            let key = try await authenticate(authorization, &record)
            try checkScope(key, path: "/v1/models", origin: origin)
            let directory = modelDirectory.flatMap { $0.hasRead ? $0 : nil }
            let models = catalog.routes.sorted { $0.key < $1.key }.filter { key.allows(model: $0.key) && !$0.value.backends.isEmpty }.compactMap { name, route -> [String: Any]? in
                guard let directory else { return ["id": name, "object": "model", "created": 0, "owned_by": "sluice"] }
                guard let served = directory.served(route) else { return nil }
                var entry: [String: Any] = ["id": name, "object": "model", "created": served.created ?? 0,
                                            "owned_by": served.ownedBy ?? "sluice"]
                if let length = served.maxModelLength { entry["max_model_len"] = length }
                return entry
            }
            let data = try JSONSerialization.data(withJSONObject: ["object": "list", "data": models], options: [.sortedKeys])
            record.status = 200
            emit(record)
            return .complete(status: 200, headers: responseHeaders(record, contentType: "application/json"),
                             body: ByteBuffer(bytes: data))
        } catch {
            return finish(error, &record)
        }
    }

    private func proceed(_ call: InferenceCall, readBody: InferenceBodyReader,
                         _ record: inout AccessRecord) async throws -> InferenceResult {
        let trace = record.trace
        let key = try await traced(trace, "key lookup") { try await authenticate(call.authorization, &record) }
        try checkScope(key, path: call.endpoint.rawValue, origin: call.origin)
        let body = try InferenceRequestBody.parse(try await readBody(), endpoint: call.endpoint,
                                                  outputCap: key.scope?.maxOutputTokens)
        record.model = body.model
        let route = try route(body.model, for: key)

        let output = call.endpoint == .embeddings ? 0 : min(body.maxOutputTokens ?? route.defaultOutputTokens, route.maxOutputTokens)
        // One price for the whole request: its reservation and its bill.
        let price = prices.price(for: body.model)
        let admission = try await traced(trace, "admit") {
            try await admit(call, key: key, body: body, output: output, price: price, &record)
        }
        record.rateLimitHeaders = RateLimitHeaderFields.fields(admission.headers)
        let settler = Settler(limiter: limiter, admission: admission, price: price, promptEstimate: body.promptEstimate,
                              clientRequestID: call.clientRequestID, fallback: usageFallback, logger: logger, trace: trace)
        do {
            return try await forward(call, body: body, route: route, settler: settler, &record)
        } catch {
            // Nothing reached the client: nothing to bill.
            await settler.settle(.nothing, status: (error as? OpenAIError)?.status ?? 500)
            throw error
        }
    }

    func authenticate(_ authorization: String?, _ record: inout AccessRecord) async throws -> ResolvedKey {
        guard let authorization, authorization.hasPrefix("Bearer ") || authorization.hasPrefix("bearer ") else {
            throw OpenAIError.invalidKey("missing API key: send 'Authorization: Bearer <key>'")
        }
        switch await resolver.authenticate(authorization.dropFirst(7)) {
        case .valid(let key):
            record.tenantID = key.tenantID
            record.keyID = key.keyID
            return key
        case .rejected(.unavailable):
            throw OpenAIError.upstream(503, "service_unavailable", "keys cannot be checked right now; try again shortly")
        case .rejected(.expired):
            throw OpenAIError.invalidKey("this API key has expired")
        case .rejected(.revoked):
            throw OpenAIError.invalidKey("this API key has been revoked")
        case .rejected:
            throw OpenAIError.invalidKey("invalid API key")
        }
    }

    /// The model's route, when the catalogue has it, the key may use it and it has backends
    /// of the protocol asked (OpenAI HTTP, or KServe gRPC).
    func route(_ model: String, for key: ResolvedKey, overGRPC: Bool = false) throws(OpenAIError) -> ModelRoute {
        guard let route = catalog.routes[model] else { throw .modelNotFound(model) }
        guard key.allows(model: model) else { throw .modelNotAllowed(model) }
        guard overGRPC ? !route.grpcBackends.isEmpty : !route.backends.isEmpty else {
            throw OpenAIError(status: 404, type: "invalid_request_error", code: "model_not_found",
                              message: "the model '\(model)' is not served over \(overGRPC ? "gRPC" : "this API")", param: "model")
        }
        return route
    }

    /// What the headers tell of the key's scope (its endpoints and source networks), checked
    /// before the body is read; its output cap is the body's (`InferenceRequestBody.parse`).
    func checkScope(_ key: ResolvedKey, path: String, origin: ClientOrigin?) throws(OpenAIError) {
        guard let scope = key.scope else { return }
        guard scope.allows(endpoint: path) else { throw .endpointNotAllowed(path) }
        if let networks = scope.networks {
            guard let client = origin.flatMap(settings.clientAddress.clientAddress),
                  networks.contains(where: { IPNetwork($0)?.contains(client) == true }) else {
                throw .sourceNotAllowed
            }
        }
    }

    private func admit(_ call: InferenceCall, key: ResolvedKey, body: InferenceRequestBody, output: Int, price: ModelPrice?,
                       _ record: inout AccessRecord) async throws -> Admission {
        let request = AdmitRequest(
            requestID: call.requestID, tenantID: key.tenantID, keyID: key.keyID, model: body.model,
            tokensToReserve: body.promptEstimate + output, promptEstimate: body.promptEstimate,
            reservedCostMicroUSD: price?.cost(prompt: body.promptEstimate, completion: output) ?? 0, priceID: price?.id,
            tenantLimits: key.tenantLimits, keyLimits: key.keyLimits, modelLimits: key.modelLimits[body.model] ?? .none)
        return try await decide(request, &record)
    }

    /// The limiter's answer to `request`: its admission, or the refusal as an `OpenAIError`
    /// (with the rate-limit headers on `record`).
    func decide(_ request: AdmitRequest, _ record: inout AccessRecord) async throws -> Admission {
        switch await limiter.admit(request) {
        case .admitted(let admission):
            metrics.limiterDecision("admitted")
            return admission
        case .denied(let denial):
            metrics.limiterDecision(denial.limit)
            record.rateLimitHeaders = RateLimitHeaderFields.fields(denial.headers)
                + [("retry-after", RateLimitHeaderFields.retryAfter(denial.retryAfter))]
            let wait = RateLimitHeaderFields.duration(denial.retryAfter)
            switch denial.reason {
            case .budgetExhausted:
                throw OpenAIError.quotaExhausted(Self.budgetMessage(denial, requestCost: request.reservedCostMicroUSD, wait: wait))
            case .rateLimited:
                throw OpenAIError.rateLimited("rate limit reached: \(denial.limit); retry in \(wait)")
            }
        case .neverFits(let limit, let tokens, let burst):
            metrics.limiterDecision("never_fits")
            throw OpenAIError.invalidRequest(
                "this request reserves \(tokens) tokens (prompt estimate + max output tokens) but \(limit) allows at most \(burst) at once; lower max_tokens or shorten the prompt",
                param: "max_tokens")
        case .unavailable:
            metrics.limiterDecision("unavailable")
            throw OpenAIError.limiterUnavailable
        }
    }

    /// Which budget, what it has spent and its cap, in USD: "key_daily_budget_usd: 4.990000 USD
    /// of 5.000000 USD spent or reserved; this request may cost up to 0.020000 USD; retry in 1s".
    static func budgetMessage(_ denial: Denial, requestCost: Int64, wait: String) -> String {
        guard let (spent, limit) = denial.budget else { return "budget exhausted: \(denial.limit); retry in \(wait)" }
        let what = spent >= limit ? "the budget is spent: " : ""
        return "budget exhausted: \(what)\(denial.limit): \(MicroUSD.usd(spent)) USD of \(MicroUSD.usd(limit)) USD spent or reserved; "
            + "this request may cost up to \(MicroUSD.usd(requestCost)) USD; retry in \(wait)"
    }

    private func forward(_ call: InferenceCall, body: InferenceRequestBody, route: ModelRoute, settler: Settler,
                         _ record: inout AccessRecord) async throws -> InferenceResult {
        var headers = HTTPHeaders([("content-type", "application/json"),
                                   ("x-request-id", call.clientRequestID ?? call.requestID), ("user-agent", "sluice")])
        // Tracing on: the backend's spans are children of the upstream span. Off: the client's
        // traceparent passes through.
        let upstreamSpan = record.trace?.startSpan("upstream", kind: .client)
        defer { upstreamSpan?.end() }
        if let traceparent = upstreamSpan.flatMap({ record.trace?.traceparent(of: $0) }) ?? call.traceparent {
            headers.add(name: "traceparent", value: traceparent)
        }
        let request = UpstreamRequest(path: call.endpoint.rawValue, headers: headers, body: body.upstreamBody)
        var tried: [Backend] = []
        var lastError = OpenAIError.upstream(503, "upstream_unavailable", "no backend for '\(route.name)' is available")

        // At most two backends, and only while nothing has been sent to the client.
        while tried.count < 2, let backend = selector.acquire(from: route.backends, excluding: tried) {
            tried.append(backend)
            record.backend = backend.url
            if let upstreamSpan { record.trace?.backend(host: backend.host, port: backend.port, upstream: upstreamSpan) }
            let response: UpstreamResponse
            let sent = ContinuousClock.now
            do {
                response = try await upstream.send(request, to: backend, on: call.eventLoop)
                metrics.backendAnswered(backend.url, after: .now - sent)
            } catch {
                backend.releaseSlot()
                backend.recordFailure()
                metrics.backendFailed(backend.url, kind: error.metricKind)
                switch error {
                case .connectFailed, .connectionClosed:
                    lastError = .upstream(502, "upstream_error", "the model server could not be reached")
                    continue
                case .timeout:
                    throw OpenAIError.upstream(504, "upstream_timeout", "the model server did not answer in time")
                case .protocolError(let reason):
                    throw OpenAIError.upstream(502, "upstream_error", "the model server's answer was malformed: \(reason)")
                }
            }
            let status = Int(response.head.status.code)
            if (status == 502 || status == 503) && tried.count < 2 && route.backends.count > tried.count {
                response.abandon()
                backend.releaseSlot()
                backend.recordFailure()
                metrics.backendFailed(backend.url, kind: "status_5xx")
                lastError = .upstream(502, "upstream_error", "the model server answered \(status)")
                continue
            }
            if status >= 500 {
                backend.recordFailure()
                metrics.backendFailed(backend.url, kind: "status_5xx")
            } else {
                backend.recordSuccess()
            }

            if body.stream && status == 200 {
                record.status = 200
                let stream = InferenceStream(response: response, backend: backend, settler: settler,
                                             filter: ServerSentEventsFilter(dropUsageChunk: !body.clientWantsUsage),
                                             record: record, pipeline: self)
                return .stream(headers: responseHeaders(record, contentType: "text/event-stream")
                    + [("cache-control", "no-cache")], body: stream)
            }
            let payload: ByteBuffer
            do {
                payload = try await response.collect(limit: settings.maxResponseBodyBytes)
            } catch {
                backend.releaseSlot()
                throw OpenAIError.upstream(502, "upstream_error", "the model server's answer broke off")
            }
            backend.releaseSlot()
            if status >= 500 {
                throw OpenAIError.upstream(502, "upstream_error", "the model server answered \(status)")
            }
            if status == 401 || status == 403 {
                // The backend refused the gateway's credentials: the client's key is fine, and
                // passing the 401 on would tell it otherwise.
                metrics.backendFailed(backend.url, kind: "status_auth")
                logger.error("the model server refused the gateway's credentials; check its api_key_env or api_key_file",
                             metadata: ["backend": "\(backend.url)", "status": "\(status)"])
                throw OpenAIError.upstream(502, "upstream_error", "the model server refused the gateway's credentials")
            }
            if status >= 400 {
                // Nothing was generated (nothing is billed); the refusal reaches the client in OpenAI's shape.
                throw UpstreamErrorBody.openAIError(status: status, body: payload)
            }
            // A refusal by the backend generated nothing; an answer is billed even without usage.
            let usage = status < 300
                ? BilledUsage(reported: ResponseUsage.parse(payload), promptEstimate: body.promptEstimate,
                              delivered: BilledUsage.deliveredEstimate(bytes: payload.readableBytes),
                              expectsCompletion: call.endpoint != .embeddings)
                : .nothing
            record.status = status
            record.bill(usage)
            // After the answer, not before it: one Redis round trip on the response path. Until
            // the settle lands the request is pending in Redis, billed at its reservation if this
            // replica dies first. Except when it holds concurrency slots: a client that waits for
            // each answer before sending the next must never find its own slot still taken.
            if settler.admission.holdsConcurrencySlots {
                await settler.settle(usage, status: status)
            } else {
                settler.settleInBackground(usage, status: status)
            }
            emit(record)
            let contentType = response.head.headers.first(name: "content-type") ?? "application/json"
            return .complete(status: status, headers: responseHeaders(record, contentType: contentType), body: payload)
        }
        throw lastError
    }

    /// `x-request-id` echoes the client's id when it sent one, so it can correlate.
    func responseHeaders(_ record: AccessRecord, contentType: String) -> [(String, String)] {
        [("content-type", contentType), ("x-request-id", record.clientRequestID ?? record.requestID)] + record.rateLimitHeaders
    }

    func finish(_ error: any Error, _ record: inout AccessRecord) -> InferenceResult {
        let failure = recordFailure(error, &record)
        return .complete(status: failure.status, headers: responseHeaders(record, contentType: "application/json"),
                         body: failure.body)
    }

    /// The refusal `error` stands for (an unexpected error is a logged 500), recorded on `record`
    /// and emitted (access log, metrics, trace): for answers in any protocol.
    func recordFailure(_ error: any Error, _ record: inout AccessRecord) -> OpenAIError {
        let failure = error as? OpenAIError
            ?? OpenAIError(status: 500, type: "server_error", code: "internal_error", message: "internal error")
        if failure.status == 500 { logger.error("unexpected error", metadata: ["request_id": "\(record.requestID)", "error": "\(error)"]) }
        record.status = failure.status
        record.errorCode = failure.code
        emit(record)
        return failure
    }

    func emit(_ record: AccessRecord) {
        // Labels come from configuration only: a model the catalogue does not know is `other`.
        let model = record.model.isEmpty || catalog.routes[record.model] != nil ? record.model : "other"
        metrics.request(record, modelLabel: model)
        accessLog.record(record)
        record.trace?.finish(record, modelLabel: model)
    }
}

/// Settles one admission exactly once, with the cost of the real usage. Usage that Redis does
/// not take (a degraded admission under the `open`/`local` policy, or a settle that failed
/// after its retries) goes to the fallback, which writes it straight to the ledger.
final class Settler: Sendable {
    let limiter: Limiter
    let admission: Admission
    /// The price the admission reserved at: the request is billed at the same version.
    let price: ModelPrice?
    let promptEstimate: Int
    let clientRequestID: String?
    let fallback: any UsageFallback
    let logger: Logger
    let trace: RequestTrace?

    init(limiter: Limiter, admission: Admission, price: ModelPrice?, promptEstimate: Int, clientRequestID: String?,
         fallback: any UsageFallback, logger: Logger, trace: RequestTrace? = nil) {
        self.trace = trace
        self.limiter = limiter
        self.admission = admission
        self.price = price
        self.promptEstimate = promptEstimate
        self.clientRequestID = clientRequestID
        self.fallback = fallback
        self.logger = logger
    }

    /// Renews the admission's concurrency leases and billing deadline on `eventLoop` while the
    /// answer runs (streams and Realtime sessions may outlast both): a timer, so it costs no task
    /// until it is due. Nil for a degraded admission, which holds nothing in Redis. Cancel it
    /// when the answer ends.
    func keepLeaseAlive(on eventLoop: any EventLoop) -> RepeatedTask? {
        guard !admission.degraded else { return nil }
        let limiter = limiter, admission = admission
        let interval = TimeAmount(limiter.renewalInterval)
        return eventLoop.scheduleRepeatedTask(initialDelay: interval, delay: interval) { _ in
            Task { await limiter.renew(admission) }
        }
    }

    func settle(_ billed: BilledUsage, status: Int) async {
        await withCheckedContinuation { continuation in
            settleInBackground(billed, status: status) { continuation.resume() }
        }
    }

    /// Settles without waiting (after the answer): no task of its own; `done` runs once the
    /// usage is in Redis or, failing that, handed to the ledger fallback.
    func settleInBackground(_ billed: BilledUsage, status: Int, done: @escaping @Sendable () -> Void = {}) {
        let cost = price?.cost(prompt: billed.prompt, cachedPrompt: billed.cachedPrompt, completion: billed.completion) ?? 0
        var attributes = ["status": String(status), UsageEntry.Field.usageSource: billed.source.rawValue]
        if billed.cachedPrompt > 0 { attributes[UsageEntry.Field.cachedPromptTokens] = String(billed.cachedPrompt) }
        if billed.clamped { attributes[UsageEntry.Field.usageClamped] = "1" }
        if let clientRequestID { attributes[UsageEntry.Field.clientRequestID] = clientRequestID }
        let usage = Usage(promptTokens: billed.prompt, completionTokens: billed.completion, costMicroUSD: cost,
                          attributes: attributes)
        let span = trace?.startSpan("settle")
        limiter.settle(admission, usage: usage) { [self] result in
            defer { span?.end() }
            if case .failure = result { span?.setStatus(SpanStatus(code: .error)) }
            switch result {
            case .success(.skipped), .success(.alreadySettled), .success(.unconfirmed):
                // Not booked by this settle, or booked where a failover could lose it: the ledger
                // gets it directly too (it keeps one row per request id).
                recordDirectly(billed, cost: cost)
            case .success:
                break
            case .failure(let error):
                // The reservation expires on its own; the ledger still gets the usage.
                logger.error("settle failed; usage goes to the ledger directly",
                             metadata: ["request_id": "\(admission.requestID)", "error": "\(error)"])
                recordDirectly(billed, cost: cost)
            }
            done()
        }
    }

    /// Books `billed` straight to the ledger, under `requestID` (a Realtime response the limits
    /// refused after it was generated) or the admission's own.
    func record(_ billed: BilledUsage, requestID: String) {
        let cost = price?.cost(prompt: billed.prompt, cachedPrompt: billed.cachedPrompt, completion: billed.completion) ?? 0
        recordDirectly(billed, cost: cost, requestID: requestID)
    }

    private func recordDirectly(_ billed: BilledUsage, cost: Int64, requestID: String? = nil) {
        guard let tenant = UUID(uuidString: admission.tenantID) else { return }
        fallback.record(UsageEntry(requestID: requestID ?? admission.requestID, tenantID: tenant, keyID: admission.keyID,
                                   model: admission.model, promptTokens: billed.prompt, completionTokens: billed.completion,
                                   costMicroUSD: Int(cost), at: Date(), clientRequestID: clientRequestID,
                                   usageSource: billed.source.rawValue, usageClamped: billed.clamped,
                                   priceID: admission.priceID, cachedPromptTokens: billed.cachedPrompt))
    }
}

extension UpstreamError {
    /// The error's kind as a metric label (bounded).
    var metricKind: String {
        switch self {
        case .connectFailed: "connect"
        case .connectionClosed: "connection_closed"
        case .timeout: "timeout"
        case .protocolError: "protocol"
        }
    }
}
