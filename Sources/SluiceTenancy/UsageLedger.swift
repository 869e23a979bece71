import Foundation
import Logging
import PostgresNIO
import SluiceLimiter
import ServiceLifecycle
import Synchronization

/// One metered request: a row of the billing ledger.
public struct UsageEntry: Sendable, Equatable {
    /// Names of the usage event's fields that settle writes and the metering worker reads.
    public enum Field {
        public static let clientRequestID = "client_request_id"
        public static let usageSource = "usage_source"
        public static let usageClamped = "usage_clamped"
        public static let priceID = "price_id"
        public static let cachedPromptTokens = "cached_prompt_tokens"
    }

    /// The server's request id: unique per admitted request, and per tenant in the ledger.
    public var requestID: String
    public var tenantID: UUID
    public var keyID: String
    public var model: String
    public var promptTokens: Int
    public var completionTokens: Int
    public var costMicroUSD: Int
    public var at: Date
    /// The client's `x-request-id`, for correlation only.
    public var clientRequestID: String?
    /// `backend` (the backend's counts) or `estimated` (the gateway's).
    public var usageSource: String
    /// A backend count was out of range or not an integer, and was clamped.
    public var usageClamped: Bool
    /// The price version the cost was computed at (nil: no price known).
    public var priceID: Int64?
    /// Prompt tokens the backend served from its cache (part of `promptTokens`).
    public var cachedPromptTokens: Int

    public init(requestID: String, tenantID: UUID, keyID: String, model: String, promptTokens: Int,
                completionTokens: Int, costMicroUSD: Int, at: Date, clientRequestID: String? = nil,
                usageSource: String = "backend", usageClamped: Bool = false, priceID: Int64? = nil,
                cachedPromptTokens: Int = 0) {
        self.priceID = priceID
        self.cachedPromptTokens = cachedPromptTokens
        self.requestID = requestID
        self.tenantID = tenantID
        self.keyID = keyID
        self.model = model
        self.promptTokens = promptTokens
        self.completionTokens = completionTokens
        self.costMicroUSD = costMicroUSD
        self.at = at
        self.clientRequestID = clientRequestID
        self.usageSource = usageSource
        self.usageClamped = usageClamped
    }
}

/// The PostgreSQL usage ledger. Inserts are idempotent by (tenant, server request id), so a
/// request that reaches it both through its Redis stream and directly is counted once.
///
/// One bad row never blocks the rest: when PostgreSQL refuses a batch, its rows are inserted
/// one by one and each refused row goes to `usage_dead_letter` with the reason. Only an
/// unreachable database makes `insert` throw (the caller retries later).
public struct UsageLedger: Sendable {
    let client: PostgresClient
    let logger: Logger

    public init(client: PostgresClient, logger: Logger) {
        self.client = client
        self.logger = logger
    }

    public func insert(_ rows: [UsageEntry]) async throws {
        guard !rows.isEmpty else { return }
        do {
            try await insertBatch(rows)
        } catch let error as PSQLError where error.code == .server {
            for row in rows {
                do {
                    try await insertBatch([row])
                } catch let error as PSQLError where error.code == .server {
                    let reason = error.serverInfo?[.message] ?? "refused by PostgreSQL"
                    logger.error("usage row refused by the ledger; dead-lettered",
                                 metadata: ["request_id": "\(row.requestID)", "reason": "\(reason)"])
                    try await deadLetter(tenantID: row.tenantID.uuidString.lowercased(), requestID: row.requestID,
                                         reason: reason, payload: "\(row)")
                }
            }
        }
    }

    /// Keeps what could not be ledgered, with why, for a person to look at.
    public func deadLetter(tenantID: String?, requestID: String?, reason: String, payload: String) async throws {
        // text refuses NUL bytes; everything else is kept as it came.
        func clean(_ text: String?, limit: Int) -> String? {
            text.map { String($0.replacingOccurrences(of: "\u{0}", with: "\\0").prefix(limit)) }
        }
        _ = try await client.query("""
            INSERT INTO usage_dead_letter (tenant_id, request_id, reason, payload)
            VALUES (\(clean(tenantID, limit: 200)), \(clean(requestID, limit: 200)), \(clean(reason, limit: 2_000) ?? ""),
                    \(clean(payload, limit: 64 * 1024) ?? ""))
            """, logger: logger)
    }

