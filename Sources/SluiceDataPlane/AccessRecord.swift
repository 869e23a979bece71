import Logging

/// Where access log lines go: one per request, written after its answer.
public protocol AccessLog: Sendable {
    func record(_ record: AccessRecord)
}

/// The access log through swift-log (`info`, metadata as below): for tests and embedding. `sluice
/// serve` uses a sink that encodes straight to bytes instead.
public struct LoggerAccessLog: AccessLog {
    let logger: Logger

    public init(logger: Logger) {
        self.logger = logger
    }

    public func record(_ record: AccessRecord) {
        logger.info("request", metadata: record.metadata)
    }
}

/// What the access log line and the metrics say about one request. Never holds the key.
public struct AccessRecord: Sendable {
    public let requestID: String
    public let clientRequestID: String?
    public let endpoint: String
    public let started = ContinuousClock.now
    public internal(set) var tenantID = ""
    public internal(set) var keyID = ""
    /// As the client named it (bounded, validated); metrics use the configured name or `other`.
    public internal(set) var model = ""
    public internal(set) var backend = ""
    public internal(set) var status = 0
    public internal(set) var errorCode = ""
    public internal(set) var promptTokens = 0
    public internal(set) var completionTokens = 0
    public internal(set) var usageSource: BilledUsage.Source?
    public internal(set) var firstByte: ContinuousClock.Instant?
    var rateLimitHeaders: [(String, String)] = []
    /// The request's spans, when tracing is on; ended with the record (`emit`).
    var trace: RequestTrace?

    public var latency: Duration { ContinuousClock.now - started }

    mutating func bill(_ usage: BilledUsage) {
        promptTokens = usage.prompt
        completionTokens = usage.completion
        usageSource = usage.source
    }

    var metadata: Logger.Metadata {
        var metadata: Logger.Metadata = [
            "request_id": "\(requestID)", "endpoint": "\(endpoint)", "status": "\(status)",
            "latency_ms": "\(Self.milliseconds(latency))",
        ]
        if let clientRequestID { metadata["client_request_id"] = "\(clientRequestID)" }
        if !tenantID.isEmpty { metadata["tenant_id"] = "\(tenantID)" }
        if !keyID.isEmpty { metadata["key_id"] = "\(keyID)" }
        if !model.isEmpty { metadata["model"] = "\(model)" }
        if !backend.isEmpty { metadata["backend"] = "\(backend)" }
        if !errorCode.isEmpty { metadata["error"] = "\(errorCode)" }
        if promptTokens + completionTokens > 0 {
            metadata["prompt_tokens"] = "\(promptTokens)"
            metadata["completion_tokens"] = "\(completionTokens)"
        }
        if let usageSource { metadata["usage_source"] = "\(usageSource.rawValue)" }
        if let firstByte { metadata["ttft_ms"] = "\(Self.milliseconds(firstByte - started))" }
        return metadata
    }

    public static func milliseconds(_ duration: Duration) -> Int {
        Int(duration.components.seconds * 1_000 + duration.components.attoseconds / 1_000_000_000_000_000)
    }
}
