import SluiceDataPlane
import SluiceLog

/// The access log of `sluice serve`: one JSON line per request, fields in a fixed order,
/// encoded straight to bytes and handed to the background writer (never blocks a request).
/// The same keys as every other log line: `ts`, `level`, `logger`, `msg`, then the request's.
public struct JSONAccessLog: AccessLog {
    let writer: LogLineWriter

    public init(writer: LogLineWriter) {
        self.writer = writer
    }

    public func record(_ record: AccessRecord) {
        var line = JSONLineEncoder(capacity: 512)
        Self.encode(record, into: &line)
        writer.append(line.bytes)
    }

    static func encode(_ record: AccessRecord, into line: inout JSONLineEncoder) {
        line.begin()
        line.field("ts", raw: LogTimestamp.now())
        line.field("level", "info")
        line.field("logger", "sluice.access")
        line.field("msg", "request")
        line.field("request_id", record.requestID)
        if let client = record.clientRequestID { line.field("client_request_id", client) }
        line.field("endpoint", record.endpoint)
        line.field("status", record.status)
        line.field("latency_ms", AccessRecord.milliseconds(record.latency))
        if let firstByte = record.firstByte { line.field("ttft_ms", AccessRecord.milliseconds(firstByte - record.started)) }
        if !record.tenantID.isEmpty { line.field("tenant_id", record.tenantID) }
        if !record.keyID.isEmpty { line.field("key_id", record.keyID) }
        if !record.model.isEmpty { line.field("model", record.model) }
        if !record.backend.isEmpty { line.field("backend", record.backend) }
        if !record.errorCode.isEmpty { line.field("error", record.errorCode) }
        if record.promptTokens + record.completionTokens > 0 {
            line.field("prompt_tokens", record.promptTokens)
            line.field("completion_tokens", record.completionTokens)
        }
        if let source = record.usageSource { line.field("usage_source", source.rawValue) }
        line.end()
    }
}

/// No access log (`--log-level notice` and above).
public struct DisabledAccessLog: AccessLog {
    public init() {}
    public func record(_ record: AccessRecord) {}
}
