import Foundation
import Synchronization

/// Prometheus metrics of the data plane, rendered in the text exposition format. Labels are
/// bounded: endpoint, model (configured names only, else `other`), status, and limiter
/// decision; values are escaped as the format requires.
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
    private let inFlight = Atomic<Int>(0)

    public init() {}

    /// An inference call is being handled on this replica (the autoscaler's per-pod metric).
    public func requestStarted() {
        inFlight.wrappingAdd(1, ordering: .relaxed)
    }

    /// Its answer is complete (or abandoned).
    public func requestEnded() {
        inFlight.wrappingSubtract(1, ordering: .relaxed)
    }

    /// `modelLabel` is the caller's bounded choice, never the client's string.
    func request(_ record: AccessRecord, modelLabel: String) {
        let seconds = Double(record.latency.components.seconds) + Double(record.latency.components.attoseconds) / 1e18
        let series = "\(record.endpoint)|\(modelLabel)"
        state.withLock { state in
            state.requests["\(series)|\(record.status)", default: 0] += 1
            var counts = state.latencyBuckets[series] ?? Array(repeating: 0, count: Self.buckets.count)
            for (index, bound) in Self.buckets.enumerated() where seconds <= bound { counts[index] += 1 }
            state.latencyBuckets[series] = counts
            state.latencySum[series, default: 0] += seconds
            state.latencyCount[series, default: 0] += 1
            if record.promptTokens > 0 { state.tokens["\(modelLabel)|in", default: 0] += record.promptTokens }
            if record.completionTokens > 0 { state.tokens["\(modelLabel)|out", default: 0] += record.completionTokens }
        }
    }

    func limiterDecision(_ decision: String) {
        state.withLock { $0.decisions[decision, default: 0] += 1 }
    }

    /// The Prometheus text format.
    public func render() -> String {
        let state = state.withLock { $0 }
        var out = Self.counter("sluice_requests_total", "Inference requests by endpoint, model and status.",
                               labels: ["endpoint", "model", "status"], state.requests)
        out += "# HELP sluice_requests_in_flight Inference requests being handled on this replica (answer not yet complete).\n"
        out += "# TYPE sluice_requests_in_flight gauge\n"
        out += "sluice_requests_in_flight \(inFlight.load(ordering: .relaxed))\n"
        out += "# HELP sluice_request_duration_seconds Time from request to the last byte of the answer.\n"
        out += "# TYPE sluice_request_duration_seconds histogram\n"
        for (key, counts) in state.latencyBuckets.sorted(by: { $0.key < $1.key }) {
            let labels = Self.labels(["endpoint", "model"], key)
            for (index, bound) in Self.buckets.enumerated() {
                out += "sluice_request_duration_seconds_bucket{\(labels),le=\"\(bound)\"} \(counts[index])\n"
            }
            out += "sluice_request_duration_seconds_bucket{\(labels),le=\"+Inf\"} \(state.latencyCount[key] ?? 0)\n"
            out += "sluice_request_duration_seconds_sum{\(labels)} \(state.latencySum[key] ?? 0)\n"
            out += "sluice_request_duration_seconds_count{\(labels)} \(state.latencyCount[key] ?? 0)\n"
        }
        out += Self.counter("sluice_tokens_total", "Tokens metered, by model and direction (in = prompt, out = completion).",
                            labels: ["model", "direction"], state.tokens)
        out += Self.counter("sluice_limiter_decisions_total", "Admission decisions: admitted, or the limit that denied.",
                            labels: ["decision"], state.decisions)
        return out
    }

    /// One counter family; series keys hold the label values joined by "|".
    private static func counter(_ name: String, _ help: String, labels names: [String], _ series: [String: Int]) -> String {
        var out = "# HELP \(name) \(help)\n# TYPE \(name) counter\n"
        for (key, value) in series.sorted(by: { $0.key < $1.key }) {
            out += "\(name){\(labels(names, key))} \(value)\n"
        }
        return out
    }

    private static func labels(_ names: [String], _ key: String) -> String {
        zip(names, key.split(separator: "|", omittingEmptySubsequences: false))
            .map { "\($0)=\"\(escape($1))\"" }.joined(separator: ",")
    }

    /// Label value escaping of the text format: backslash, double quote and line feed.
    static func escape(_ value: Substring) -> String {
        guard value.contains(where: { $0 == "\\" || $0 == "\"" || $0 == "\n" }) else { return String(value) }
        return value.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"")
            .replacingOccurrences(of: "\n", with: "\\n")
    }
}
