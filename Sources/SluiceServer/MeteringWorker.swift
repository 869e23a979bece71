import CoreMetrics
import Foundation
import Logging
import NIOCore
import PostgresNIO
import ServiceLifecycle
import SluiceConcurrency
import SluiceLimiter
import SluiceRedis
import SluiceTenancy

/// Moves usage events from the tenants' Redis Streams into the PostgreSQL ledger: a consumer
/// group shared by every replica, batches inserted idempotently by request id, then acknowledged.
/// Which streams a pass reads is `MeteringSchedule`'s: the tenants any replica admitted or
/// settled requests for within `activeWindow` (so the Redis cost follows traffic, not the tenant
/// count), plus a slow rotation through every tenant as a safety net. Replicas share what they
/// saw through four sharded sorted sets (`sl:metering:active:{n}`, tenant → last activity, ms):
/// each pass publishes this replica's tenants and reads the fleet's, so a replica's leftovers
/// (usage it never read, entries it read but never acknowledged, reservations it never settled)
/// are picked up by the others when it dies. One tenant's failure never holds up the others.
struct MeteringWorker: Service {
    static let group = "sl-metering"
    let redis: RedisClient
    let limiter: Limiter
    let postgres: PostgresClient
    let ledger: UsageLedger
    let consumer: String
    let logger: Logger
    var interval: Duration = .seconds(1)
    var claimIdle: Duration = .seconds(60)
    var batch = 500
    /// New tenants are picked up this often (one cheap query).
    var tenantRefresh: Duration = .seconds(5)
    var schedule = MeteringSchedule(scanPasses: 600, maintenanceEvery: 10)
    /// A tenant stays "active" this long after its last admit or settle anywhere in the fleet:
    /// longer than `claimIdle`, so a dead replica's unacknowledged entries are claimed.
    var activeWindow: Duration = .seconds(180)
    static let activityShards = 4
    /// `sluice_metering_lag_seconds`: set after every pass.
    var lag: Gauge?
    /// `sluice_metering_redis_commands_total` and `sluice_metering_backlog_tenants`.
    var commands: Counter?
    var backlog: Gauge?
    /// Where the worker's own work runs (the gateway's background thread, see `Gateway`); the
    /// global pool when nil.
    var executorLoop: (any EventLoop)?

    /// On graceful shutdown the pass in progress finishes (what it read is ledgered and
    /// acknowledged, not left for another replica to claim after `claimIdle`); only the wait
    /// before the next pass is cut short. Cancellation still stops it anywhere.
    func run() async throws {
        guard let executorLoop else { return try await passes() }
        try await withTaskExecutorPreference(EventLoopTaskExecutor.on(executorLoop)) { try await passes() }
    }

    private func passes() async throws {
        var schedule = schedule
        var tenants: [String] = []
        var known: Set<String> = []
        var tenantsRefreshed = ContinuousClock.now - .seconds(3_600)
        var pass = 0
        var grouped: Set<String> = []  // tenants whose stream has the consumer group (read once)
        while !Task.isCancelled, !Task.isShuttingDownGracefully {
            pass += 1
            let started = ContinuousClock.now
            if started - tenantsRefreshed > tenantRefresh {
                do {
                    tenants = try await tenantIDs()
                    known = Set(tenants)
                    tenantsRefreshed = .now
                } catch {
                    logger.warning("metering could not list tenants; will retry", metadata: ["error": "\(error)"])
                }
            }
            var active = limiter.activity.take()
            do {
                // Only tenants of this database: a fleet sharing the Redis with another (tests do)
                // must never ledger the other's usage.
                active.formUnion(try await shareActivity(active, trim: pass % (Self.activityShards * 10)).filter(known.contains))
            } catch {
                logger.warning("metering could not share activity; reading this replica's tenants", metadata: ["error": "\(error)"])
            }
            var moved = Drained()
            var plain: [String] = []
            for step in schedule.next(active: active, all: tenants) {
                do {
                    if step.sweep {
                        commands?.increment()
                        _ = try await limiter.sweep(tenantID: step.tenant)
                    }
                    // Streams known to have the group and nothing to claim or recover are read
                    // together below; the rest one by one (that also creates missing groups).
                    if !step.claim, !step.recover, grouped.contains(step.tenant) {
                        plain.append(step.tenant)
                    } else if let drained = try await drain(step.tenant, claim: step.claim, recover: step.recover) {
                        grouped.insert(step.tenant)
                        moved.add(drained)
                    }
                } catch {
                    schedule.failed(step.tenant)
                    logger.warning("metering a tenant failed; will retry", metadata: ["tenant_id": "\(step.tenant)", "error": "\(error)"])
                }
            }
            let many = await drainTogether(plain, grouped: &grouped)
            moved.add(many.drained)
            for tenant in many.failed { schedule.failed(tenant) }
            lag?.record(moved.oldest)
            backlog?.record(schedule.backlog)
            // A busy tenant writes more than one read takes (`batch` entries): the next pass
            // starts at once until it has caught up, or the ledger would fall ever further behind.
            guard !moved.full else { continue }
            try? await cancelWhenGracefulShutdown { try await Task.sleep(until: started + interval) }
        }
    }

