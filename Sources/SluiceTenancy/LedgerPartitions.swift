import Foundation
import Logging
import PostgresNIO
import ServiceLifecycle

/// Keeps the ledger's monthly partitions: the current month and the next two exist before rows
/// arrive (rows of a month without one go to `usage_ledger_default`), and with a retention
/// months older than it are dropped whole, with their request ids. Every replica runs it; the
/// database serialises them.
public struct LedgerPartitions: Service {
    let client: PostgresClient
    let logger: Logger
    /// Whole months kept before the current one; nil keeps everything.
    let retentionMonths: Int?
    var interval: Duration = .seconds(3_600)

    public init(client: PostgresClient, logger: Logger, retentionMonths: Int?) {
        self.client = client
        self.logger = logger
        self.retentionMonths = retentionMonths
    }

    public func run() async throws {
        await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                do {
                    try await maintain()
                } catch {
                    logger.warning("ledger partition upkeep failed; will retry", metadata: ["error": "\(error)"])
                }
                try? await Task.sleep(for: interval)
            }
        }
    }

    /// One round: create what is missing, drop what retention no longer keeps. Returns the
    /// partitions dropped.
    @discardableResult
    public func maintain(now: Date = Date()) async throws -> [String] {
        _ = try await client.query("SELECT sluice_ledger_partitions(now(), now() + interval '2 months')", logger: logger)
        guard let retentionMonths else { return [] }
        var names: [String] = []
        for try await name in try await client.query("""
            SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
            WHERE i.inhparent = 'usage_ledger'::regclass
            """, logger: logger).decode(String.self) {
            names.append(name)
        }
        let expired = Self.expired(names, now: now, retentionMonths: retentionMonths)
        for name in expired {
            // The name is ours (usage_ledger_YYYY_MM, checked by `expired`), never a client's.
            _ = try await client.query(PostgresQuery(unsafeSQL: "DROP TABLE \(name)"), logger: logger)
            logger.notice("ledger partition dropped by retention", metadata: ["partition": "\(name)"])
        }
        if !expired.isEmpty, let cutoff = Self.cutoff(now: now, retentionMonths: retentionMonths) {
            _ = try await client.query("DELETE FROM usage_request_ids WHERE at < \(cutoff)", logger: logger)
        }
        return expired
    }

    /// The partitions (`usage_ledger_YYYY_MM`) whose whole month ends before the retention
    /// cutoff: the first day of the month `retentionMonths` before the current one (UTC). Pure.
    static func expired(_ names: [String], now: Date, retentionMonths: Int) -> [String] {
        guard let cutoff = cutoff(now: now, retentionMonths: retentionMonths) else { return [] }
        return names.filter { name in
            guard let start = monthStart(of: name), let end = utc.date(byAdding: .month, value: 1, to: start) else { return false }
            return end <= cutoff
        }.sorted()
    }

    static func cutoff(now: Date, retentionMonths: Int) -> Date? {
        let parts = utc.dateComponents([.year, .month], from: now)
        guard let month = utc.date(from: parts) else { return nil }
        return utc.date(byAdding: .month, value: -max(0, retentionMonths), to: month)
    }

    static func monthStart(of name: String) -> Date? {
        let prefix = "usage_ledger_"
        guard name.hasPrefix(prefix) else { return nil }
        let parts = name.dropFirst(prefix.count).split(separator: "_")
        guard parts.count == 2, parts[0].count == 4, parts[1].count == 2, let year = Int(parts[0]), let month = Int(parts[1]),
              (1...12).contains(month) else { return nil }
        return utc.date(from: DateComponents(year: year, month: month, day: 1))
    }

    private static let utc: Calendar = {
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = TimeZone(identifier: "UTC")!
        return calendar
    }()
}
