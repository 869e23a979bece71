import GRPCCore
import GRPCProtobuf
import SluiceDataPlane

/// The gateway's refusals and the backends' failures as gRPC statuses, and back as the HTTP
/// status the access log, the metrics and the ledger record.
enum KServeStatus {
    /// A refusal (in OpenAI's terms) as the client's `RPCError`. A rate or budget limit is
    /// `RESOURCE_EXHAUSTED` with `google.rpc.RetryInfo` in `grpc-status-details-bin` (the
    /// richer error model) and, for plain clients, `retry-after` and the `x-ratelimit-*` fields
    /// in the trailers.
    static func error(_ refusal: KServeRefusal) -> RPCError {
        let failure = refusal.error
        let code: RPCError.Code = switch failure.status {
        case 401: .unauthenticated
        case 403: .permissionDenied
        case 404: .notFound
        case 429: .resourceExhausted
        case 400..<500: .invalidArgument
        case 504: .deadlineExceeded
        case 502, 503: .unavailable
        default: .internalError
        }
        var metadata = Metadata()
        for (name, value) in refusal.rateLimitFields { metadata.addString(value, forKey: name) }
        if let delay = refusal.retryAfter {
            let status = GoogleRPCStatus(code: code, message: failure.message, details: [.retryInfo(delay: delay)])
            if let bytes: [UInt8] = try? status.serializedBytes() {
                metadata.addBinary(bytes, forKey: "grpc-status-details-bin")
            }
        }
        metadata.addString(failure.code, forKey: "sluice-error-code")
        return RPCError(code: code, message: failure.message, metadata: metadata)
    }

    /// How a backend's failure reaches the client, and how the call is recorded. The client's
    /// own mistakes (a bad tensor, an unknown version) pass through as the backend said them;
    /// the backend's troubles are the gateway's to name (a backend refusing the gateway's
    /// credentials must not tell the client its key is wrong).
    static func backendFailure(_ error: RPCError) -> (RPCError, KServeOutcome) {
        switch error.code {
        case .unavailable:
            return (RPCError(code: .unavailable, message: "the model server could not be reached"),
                    KServeOutcome(status: 503, errorCode: "upstream_unavailable", backendFailed: true))
        case .deadlineExceeded:
            return (RPCError(code: .deadlineExceeded, message: "the model server did not answer in time"),
                    KServeOutcome(status: 504, errorCode: "upstream_timeout", backendFailed: true))
        case .unauthenticated, .permissionDenied:
            return (RPCError(code: .internalError, message: "the model server refused the gateway's credentials"),
                    KServeOutcome(status: 502, errorCode: "upstream_error", backendFailed: true))
        case .internalError, .unknown, .dataLoss:
            return (RPCError(code: error.code, message: String(error.message.prefix(1_024))),
                    KServeOutcome(status: 502, errorCode: "upstream_error", backendFailed: true))
        case .resourceExhausted:
            // The backend is out of room (or the answer is over the size limit): not the client's limit.
            return (RPCError(code: .resourceExhausted, message: String(error.message.prefix(1_024))),
                    KServeOutcome(status: 503, errorCode: "upstream_overloaded"))
        case .cancelled:
            return (error, KServeOutcome(status: 499, errorCode: "client_closed"))
        default:
            return (RPCError(code: error.code, message: String(error.message.prefix(1_024))),
                    KServeOutcome(status: httpStatus(error.code), errorCode: "upstream_\(error.code)"))
        }
    }

    /// The HTTP status of the same outcome (as grpc-gateway maps them).
    static func httpStatus(_ code: RPCError.Code) -> Int {
        switch code {
        case .invalidArgument, .failedPrecondition, .outOfRange: 400
        case .unauthenticated: 401
        case .permissionDenied: 403
        case .notFound: 404
        case .alreadyExists, .aborted: 409
        case .resourceExhausted: 429
        case .cancelled: 499
        case .unimplemented: 501
        case .unavailable: 503
        case .deadlineExceeded: 504
        default: 500
        }
    }
}