    /// Publishes this replica's active tenants and returns the fleet's (within `activeWindow`).
    private func shareActivity(_ local: Set<String>, trim: Int) async throws(RedisClientError) -> Set<String> {
        let now = Int(Date().timeIntervalSince1970 * 1000)
        var shards: [Int: [any RESPArgument]] = [:]
        for tenant in local { shards[Self.shard(of: tenant), default: []] += [now, tenant] as [any RESPArgument] }
        for (shard, members) in shards {
            let key = Self.activityKey(shard)
            _ = try await send(RedisCommand("ZADD", [key] + members))
            _ = try await send(RedisCommand("PEXPIRE", key, 3_600_000))
        }
        var fleet: Set<String> = []
        let since = now - Int(activeWindow.components.seconds * 1000)
        for shard in 0..<Self.activityShards {
            let key = Self.activityKey(shard)
            let members = try await send(RedisCommand("ZRANGEBYSCORE", key, "(\(since)", "+inf"))
            for member in members.array ?? [] { if let tenant = member.string { fleet.insert(tenant) } }
            if shard == trim {  // one shard per pass drops tenants gone quiet
                _ = try await send(RedisCommand("ZREMRANGEBYSCORE", key, "-inf", "(\(since)"))
            }
        }
        return fleet
    }

    static func activityKey(_ shard: Int) -> String { "sl:metering:active:{\(shard)}" }

    /// A stable shard (not `hashValue`, which differs per process).
    static func shard(of tenant: String) -> Int {
        Int(tenant.utf8.reduce(UInt32(2_166_136_261)) { ($0 ^ UInt32($1)) &* 16_777_619 } % UInt32(activityShards))
    }

    private func tenantIDs() async throws -> [String] {
        var ids: [String] = []
        for try await id in try await postgres.query("SELECT id FROM tenants", logger: logger).decode(UUID.self) {
            ids.append(id.uuidString.lowercased())
        }
        return ids
    }

    /// One tenant: claim abandoned entries (when `claim`), read its own unacknowledged ones
    /// again (when `recover`), read new ones, ledger them, acknowledge them. Returns the age in
    /// seconds of the oldest entry moved (0 when none), or nil when the stream has no consumer
    /// group yet (it is created when the stream exists). Passes that claim (the safety net's
    /// rotation) also drain what replicas older than the batched entries left in the legacy stream.
    @discardableResult
    func drain(_ tenant: String, claim: Bool = true, recover: Bool = true) async throws -> Drained? {
        let keys = LimiterKeys(tenantID: tenant)
        let drained = try await drain(tenant, stream: keys.usageStream, claim: claim, recover: recover)
        guard claim, let legacy = try await drain(tenant, stream: keys.legacyUsageStream, claim: true, recover: true) else {
            return drained
        }
        guard var both = drained else { return nil }
        both.add(legacy)
        return both
    }

    /// What one read moved: the age in seconds of its oldest entry (0 when none), and whether
    /// it was a full batch (more may be waiting).
    struct Drained {
        var oldest = 0.0
        var full = false

        /// Both reads together: the older entry, and full if either was.
        mutating func add(_ other: Drained) {
            oldest = max(oldest, other.oldest)
            full = full || other.full
        }
    }

    private func drain(_ tenant: String, stream: String, claim: Bool, recover: Bool) async throws -> Drained? {
        let entries: [RESPValue]
        do {
            entries = try await read(stream, claim: claim, recover: recover)
        } catch {
            guard error.serverErrorCode == "NOGROUP" else { throw error }
            // No group yet: create it if the stream exists (never create a stream without TTL).
            if try await send(RedisCommand("EXISTS", stream)) == .integer(1) {
                _ = try? await send(RedisCommand("XGROUP", "CREATE", stream, Self.group, "0"))
            }
            return nil
        }
        return try await ledger(tenant, stream, entries)
    }

