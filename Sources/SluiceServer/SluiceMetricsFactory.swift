import CoreMetrics
import Prometheus
import SluiceDataPlane

/// swift-metrics into one Prometheus registry (what `/metrics` serves). Sluice's own metrics
/// get their HELP text and buckets from `catalogue`; anything else (a library's metrics, once
/// `sluice serve` bootstraps `MetricsSystem` with this factory) goes through the plain
/// Prometheus factory. Sanitising and escaping are the registry's.
public struct SluiceMetricsFactory: MetricsFactory {
    public let registry: PrometheusCollectorRegistry
    private let plain: PrometheusMetricsFactory

    public init(registry: PrometheusCollectorRegistry = PrometheusCollectorRegistry()) {
        self.registry = registry
        var plain = PrometheusMetricsFactory(registry: registry)
        plain.defaultDurationHistogramBuckets = Self.latencyBuckets
        self.plain = plain
    }

    /// From 1 ms (a Redis call) to 60 s (a long generation).
    static let latencyBuckets: [Duration] = [
        .milliseconds(1), .milliseconds(5), .milliseconds(10), .milliseconds(25), .milliseconds(50), .milliseconds(100),
        .milliseconds(250), .milliseconds(500), .seconds(1), .milliseconds(2500), .seconds(5), .seconds(10),
        .seconds(30), .seconds(60),
    ]

    /// HELP text of every metric Sluice makes (the name is the key).
    static let catalogue: [String: String] = [
        DataPlaneMetrics.Name.requests: "Inference requests by endpoint, model and status.",
        DataPlaneMetrics.Name.requestDuration: "Time from request to the last byte of the answer.",
        DataPlaneMetrics.Name.timeToFirstToken: "Time from request to the first streamed token.",
        DataPlaneMetrics.Name.inFlight: "Inference requests being handled on this replica (answer not yet complete).",
        DataPlaneMetrics.Name.tokens: "Tokens metered, by model and direction (in = prompt, out = completion).",
        DataPlaneMetrics.Name.limiterDecisions: "Admission decisions: admitted, or the limit that denied.",
        DataPlaneMetrics.Name.backendDuration: "Time from sending a request to a backend to its response head.",
        DataPlaneMetrics.Name.backendErrors: "Backend calls that failed, by backend and kind.",
        OperationsMetrics.Name.redisLatency: "Redis calls by command: time to the reply (or the failure).",
        OperationsMetrics.Name.limiterDegraded: "1 while Redis is unreachable and the failure policy decides.",
        OperationsMetrics.Name.backendHealthy: "1 while a backend passes its health checks and is not ejected.",
        OperationsMetrics.Name.meteringLag: "Age of the oldest usage event in the last batch moved to the ledger.",
        OperationsMetrics.Name.meteringCommands: "Redis commands the metering worker sent (reads, claims, acks, sweeps).",
        OperationsMetrics.Name.meteringBacklog: "Tenants whose usage stream failed to drain, retried next pass.",
        OperationsMetrics.Name.directPending: "Usage rows Redis could not take, waiting to be written to the ledger.",
        OperationsMetrics.Name.directWritten: "Usage rows written to the ledger directly (Redis could not take them).",
        OperationsMetrics.Name.directDropped: "Usage rows lost: the direct-write buffer was full.",
        OperationsMetrics.Name.logLinesDropped:
            "Log lines dropped: stdout was slower than the traffic and the log buffer was full.",
    ]

    private func descriptor(_ label: String) -> MetricNameDescriptor? {
        Self.catalogue[label].map { MetricNameDescriptor(metricName: label, unitName: "", helpText: $0) }
    }

    public func makeCounter(label: String, dimensions: [(String, String)]) -> any CounterHandler {
        guard let descriptor = descriptor(label) else { return plain.makeCounter(label: label, dimensions: dimensions) }
        return registry.makeCounter(descriptor: descriptor, labels: dimensions)
    }

    public func makeFloatingPointCounter(label: String, dimensions: [(String, String)]) -> any FloatingPointCounterHandler {
        guard let descriptor = descriptor(label) else {
            return plain.makeFloatingPointCounter(label: label, dimensions: dimensions)
        }
        return registry.makeCounter(descriptor: descriptor, labels: dimensions)
    }

    public func makeRecorder(label: String, dimensions: [(String, String)], aggregate: Bool) -> any RecorderHandler {
        guard !aggregate, let descriptor = descriptor(label) else {
            return plain.makeRecorder(label: label, dimensions: dimensions, aggregate: aggregate)
        }
        return registry.makeGauge(descriptor: descriptor, labels: dimensions)
    }

    public func makeMeter(label: String, dimensions: [(String, String)]) -> any MeterHandler {
        guard let descriptor = descriptor(label) else { return plain.makeMeter(label: label, dimensions: dimensions) }
        return registry.makeGauge(descriptor: descriptor, labels: dimensions)
    }

    public func makeTimer(label: String, dimensions: [(String, String)]) -> any TimerHandler {
        guard let descriptor = descriptor(label) else { return plain.makeTimer(label: label, dimensions: dimensions) }
        return registry.makeDurationHistogram(descriptor: descriptor, labels: dimensions, buckets: Self.latencyBuckets)
    }

    public func destroyCounter(_ handler: any CounterHandler) { plain.destroyCounter(handler) }
    public func destroyFloatingPointCounter(_ handler: any FloatingPointCounterHandler) {
        plain.destroyFloatingPointCounter(handler)
    }
    public func destroyRecorder(_ handler: any RecorderHandler) { plain.destroyRecorder(handler) }
    public func destroyMeter(_ handler: any MeterHandler) { plain.destroyMeter(handler) }
    public func destroyTimer(_ handler: any TimerHandler) { plain.destroyTimer(handler) }
}
