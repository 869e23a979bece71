import Foundation
import Synchronization

/// Prometheus metrics of the data plane, rendered in the text exposition format. Labels are
/// bounded: endpoint, model (configured names only), status, and limiter decision.
public final class DataPlaneMetrics: Sendable {
    private struct State {
        var requests: [String: Int] = [:]          // endpoint|model|status
        var latencyBuckets: [String: [Int]] = [:]  // endpoint|model -> counts per bucket
        var latencySum: [String: Double] = [:]
        var latencyCount: [String: Int] = [:]
        var tokens: [String: Int] = [:]            // model|direction
        var decisions: [String: Int] = [:]         // decision
    }

    static let buckets: [Double] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60]
    private let state = Mutex(State())

    public init() {}

    func request(_ record: AccessRecord) {
        let seconds = Double(record.latency.components.seconds) + Double(record.latency.components.attoseconds) / 1e18
        let series = "\(record.endpoint)|\(record.model)"
        state.withLock { state in
            state.requests["\(series)|\(record.status)", default: 0] += 1
            var counts = state.latencyBuckets[series] ?? Array(repeating: 0, count: Self.buckets.count)
            for (index, bound) in Self.buckets.enumerated() where seconds <= bound { counts[index] += 1 }
            state.latencyBuckets[series] = counts
            state.latencySum[series, default: 0] += seconds
            state.latencyCount[series, default: 0] += 1
            if record.promptTokens > 0 { state.tokens["\(record.model)|in", default: 0] += record.promptTokens }
            if record.completionTokens > 0 { state.tokens["\(record.model)|out", default: 0] += record.completionTokens }
        }
    }

    func limiterDecision(_ decision: String) {
        state.withLock { $0.decisions[decision, default: 0] += 1 }
    }

    /// The Prometheus text format.
    public func render() -> String {
        let state = state.withLock { $0 }
        var out = "# HELP sluice_requests_total Inference requests by endpoint, model and status.\n"
        out += "# TYPE sluice_requests_total counter\n"
        for (key, value) in state.requests.sorted(by: { $0.key < $1.key }) {
            let parts = key.split(separator: "|", omittingEmptySubsequences: false)
            out += "sluice_requests_total{endpoint=\"\(parts[0])\",model=\"\(parts[1])\",status=\"\(parts[2])\"} \(value)\n"
        }
        out += "# HELP sluice_request_duration_seconds Time from request to the last byte of the answer.\n"
        out += "# TYPE sluice_request_duration_seconds histogram\n"
        for (key, counts) in state.latencyBuckets.sorted(by: { $0.key < $1.key }) {
            let parts = key.split(separator: "|", omittingEmptySubsequences: false)
            let labels = "endpoint=\"\(parts[0])\",model=\"\(parts[1])\""
            for (index, bound) in Self.buckets.enumerated() {
                out += "sluice_request_duration_seconds_bucket{\(labels),le=\"\(bound)\"} \(counts[index])\n"
            }
            out += "sluice_request_duration_seconds_bucket{\(labels),le=\"+Inf\"} \(state.latencyCount[key] ?? 0)\n"
            out += "sluice_request_duration_seconds_sum{\(labels)} \(state.latencySum[key] ?? 0)\n"
            out += "sluice_request_duration_seconds_count{\(labels)} \(state.latencyCount[key] ?? 0)\n"
        }
        out += "# HELP sluice_tokens_total Tokens metered, by model and direction (in = prompt, out = completion).\n"
        out += "# TYPE sluice_tokens_total counter\n"
        for (key, value) in state.tokens.sorted(by: { $0.key < $1.key }) {
            let parts = key.split(separator: "|", omittingEmptySubsequences: false)
            out += "sluice_tokens_total{model=\"\(parts[0])\",direction=\"\(parts[1])\"} \(value)\n"
        }
        out += "# HELP sluice_limiter_decisions_total Admission decisions: admitted, or the limit that denied.\n"
        out += "# TYPE sluice_limiter_decisions_total counter\n"
        for (key, value) in state.decisions.sorted(by: { $0.key < $1.key }) {
            out += "sluice_limiter_decisions_total{decision=\"\(key)\"} \(value)\n"
        }
        return out
    }
}