    /// New entries of many tenants in one XREADGROUP (their streams all have the group), each
    /// tenant's then ledgered and acknowledged on its own: one failing tenant leaves the others
    /// done. A stream that lost its group (expired, or Redis lost its data) fails the read for
    /// all: they are read one by one this time and the group-less ones leave `grouped`.
    /// On a Redis Cluster one read can only name streams of one slot: a read per slot then.
    func drainTogether(_ tenants: [String], grouped: inout Set<String>) async -> (drained: Drained, failed: [String]) {
        guard !tenants.isEmpty else { return (Drained(), []) }
        if redis.isCluster {
            let bySlot = Dictionary(grouping: tenants) { RedisHashSlot.of(LimiterKeys(tenantID: $0).usageStream) }
            if bySlot.count > 1 {
                var moved = Drained()
                var failed: [String] = []
                for slotTenants in bySlot.values {
                    let slot = await drainTogether(slotTenants, grouped: &grouped)
                    moved.add(slot.drained)
                    failed += slot.failed
                }
                return (moved, failed)
            }
        }
        var moved = Drained()
        var failed: [String] = []
        var streams: [String: String] = [:]
        for tenant in tenants { streams[LimiterKeys(tenantID: tenant).usageStream] = tenant }
        let reply: RESPValue
        do {
            let names = tenants.map { LimiterKeys(tenantID: $0).usageStream }
            reply = try await send(RedisCommand("XREADGROUP", ["GROUP", Self.group, consumer, "COUNT", batch, "STREAMS"]
                                                + names + Array(repeating: ">", count: names.count)))
        } catch {
            // The read may have been carried out and only its reply lost (a master killed under
            // it): its entries are then delivered to this consumer, never to be read as new.
            // Each tenant's own pending entries are read again first, or they would wait for the
            // claim time.
            for tenant in tenants {
                do {
                    if let drained = try await drain(tenant, claim: false, recover: true) {
                        moved.add(drained)
                    } else {
                        grouped.remove(tenant)
                    }
                } catch {
                    failed.append(tenant)
                }
            }
            return (moved, failed)
        }
        for item in reply.array ?? [] {
            guard let parts = item.array, parts.count == 2, let stream = parts[0].string, let tenant = streams[stream] else { continue }
            do {
                moved.add(try await ledger(tenant, stream, parts[1].array ?? []))
            } catch {
                failed.append(tenant)
                logger.warning("metering a tenant failed; will retry", metadata: ["tenant_id": "\(tenant)", "error": "\(error)"])
            }
        }
        return (moved, failed)
    }

    /// Writes entries of one stream to the ledger (malformed ones to the dead-letter table),
    /// then acknowledges them all.
    private func ledger(_ tenant: String, _ stream: String, _ entries: [RESPValue]) async throws -> Drained {
        guard !entries.isEmpty else { return Drained() }
        var rows: [UsageEntry] = []
        for entry in entries {
            for event in UsageEntry.events(inStreamEntry: entry) {
                switch event {
                case .success(let row): rows.append(row)
                case .failure(let error):
                    // Acknowledged below like the rest: kept in the dead-letter table, never retried forever.
                    try await ledger.deadLetter(tenantID: tenant, requestID: error.requestID, reason: error.reason,
                                                payload: error.payload ?? "\(entry)")
                }
            }
        }
        try await ledger.insert(rows)
        let ids = entries.compactMap { $0.array?.first?.string }
        _ = try await send(RedisCommand("XACK", [stream, Self.group] + ids))
        return Drained(oldest: Self.age(ofOldest: ids), full: entries.count >= batch)
    }

    /// Stream ids start with the entry's time in milliseconds (Redis's clock: the lag is only
    /// as exact as the clocks agree).
    static func age(ofOldest ids: [String], now: Date = Date()) -> Double {
        guard let oldest = ids.compactMap({ $0.split(separator: "-").first.flatMap { Double($0) } }).min() else { return 0 }
        return max(0, now.timeIntervalSince1970 - oldest / 1000)
    }

