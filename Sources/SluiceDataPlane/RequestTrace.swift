import Tracing

/// The spans of one inference request, made only when tracing is on: a server span named and
/// attributed per the OpenTelemetry GenAI conventions, with children for the key lookup, the
/// admission, the upstream call and the settle. An incoming W3C `traceparent` is continued; the
/// backend gets the upstream span's. When tracing is off no `RequestTrace` exists and the
/// request pays one nil check per step.
public final class RequestTrace: @unchecked Sendable {
    // @unchecked: the request's own task drives it, one step at a time; the settle span, which
    // may end on another thread, touches only itself.
    private let tracer: any Tracer
    private let root: any Span
    private let operation: String

    init(tracer: any Tracer, traceparent: String?, endpoint: InferenceEndpoint) {
        var parent = ServiceContext.topLevel
        if let traceparent { tracer.extract(["traceparent": traceparent], into: &parent, using: HeaderExtractor()) }
        self.tracer = tracer
        self.operation = endpoint.operationName
        self.root = tracer.startSpan(operation, context: parent, ofKind: .server)
        root.attributes["gen_ai.operation.name"] = operation
    }

    /// Runs `body` in a child span; a thrown error marks it failed.
    func span<Value>(_ name: String, kind: SpanKind = .internal,
                     _ body: (any Span) async throws -> Value) async rethrows -> Value {
        let span = startSpan(name, kind: kind)
        defer { span.end() }
        do {
            return try await body(span)
        } catch {
            span.recordError(error)
            span.setStatus(SpanStatus(code: .error))
            throw error
        }
    }

    /// A child span the caller ends (one that outlives a scope: the upstream call, the settle).
    func startSpan(_ name: String, kind: SpanKind = .internal) -> any Span {
        tracer.startSpan(name, context: root.context, ofKind: kind)
    }

    /// The backend chosen (the latest, if one was retried): on the upstream span and the server span.
    func backend(host: String, port: Int, upstream span: any Span) {
        for span in [span, root] {
            span.attributes["server.address"] = host
            span.attributes["server.port"] = port
        }
    }

    /// The W3C `traceparent` that makes the backend's spans children of `span`.
    func traceparent(of span: any Span) -> String? {
        var headers: [String: String] = [:]
        tracer.inject(span.context, into: &headers, using: HeaderInjector())
        return headers["traceparent"]
    }

    /// Ends the server span with what the access log says about the request.
    func finish(_ record: AccessRecord, modelLabel: String) {
        if !modelLabel.isEmpty {
            root.operationName = "\(operation) \(modelLabel)"
            root.attributes["gen_ai.request.model"] = modelLabel
            root.attributes["gen_ai.response.model"] = modelLabel
        }
        if record.promptTokens + record.completionTokens > 0 {
            root.attributes["gen_ai.usage.input_tokens"] = record.promptTokens
            root.attributes["gen_ai.usage.output_tokens"] = record.completionTokens
        }
        root.attributes["http.response.status_code"] = record.status
        if !record.tenantID.isEmpty { root.attributes["sluice.tenant.id"] = record.tenantID }
        if !record.keyID.isEmpty { root.attributes["sluice.key.id"] = record.keyID }
        root.attributes["sluice.request.id"] = record.requestID
        if !record.errorCode.isEmpty { root.attributes["error.type"] = record.errorCode }
        // Server spans: a 4xx is the client's doing, not a failure of this service.
        if record.status >= 500 { root.setStatus(SpanStatus(code: .error, message: record.errorCode)) }
        root.end()
    }
}

/// Runs `body` in a child span of `trace`, or plainly when tracing is off.
func traced<Value>(_ trace: RequestTrace?, _ name: String, kind: SpanKind = .internal,
                   _ body: () async throws -> Value) async rethrows -> Value {
    guard let trace else { return try await body() }
    return try await trace.span(name, kind: kind) { _ in try await body() }
}

extension InferenceEndpoint {
    /// `gen_ai.operation.name`.
    var operationName: String {
        switch self {
        case .chatCompletions: "chat"
        case .completions: "text_completion"
        case .embeddings: "embeddings"
        }
    }
}

struct HeaderExtractor: Extractor {
    func extract(key: String, from carrier: [String: String]) -> String? { carrier[key] }
}

struct HeaderInjector: Injector {
    func inject(_ value: String, forKey key: String, into carrier: inout [String: String]) { carrier[key] = value }
}
