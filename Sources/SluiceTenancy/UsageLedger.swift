import Foundation
import Logging
import PostgresNIO
import ServiceLifecycle
import Synchronization

/// One metered request: a row of the billing ledger.
public struct UsageEntry: Sendable, Equatable {
    public var requestID: String
    public var tenantID: UUID
    public var keyID: String
    public var model: String
    public var promptTokens: Int
    public var completionTokens: Int
    public var costMicroUSD: Int
    public var at: Date

    public init(requestID: String, tenantID: UUID, keyID: String, model: String, promptTokens: Int,
                completionTokens: Int, costMicroUSD: Int, at: Date) {
        self.requestID = requestID
        self.tenantID = tenantID
        self.keyID = keyID
        self.model = model
        self.promptTokens = promptTokens
        self.completionTokens = completionTokens
        self.costMicroUSD = costMicroUSD
        self.at = at
    }
}

/// The PostgreSQL usage ledger. Inserts are idempotent by request id, so a request that reaches
/// it both through its Redis stream and directly is counted once.
public struct UsageLedger: Sendable {
    let client: PostgresClient
    let logger: Logger

    public init(client: PostgresClient, logger: Logger) {
        self.client = client
        self.logger = logger
    }

    public func insert(_ rows: [UsageEntry]) async throws {
        guard !rows.isEmpty else { return }
        _ = try await client.query("""
            INSERT INTO usage_ledger (request_id, tenant_id, key_id, model, prompt_tokens, completion_tokens, cost_micro_usd, at)
            SELECT * FROM unnest(\(rows.map(\.requestID))::text[], \(rows.map(\.tenantID))::uuid[], \(rows.map(\.keyID))::text[],
                                 \(rows.map(\.model))::text[], \(rows.map(\.promptTokens))::int[], \(rows.map(\.completionTokens))::int[],
                                 \(rows.map(\.costMicroUSD))::bigint[], \(rows.map(\.at))::timestamptz[])
            ON CONFLICT (request_id) DO NOTHING
            """, logger: logger)
    }
}

/// Takes usage the Redis path could not: a request admitted under the `open` or `local`
/// failure policy, or one whose settle found Redis unreachable.
public protocol UsageFallback: Sendable {
    /// Never blocks; the row is written later.
    func record(_ row: UsageEntry)
}

/// Writes fallback usage straight to the ledger in batches. The buffer is bounded: while
/// PostgreSQL is unreachable too, rows beyond `capacity` are dropped and counted in the log,
/// rather than growing memory without limit. On graceful shutdown it flushes what it holds.
public final class LedgerFallbackWriter: UsageFallback, Service {
    private struct Buffer {
        var rows: [UsageEntry] = []
        var droppedUnlogged = 0
        var written = 0
        var dropped = 0

        mutating func drop(_ count: Int) {
            droppedUnlogged += count
            dropped += count
        }
    }

    private let buffer = Mutex(Buffer())
    private let ledger: UsageLedger
    private let logger: Logger
    let capacity: Int
    let interval: Duration
    let batch: Int

    public init(ledger: UsageLedger, logger: Logger, capacity: Int = 100_000, interval: Duration = .milliseconds(200),
                batch: Int = 1_000) {
        self.ledger = ledger
        self.logger = logger
        self.capacity = capacity
        self.interval = interval
        self.batch = batch
    }

    public func record(_ row: UsageEntry) {
        buffer.withLock { buffer in
            if buffer.rows.count < capacity { buffer.rows.append(row) } else { buffer.drop(1) }
        }
    }

    /// Rows waiting to be written, rows written, rows dropped (since start).
    public var counts: (pending: Int, written: Int, dropped: Int) {
        buffer.withLock { ($0.rows.count, $0.written, $0.dropped) }
    }

    public func run() async throws {
        await cancelWhenGracefulShutdown { [self] in
            while !Task.isCancelled {
                try? await Task.sleep(for: interval)
                await flush()
            }
        }
        // The listeners have stopped (they shut down before this service): write what is left.
        await flush()
    }

    /// Writes everything pending, a batch at a time; a failed batch goes back for the next round.
    public func flush() async {
        while true {
            let (rows, dropped) = buffer.withLock { buffer in
                let rows = Array(buffer.rows.prefix(batch))
                buffer.rows.removeFirst(rows.count)
                let dropped = buffer.droppedUnlogged
                buffer.droppedUnlogged = 0
                return (rows, dropped)
            }
            if dropped > 0 {
                logger.error("usage fallback buffer full; usage rows dropped", metadata: ["dropped": "\(dropped)"])
            }
            guard !rows.isEmpty else { return }
            do {
                try await ledger.insert(rows)
                buffer.withLock { $0.written += rows.count }
            } catch {
                logger.warning("usage fallback write failed; will retry", metadata: ["rows": "\(rows.count)", "error": "\(error)"])
                buffer.withLock { buffer in
                    let room = max(0, capacity - buffer.rows.count)
                    buffer.rows.insert(contentsOf: rows.prefix(room), at: 0)
                    buffer.drop(rows.count - min(room, rows.count))
                }
                return
            }
        }
    }
}
