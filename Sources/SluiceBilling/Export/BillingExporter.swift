import CoreMetrics
import Foundation
import Logging
import PostgresNIO
import ServiceLifecycle

/// Pushes the ledger to a billing system: every `interval`, the ledger rows recorded since the
/// cursor (in windows of at most `maxWindow`, up to a minute ago), summed per tenant, model and
/// minute, one event each. At least once: a window is fixed before it is sent and the cursor
/// moves only when every event of it is delivered; after a failure the same window, with the
/// same event ids, is sent again (with exponential backoff, across restarts), and the billing
/// system's de-duplication makes the effect exactly once. One replica exports at a time.
public struct BillingExporter: Service {
    let sink: any BillingSink
    let store: ExportStore
    let interval: Duration
    let maxWindow: Duration
    let startAt: Date?
    let logger: Logger
    let lag: Gauge
    let sent: Counter
    let refused: Counter

    public init(sink: any BillingSink, client: PostgresClient, interval: Duration = .seconds(10),
                maxWindow: Duration = .seconds(600), settleMargin: Duration = .seconds(60), startAt: Date? = nil,
                logger: Logger) {
        self.sink = sink
        self.store = ExportStore(client: client, logger: logger, settleMargin: settleMargin)
        self.interval = interval
        self.maxWindow = maxWindow
        self.startAt = startAt
        self.logger = logger
        self.lag = Gauge(label: "sluice_billing_export_lag_seconds", dimensions: [("exporter", sink.name)])
        self.sent = Counter(label: "sluice_billing_export_events_total", dimensions: [("exporter", sink.name), ("outcome", "delivered")])
        self.refused = Counter(label: "sluice_billing_export_events_total", dimensions: [("exporter", sink.name), ("outcome", "refused")])
    }

    public func run() async throws {
        var failures = 0
        while !Task.isCancelled && !Task.isShuttingDownGracefully {
            var wait = interval
            do {
                let caughtUp = try await pass()
                failures = 0
                if !caughtUp { wait = .zero }  // more windows are waiting
            } catch {
                failures += 1
                // 1 s, 2 s, 4 s ... at most 5 minutes between attempts.
                wait = min(.seconds(1 << min(failures - 1, 9)), .seconds(300))
                logger.warning("billing export failed; retrying", metadata: [
                    "exporter": "\(sink.name)", "error": "\(String(reflecting: error))", "retry_in": "\(wait)",
                ])
            }
            if let seconds = try? await store.lag(exporter: sink.name) { lag.record(seconds) }
            let pause = wait
            try? await cancelWhenGracefulShutdown { try await Task.sleep(for: pause) }
        }
    }

    struct Undelivered: Error, CustomStringConvertible {
        let reason: String
        var description: String { "undelivered: \(reason)" }
    }

    /// Sends one window if there is one; true when the cursor is caught up.
    @discardableResult
    public func pass() async throws -> Bool {
        var caughtUp = true
        let ran = try await store.exclusively(sink.name) {
            guard let window = try await store.window(exporter: sink.name, maxLength: maxWindow, startAt: startAt) else { return }
            let aggregates = try await store.aggregates(in: window).filter(sink.accepts)
            var index = 0
            while index < aggregates.count {
                let batch = Array(aggregates[index..<min(index + sink.batchSize, aggregates.count)])
                let outcomes = await sink.deliver(batch, window: window)
                for (aggregate, outcome) in zip(batch, outcomes) {
                    switch outcome {
                    case .delivered:
                        sent.increment()
                    case .retry(let reason):
                        throw Undelivered(reason: reason)
                    case .refused(let status, let reason):
                        refused.increment()
                        logger.error("billing system refused an event; recorded in billing_export_failures", metadata: [
                            "exporter": "\(sink.name)", "tenant_id": "\(aggregate.tenantID)", "status": "\(status)",
                        ])
                        try await store.recordRefusal(exporter: sink.name, eventID: aggregate.eventID(exporter: sink.name, window: window),
                                                      tenantID: aggregate.tenantID, status: status, reason: reason)
                    }
                }
                index += batch.count
            }
            try await store.finish(exporter: sink.name, window: window)
            caughtUp = window.end.timeIntervalSince(window.start) < Double(maxWindow.components.seconds)
        }
        return ran ? caughtUp : true
    }
}
