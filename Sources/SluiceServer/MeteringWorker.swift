import CoreMetrics
import Foundation
import Logging
import PostgresNIO
import ServiceLifecycle
import SluiceLimiter
import SluiceRedis
import SluiceTenancy

/// Moves usage events from the tenants' Redis Streams into the PostgreSQL ledger: a consumer
/// group shared by every replica, batches inserted idempotently by request id, then acknowledged.
/// Entries a dead replica read but never acknowledged are claimed after `claimIdle`. Every
/// `sweepEvery` passes it also has the limiter bill, at their reservation, requests whose settle
/// never came (their replica died between the answer and the settle).
struct MeteringWorker: Service {
    static let group = "sl-metering"
    let redis: RedisClient
    let limiter: Limiter
    let postgres: PostgresClient
    let ledger: UsageLedger
    let consumer: String
    let logger: Logger
    var interval: Duration = .milliseconds(500)
    var claimIdle: Duration = .seconds(60)
    var batch = 500
    /// New tenants are picked up this often (one cheap query).
    var tenantRefresh: Duration = .seconds(5)
    var sweepEvery = 10
    /// `sluice_metering_lag_seconds`: set after every pass.
    var lag: Gauge?

    func run() async throws {
        await cancelWhenGracefulShutdown { await loop() }
    }

    private func loop() async {
        var tenants: [String] = []
        var tenantsRefreshed = ContinuousClock.now - .seconds(3_600)
        var pass = 0
        while !Task.isCancelled {
            pass += 1
            do {
                if ContinuousClock.now - tenantsRefreshed > tenantRefresh {
                    tenants = try await tenantIDs()
                    tenantsRefreshed = .now
                }
                var oldest = 0.0
                for tenant in tenants {
                    if pass % sweepEvery == 0 { _ = try await limiter.sweep(tenantID: tenant) }
                    oldest = max(oldest, try await drain(tenant))
                }
                lag?.record(oldest)
            } catch {
                logger.warning("metering pass failed; will retry", metadata: ["error": "\(error)"])
            }
            try? await Task.sleep(for: interval)
        }
    }

    private func tenantIDs() async throws -> [String] {
        var ids: [String] = []
        for try await id in try await postgres.query("SELECT id FROM tenants", logger: logger).decode(UUID.self) {
            ids.append(id.uuidString.lowercased())
        }
        return ids
    }

    /// One tenant: claim abandoned entries, read new ones, ledger them, acknowledge them.
    /// Returns the age in seconds of the oldest entry moved (0 when none).
    @discardableResult
    func drain(_ tenant: String) async throws -> Double {
        let stream = LimiterKeys(tenantID: tenant).usageStream
        let entries: [RESPValue]
        do {
            entries = try await read(stream)
        } catch {
            guard error.serverErrorCode == "NOGROUP" else { throw error }
            // No group yet: create it if the stream exists (never create a stream without TTL).
            if try await redis.send(RedisCommand("EXISTS", stream)) == .integer(1) {
                _ = try? await redis.send(RedisCommand("XGROUP", "CREATE", stream, Self.group, "0"))
            }
            return 0
        }
        guard !entries.isEmpty else { return 0 }
        var rows: [UsageEntry] = []
        for entry in entries {
            do {
                rows.append(try UsageEntry(streamEntry: entry))
            } catch {
                // Acknowledged below like the rest: kept in the dead-letter table, never retried forever.
                try await ledger.deadLetter(tenantID: tenant, requestID: error.requestID, reason: error.reason,
                                            payload: "\(entry)")
            }
        }
        try await ledger.insert(rows)
        let ids = entries.compactMap { $0.array?.first?.string }
        _ = try await redis.send(RedisCommand("XACK", [stream, Self.group] + ids))
        return Self.age(ofOldest: ids)
    }

    /// Stream ids start with the entry's time in milliseconds (Redis's clock: the lag is only
    /// as exact as the clocks agree).
    static func age(ofOldest ids: [String], now: Date = Date()) -> Double {
        guard let oldest = ids.compactMap({ $0.split(separator: "-").first.flatMap { Double($0) } }).min() else { return 0 }
        return max(0, now.timeIntervalSince1970 - oldest / 1000)
    }

    /// Entries abandoned by a dead consumer, then new ones.
    private func read(_ stream: String) async throws(RedisClientError) -> [RESPValue] {
        let claimed = try await redis.send(RedisCommand("XAUTOCLAIM", stream, Self.group, consumer,
                                                        Int(claimIdle.components.seconds * 1_000), "0", "COUNT", batch))
        let fresh = try await redis.send(RedisCommand("XREADGROUP", "GROUP", Self.group, consumer, "COUNT", batch,
                                                      "STREAMS", stream, ">"))
        return (claimed.array?.dropFirst().first?.array ?? []) + (fresh.array?.first?.array?.dropFirst().first?.array ?? [])
    }
}

/// A usage event the ledger cannot take as it is.
struct MalformedUsageEvent: Error {
    let reason: String
    let requestID: String?
}

extension UsageEntry {
    /// One entry of a usage stream (fields written by settle.lua). Counts are clamped to the
    /// ledger's range, so a replica that wrote nonsense cannot make PostgreSQL refuse the batch.
    init(streamEntry entry: RESPValue) throws(MalformedUsageEvent) {
        guard let parts = entry.array, parts.count == 2, let list = parts[1].array else {
            throw MalformedUsageEvent(reason: "not a stream entry", requestID: nil)
        }
        var fields: [String: String] = [:]
        var index = 0
        while index + 1 < list.count {
            if let name = list[index].string, let value = list[index + 1].string { fields[name] = value }
            index += 2
        }
        guard let requestID = fields["request_id"], !requestID.isEmpty else {
            throw MalformedUsageEvent(reason: "no request_id", requestID: nil)
        }
        guard let tenant = fields["tenant_id"].flatMap(UUID.init(uuidString:)), let keyID = fields["key_id"],
              let model = fields["model"] else {
            throw MalformedUsageEvent(reason: "tenant_id, key_id or model missing or malformed", requestID: requestID)
        }
        var clamped = fields[Field.usageClamped] == "1"
        func count(_ name: String, limit: Int) throws(MalformedUsageEvent) -> Int {
            guard let text = fields[name] else { return 0 }
            guard let value = Int(text) else { throw MalformedUsageEvent(reason: "\(name) is not an integer", requestID: requestID) }
            if value < 0 || value > limit { clamped = true }
            return min(max(value, 0), limit)
        }
        let prompt = try count("prompt_tokens", limit: 1_000_000_000)
        let completion = try count("completion_tokens", limit: 1_000_000_000)
        let cost = try count("cost_micro_usd", limit: Int(Int64.max / 2))
        let source = fields[Field.usageSource] == "estimated" ? "estimated" : "backend"
        self.init(requestID: requestID, tenantID: tenant, keyID: keyID, model: model, promptTokens: prompt,
                  completionTokens: completion, costMicroUSD: cost,
                  at: Date(timeIntervalSince1970: (Double(fields["ts_us"] ?? "") ?? 0) / 1_000_000),
                  clientRequestID: fields[Field.clientRequestID], usageSource: source, usageClamped: clamped)
    }
}
