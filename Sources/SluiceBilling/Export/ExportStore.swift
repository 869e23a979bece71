import Foundation
import Logging
import PostgresNIO
import SluiceTenancy

/// An exporter's state in PostgreSQL: its cursor (`billing_export_cursors`: ledger rows recorded
/// before `exported_until` are sent; `pending_until`, when set, ends the window being sent), the
/// aggregates of a window, and the events a billing system refused for good.
struct ExportStore: Sendable {
    let client: PostgresClient
    let logger: Logger
    /// Rows recorded less than this long ago are not exported yet: a ledger insert still running
    /// could commit rows with an earlier `recorded_at` (inserts have a 30 s statement timeout).
    let settleMargin: Duration

    /// The window to send now: the pending one, or a new one of at most `maxLength` from the
    /// cursor (fixed in PostgreSQL before anything is sent). nil when there is nothing to export yet.
    func window(exporter: String, maxLength: Duration, startAt: Date?) async throws -> ExportWindow? {
        try await client.withTransaction(logger: logger) { connection in
            let margin = Double(settleMargin.components.seconds)
            var until: Date?, pending: Date?, now = Date()
            for try await (u, p, n) in try await connection.query("""
                SELECT exported_until, pending_until, now() FROM billing_export_cursors WHERE exporter = \(exporter) FOR UPDATE
                """, logger: logger).decode((Date, Date?, Date).self) {
                (until, pending, now) = (u, p, n)
            }
            if until == nil {
                for try await n in try await connection.query("SELECT now()", logger: logger).decode(Date.self) { now = n }
                // A new exporter starts from now (or the configured start): history is not sent.
                let start = startAt ?? now.addingTimeInterval(-margin)
                _ = try await connection.query("""
                    INSERT INTO billing_export_cursors (exporter, exported_until) VALUES (\(exporter), \(start))
                    """, logger: logger)
                until = start
            }
            guard let start = until else { return nil }
            if let pending { return ExportWindow(start: start, end: pending) }
            let end = min(start.addingTimeInterval(Double(maxLength.components.seconds)), now.addingTimeInterval(-margin))
            guard end > start else { return nil }
            _ = try await connection.query("""
                UPDATE billing_export_cursors SET pending_until = \(end) WHERE exporter = \(exporter)
                """, logger: logger)
            return ExportWindow(start: start, end: end)
        }
    }

    func aggregates(in window: ExportWindow) async throws -> [UsageAggregate] {
        let rows = try await client.query("""
            SELECT l.tenant_id, t.stripe_customer_id, l.model, date_trunc('minute', l.at), count(*)::bigint,
                   sum(l.prompt_tokens)::bigint, sum(l.completion_tokens)::bigint, sum(l.cost_micro_usd)::bigint
            FROM usage_ledger l LEFT JOIN tenants t ON t.id = l.tenant_id
            WHERE l.recorded_at >= \(window.start) AND l.recorded_at < \(window.end)
            GROUP BY 1, 2, 3, 4 ORDER BY 1, 3, 4
            """, logger: logger)
        var aggregates: [UsageAggregate] = []
        for try await (tenant, customer, model, minute, requests, prompt, completion, cost)
            in rows.decode((UUID, String?, String, Date, Int64, Int64, Int64, Int64).self) {
            aggregates.append(UsageAggregate(tenantID: tenant, stripeCustomerID: customer, model: model, minute: minute,
                                             requests: requests, promptTokens: prompt, completionTokens: completion,
                                             costMicroUSD: cost))
        }
        return aggregates
    }

    func finish(exporter: String, window: ExportWindow) async throws {
        _ = try await client.query("""
            UPDATE billing_export_cursors SET exported_until = \(window.end), pending_until = NULL
            WHERE exporter = \(exporter) AND exported_until = \(window.start)
            """, logger: logger)
    }

    func recordRefusal(exporter: String, eventID: String, tenantID: UUID, status: Int, reason: String) async throws {
        _ = try await client.query("""
            INSERT INTO billing_export_failures (exporter, event_id, tenant_id, status, reason)
            VALUES (\(exporter), \(eventID), \(tenantID), \(status), \(String(reason.prefix(2_000))))
            """, logger: logger)
    }

    /// How far behind the exporter is: now minus its cursor (nil before its first pass).
    func lag(exporter: String) async throws -> Double? {
        for try await seconds in try await client.query("""
            SELECT extract(epoch FROM now() - exported_until)::float8 FROM billing_export_cursors WHERE exporter = \(exporter)
            """, logger: logger).decode(Double.self) {
            return seconds
        }
        return nil
    }

    /// Runs `body` only if no other replica is exporting for `exporter`; false when another is.
    func exclusively(_ exporter: String, _ body: () async throws -> Void) async throws -> Bool {
        // A stable 64-bit key from the name (djb2): the same on every replica.
        let key = Int64(bitPattern: exporter.utf8.reduce(UInt64(5381)) { ($0 << 5) &+ $0 &+ UInt64($1) })
        return try await client.ifAdvisoryLockFree(key, logger: logger) { _ in try await body() }
    }
}