    /// One statement per batch: the request ids the ledger has not seen are recorded, and only
    /// their rows are written (a repeated id, in the batch or from before, is ignored). At most
    /// 30 s: billing exports read rows by `recorded_at` (the transaction's start) once they are a
    /// minute old, so no insert may commit later than that.
    private func insertBatch(_ rows: [UsageEntry]) async throws {
        do {
            try await client.withTransaction(logger: logger) { connection in
                _ = try await connection.query("SET LOCAL statement_timeout = '30s'", logger: logger)
                try await Self.insert(rows, on: connection, logger: logger)
            }
        } catch let error as PostgresTransactionError {
            throw error.closureError ?? error
        }
    }

    private static func insert(_ rows: [UsageEntry], on connection: PostgresConnection, logger: Logger) async throws {
        _ = try await connection.query("""
            WITH batch AS (
                SELECT DISTINCT ON (t, r) r, t, k, m, p, c, cost, at, client, source, clamped, price, cached
                FROM unnest(\(rows.map(\.requestID))::text[], \(rows.map(\.tenantID))::uuid[], \(rows.map(\.keyID))::text[],
                            \(rows.map(\.model))::text[], \(rows.map(\.promptTokens))::int[], \(rows.map(\.completionTokens))::int[],
                            \(rows.map(\.costMicroUSD))::bigint[], \(rows.map(\.at))::timestamptz[],
                            \(rows.map { $0.clientRequestID ?? "" })::text[], \(rows.map(\.usageSource))::text[],
                            \(rows.map(\.usageClamped))::boolean[], \(rows.map { $0.priceID ?? -1 })::bigint[],
                            \(rows.map(\.cachedPromptTokens))::int[])
                     AS u(r, t, k, m, p, c, cost, at, client, source, clamped, price, cached)
            ), fresh AS (
                INSERT INTO usage_request_ids (tenant_id, request_id, at)
                SELECT t, r, at FROM batch
                ON CONFLICT (tenant_id, request_id) DO NOTHING
                RETURNING tenant_id, request_id
            )
            INSERT INTO usage_ledger (request_id, tenant_id, key_id, model, prompt_tokens, completion_tokens, cost_micro_usd, at,
                                      client_request_id, usage_source, usage_clamped, price_id, cached_prompt_tokens)
            SELECT r, t, k, m, p, c, cost, at, NULLIF(client, ''), source, clamped, NULLIF(price, -1), cached
            FROM batch JOIN fresh ON fresh.tenant_id = batch.t AND fresh.request_id = batch.r
            """, logger: logger)
    }
}

extension UsageLedger: SpendSource {
    /// A tenant's spend in a UTC month and day, per spend field (`t`, `k:<key id>`, `m:<model>`).
    public func spend(tenantID: String, month: Int, day: Int) async throws -> SpendSums {
        guard let tenant = UUID(uuidString: tenantID) else { return SpendSums() }
        func date(_ seconds: Int64) -> Date { Date(timeIntervalSince1970: TimeInterval(seconds)) }
        let dayStart = SpendPeriod.start(ofDay: day)
        let rows = try await client.query("""
            SELECT key_id, model, sum(cost_micro_usd)::bigint,
                   coalesce(sum(cost_micro_usd) FILTER (WHERE at >= \(date(dayStart)) AND at < \(date(dayStart + 86_400))), 0)::bigint
            FROM usage_ledger
            WHERE tenant_id = \(tenant) AND at >= \(date(SpendPeriod.start(ofMonth: month)))
              AND at < \(date(SpendPeriod.end(ofMonth: month)))
            GROUP BY key_id, model
            """, logger: logger)
        var sums = SpendSums()
        for try await (key, model, monthCost, dayCost) in rows.decode((String, String, Int64, Int64).self) {
            for field in ["t", "k:\(key)", "m:\(model)"] {
                sums.month[field, default: 0] += monthCost
                if dayCost > 0 { sums.day[field, default: 0] += dayCost }
            }
        }
        return sums
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
