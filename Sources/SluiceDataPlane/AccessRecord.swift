import Logging

/// What the access log line and the metrics say about one request. Never holds the key.
struct AccessRecord: Sendable {
    let requestID: String
    let clientRequestID: String?
    let endpoint: String
    let started = ContinuousClock.now
    var tenantID = ""
    var keyID = ""
    var model = ""
    var backend = ""
    var status = 0
    var errorCode = ""
    var promptTokens = 0
    var completionTokens = 0
    var usageSource: BilledUsage.Source?
    var firstByte: ContinuousClock.Instant?
    var rateLimitHeaders: [(String, String)] = []

    var latency: Duration { ContinuousClock.now - started }

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

    static func milliseconds(_ duration: Duration) -> Int {
        Int(duration.components.seconds * 1_000 + duration.components.attoseconds / 1_000_000_000_000_000)
    }
}
