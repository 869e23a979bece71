import CoreMetrics
import SluiceLimiter
import SluiceLog
import SluiceTenancy
import SluiceUpstream
import Synchronization

/// Metrics whose values live in other parts (the limiter's breaker, the backends' health, the
/// direct-write fallback, the log writer): read into their gauges and counters when `/metrics`
/// is scraped, so the hot path pays nothing for them.
final class OperationsMetrics: Sendable {
    enum Name {
        static let redisLatency = "sluice_redis_command_duration_seconds"
        static let limiterDegraded = "sluice_limiter_degraded"
        static let backendHealthy = "sluice_backend_healthy"
        static let meteringLag = "sluice_metering_lag_seconds"
        static let meteringCommands = "sluice_metering_redis_commands_total"
        static let meteringBacklog = "sluice_metering_backlog_tenants"
        static let directPending = "sluice_usage_direct_pending"
        static let directWritten = "sluice_usage_direct_written_total"
        static let directDropped = "sluice_usage_direct_dropped_total"
        static let logLinesDropped = "sluice_log_lines_dropped_total"
    }

    private let degraded: Gauge
    private let healthy: [(Backend, Gauge)]
    private let pending: Gauge
    private let written: CounterMirror
    private let dropped: CounterMirror
    private let logDropped: CounterMirror
    let meteringLag: Gauge
    let meteringCommands: Counter
    let meteringBacklog: Gauge

    init(factory: any MetricsFactory, backends: [Backend]) {
        degraded = Gauge(label: Name.limiterDegraded, dimensions: [], factory: factory)
        healthy = backends.map { ($0, Gauge(label: Name.backendHealthy, dimensions: [("backend", $0.url)], factory: factory)) }
        pending = Gauge(label: Name.directPending, dimensions: [], factory: factory)
        written = CounterMirror(Counter(label: Name.directWritten, dimensions: [], factory: factory))
        dropped = CounterMirror(Counter(label: Name.directDropped, dimensions: [], factory: factory))
        logDropped = CounterMirror(Counter(label: Name.logLinesDropped, dimensions: [], factory: factory))
        meteringLag = Gauge(label: Name.meteringLag, dimensions: [], factory: factory)
        meteringLag.record(0)
        meteringCommands = Counter(label: Name.meteringCommands, dimensions: [], factory: factory)
        meteringCommands.increment(by: 0)
        meteringBacklog = Gauge(label: Name.meteringBacklog, dimensions: [], factory: factory)
        meteringBacklog.record(0)
    }

    func refresh(limiter: Limiter, usageFallback: LedgerFallbackWriter) {
        degraded.record(limiter.isDegraded ? 1 : 0)
        for (backend, gauge) in healthy { gauge.record(backend.isHealthy() ? 1 : 0) }
        let direct = usageFallback.counts
        pending.record(direct.pending)
        written.catchUp(to: direct.written)
        dropped.catchUp(to: direct.dropped)
        logDropped.catchUp(to: LogLineWriter.standardOutput.dropped)
    }
}

/// A counter whose running total is kept elsewhere: brought up to it by the difference.
final class CounterMirror: Sendable {
    private let counter: Counter
    private let reported = Mutex(0)

    init(_ counter: Counter) {
        self.counter = counter
        counter.increment(by: 0)  // exposed (as 0) from the start
    }

    func catchUp(to total: Int) {
        let delta = reported.withLock { reported in
            defer { reported = max(reported, total) }
            return total - reported
        }
        if delta > 0 { counter.increment(by: delta) }
    }
}