    /// Entries abandoned by a dead consumer (when `claim`), this consumer's own unacknowledged
    /// ones (when `recover`), then new ones.
    private func read(_ stream: String, claim: Bool, recover: Bool) async throws(RedisClientError) -> [RESPValue] {
        var claimed: [RESPValue] = []
        if claim {
            let reply = try await send(RedisCommand("XAUTOCLAIM", stream, Self.group, consumer,
                                                    Int(claimIdle.components.seconds * 1_000), "0", "COUNT", batch))
            claimed = reply.array?.dropFirst().first?.array ?? []
        }
        if recover {
            // This consumer's pending list, the entries just claimed included.
            let own = try await send(RedisCommand("XREADGROUP", "GROUP", Self.group, consumer, "COUNT", batch,
                                                  "STREAMS", stream, "0"))
            claimed = own.array?.first?.array?.dropFirst().first?.array ?? []
        }
        let fresh = try await send(RedisCommand("XREADGROUP", "GROUP", Self.group, consumer, "COUNT", batch,
                                                "STREAMS", stream, ">"))
        return claimed + (fresh.array?.first?.array?.dropFirst().first?.array ?? [])
    }

    /// Every Redis command of the worker goes through here, so its cost is counted.
    private func send(_ command: RedisCommand) async throws(RedisClientError) -> RESPValue {
        commands?.increment()
        return try await redis.send(command)
    }
}

/// A usage event the ledger cannot take as it is.
struct MalformedUsageEvent: Error {
    let reason: String
    let requestID: String?
    /// The event as it was written, when the entry holds more than this one.
    var payload: String? = nil
}

extension UsageEntry {
    /// The usage events of one stream entry: one per `usage` field (settle.lua, see
    /// `UsageEventCoding`), or the entry's own fields as one event (sweep.lua, and replicas
    /// older than the encoding).
    static func events(inStreamEntry entry: RESPValue) -> [Result<UsageEntry, MalformedUsageEvent>] {
        guard let parts = entry.array, parts.count == 2, let list = parts[1].array else {
            return [.failure(MalformedUsageEvent(reason: "not a stream entry", requestID: nil))]
        }
        var fields: [String: String] = [:]
        var encoded: [String] = []
        var index = 0
        while index + 1 < list.count {
            if let name = list[index].string, let value = list[index + 1].string {
                if name == UsageEventCoding.field { encoded.append(value) } else { fields[name] = value }
            }
            index += 2
        }
        func row(_ fields: [String: String], payload: String?) -> Result<UsageEntry, MalformedUsageEvent> {
            do throws(MalformedUsageEvent) {
                return .success(try UsageEntry(fields: fields))
            } catch {
                var malformed = error
                malformed.payload = payload
                return .failure(malformed)
            }
        }
        guard !encoded.isEmpty else { return [row(fields, payload: nil)] }
        let time = fields[UsageEventCoding.timeField]
        return encoded.map { text in
            guard var event = UsageEventCoding.decode(text) else {
                return .failure(MalformedUsageEvent(reason: "not an encoded usage event", requestID: nil, payload: text))
            }
            if event[UsageEventCoding.timeField] == nil { event[UsageEventCoding.timeField] = time }
            return row(event, payload: text)
        }
    }

    /// One usage event's fields. Counts are clamped to the ledger's range, so a replica that
    /// wrote nonsense cannot make PostgreSQL refuse the batch.
    init(fields: [String: String]) throws(MalformedUsageEvent) {
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
        let cached = min(try count(Field.cachedPromptTokens, limit: 1_000_000_000), prompt)
        let source = fields[Field.usageSource] == "estimated" ? "estimated" : "backend"
        self.init(requestID: requestID, tenantID: tenant, keyID: keyID, model: model, promptTokens: prompt,
                  completionTokens: completion, costMicroUSD: cost,
                  at: Date(timeIntervalSince1970: (Double(fields[UsageEventCoding.timeField] ?? "") ?? 0) / 1_000_000),
                  clientRequestID: fields[Field.clientRequestID], usageSource: source, usageClamped: clamped,
                  priceID: fields[Field.priceID].flatMap { Int64($0) }, cachedPromptTokens: cached)
    }
}

/// A thread that yields to the event loops: nice 10 (a tenth of their share when both want a
/// core), for work that can wait. Linux keeps a nice value per thread, and `who` 0 names the
/// calling thread.
enum BackgroundThread {
    static func lowerPriority() {
        #if os(Linux)
        _ = setpriority(__priority_which_t(PRIO_PROCESS.rawValue), 0, 10)
        #endif
    }
}
