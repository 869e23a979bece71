import GRPCCore
import GRPCProtobuf
import NIOCore
import Testing

@testable import SluiceDataPlane
@testable import SluiceGRPC

/// How refusals and backend failures become gRPC statuses (no I/O; the end-to-end behaviour is
/// Tests/sdk/test_grpc_kserve.py, with Triton's client).
@Suite("KServe gRPC statuses")
struct KServeStatusTests {
    static func refusal(_ error: OpenAIError, retryAfter: Duration? = nil, fields: [(String, String)] = []) -> KServeRefusal {
        KServeRefusal(error: error, retryAfter: retryAfter, rateLimitFields: fields)
    }

    @Test func refusalsKeepTheirMeaning() {
        let cases: [(OpenAIError, RPCError.Code)] = [
            (.invalidKey("invalid API key"), .unauthenticated),
            (.modelNotAllowed("m"), .permissionDenied),
            (.endpointNotAllowed("/inference.GRPCInferenceService"), .permissionDenied),
            (.modelNotFound("m"), .notFound),
            (.invalidRequest("name the model"), .invalidArgument),
            (.rateLimited("rate limit reached"), .resourceExhausted),
            (.quotaExhausted("budget exhausted"), .resourceExhausted),
            (.limiterUnavailable, .unavailable),
            (.upstream(504, "upstream_timeout", "late"), .deadlineExceeded),
        ]
        for (error, code) in cases {
            let status = KServeStatus.error(Self.refusal(error))
            #expect(status.code == code, "\(error.code)")
            #expect(status.message == error.message)
            #expect(status.metadata[stringValues: "sluice-error-code"].contains(error.code))
        }
    }

    @Test func aLimitCarriesRetryInfoAndTheRateLimitFields() throws {
        let status = KServeStatus.error(Self.refusal(.rateLimited("rate limit reached: key_rpm; retry in 3s"),
                                                     retryAfter: .seconds(3),
                                                     fields: [("retry-after", "3"), ("x-ratelimit-limit-requests", "1")]))
        #expect(status.metadata[stringValues: "retry-after"].contains("3"))
        #expect(status.metadata[stringValues: "x-ratelimit-limit-requests"].contains("1"))
        let details = try #require(status.metadata[binaryValues: "grpc-status-details-bin"].first { _ in true })
        let google = try GoogleRPCStatus(serializedBytes: details)
        #expect(google.code == .resourceExhausted)
        #expect(google.details.compactMap(\.retryInfo).map(\.delay) == [.seconds(3)])
    }

    @Test func aBackendRefusingTheGatewayIsNotTheClientsKey() {
        for code in [RPCError.Code.unauthenticated, .permissionDenied] {
            let (error, outcome) = KServeStatus.backendFailure(RPCError(code: code, message: "bad token"))
            #expect(error.code == .internalError)
            #expect(!error.message.contains("bad token"))
            #expect(outcome.status == 502 && outcome.backendFailed)
        }
    }

    @Test func theClientsMistakesPassThroughAndDoNotCountAgainstTheBackend() {
        let (error, outcome) = KServeStatus.backendFailure(RPCError(code: .invalidArgument, message: String(repeating: "x", count: 5_000)))
        #expect(error.code == .invalidArgument)
        #expect(error.message.count == 1_024)
        #expect(outcome.status == 400 && !outcome.backendFailed)
        let (unavailable, down) = KServeStatus.backendFailure(RPCError(code: .unavailable, message: "connection refused 10.0.0.7"))
        #expect(unavailable.code == .unavailable && !unavailable.message.contains("10.0.0.7"))
        #expect(down.status == 503 && down.backendFailed)
    }

    @Test func peersAsGRPCNamesThem() {
        #expect(KServeProxy.peer("ipv4:127.0.0.1:5000")?.port == 5000)
        #expect(KServeProxy.peer("ipv4:10.1.2.3:443")?.ipAddress == "10.1.2.3")
        #expect(KServeProxy.peer("ipv6:[::1]:8001")?.port == 8001)
        #expect(KServeProxy.peer("ipv6:[::1]:8001")?.ipAddress == "::1")
        for bad in ["", "unix:/tmp/s", "ipv4:", "ipv4:1.2.3.4", "ipv4:host:1", "ipv6:[::1]", "ipv6:[zz]:1"] {
            #expect(KServeProxy.peer(bad) == nil, "\(bad)")
        }
    }

    @Test func onlyModelInferIsMetered() {
        #expect(KServeMethod.allCases.filter(\.isMetered) == [.modelInfer])
        #expect(KServeMethod.modelInfer.path == "/inference.GRPCInferenceService/ModelInfer")
    }
}

@Suite("gRPC timeouts")
struct GRPCTimeoutTests {
    @Test func theClientsDeadlineIsRead() {
        #expect(KServeProxy.grpcTimeout("1S") == .seconds(1))
        #expect(KServeProxy.grpcTimeout("250m") == .milliseconds(250))
        #expect(KServeProxy.grpcTimeout("2H") == .seconds(7_200))
        #expect(KServeProxy.grpcTimeout("99999999n") == .nanoseconds(99_999_999))
        for bad in ["", "S", "1", "1x", "-1S", "123456789S", "1.5S"] {
            #expect(KServeProxy.grpcTimeout(bad) == nil, "\(bad)")
        }
    }
}
