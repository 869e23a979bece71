import Foundation
import Logging
import PostgresNIO
import SluiceLimiter
import SluiceRedis
import SluiceTenancy
import SluiceTestSupport
import Testing

@testable import SluiceServer

/// The metering worker against the stack's Redis and PostgreSQL.
@Suite("Metering worker")
struct MeteringWorkerTests {
    static func worker(_ redis: RedisClient, _ client: PostgresClient, limiter: Limiter? = nil,
                       consumer: String = "test") -> MeteringWorker {
        MeteringWorker(redis: redis, limiter: limiter ?? Limiter(client: redis), postgres: client,
                       ledger: UsageLedger(client: client, logger: Logger(label: "t")), consumer: consumer, logger: Logger(label: "t"))
    }

    /// A usage event the ledger cannot take never stalls the stream: it goes to the dead-letter
    /// table with the reason, its neighbours reach the ledger, and all are acknowledged. The
    /// entries are in the legacy stream, one event each, as replicas before the batched entries
    /// wrote them: a drain that claims reads that stream too.
    @Test func aMalformedUsageEventIsDeadLetteredAndTheRestIsLedgered() async throws {
        try await PostgresFixture.withClient { client, _ in
            let redis = try RedisClient(configuration: RedisConfiguration.patient(url: TestEnvironment.redisURL))
            defer { redis.shutdown() }
            let tenant = UUID().uuidString.lowercased()
            let stream = LimiterKeys(tenantID: tenant).legacyUsageStream
            func add(_ fields: [String]) async throws {
                _ = try await redis.send(RedisCommand("XADD", [stream, "*"] + fields))
            }
            try await add(["request_id", "good-1", "tenant_id", tenant, "key_id", "k", "model", "m",
                           "prompt_tokens", "3", "completion_tokens", "4", "cost_micro_usd", "5", "ts_us", "1795780000000000"])
            try await add(["request_id", "bad-1", "tenant_id", tenant, "key_id", "k", "model", "m",
                           "prompt_tokens", "lots", "completion_tokens", "4"])
            try await add(["request_id", "huge-1", "tenant_id", tenant, "key_id", "k", "model", "m",
                           "prompt_tokens", "99999999999", "completion_tokens", "-5", "cost_micro_usd", "1"])
            _ = try await redis.send(RedisCommand("PEXPIRE", stream, 60_000))
            _ = try await redis.send(RedisCommand("XGROUP", "CREATE", stream, MeteringWorker.group, "0"))
            let worker = Self.worker(redis, client)
            try await worker.drain(tenant)

            var ledgered: [String] = []
            for try await (id, prompt, completion, clamped) in try await client.query(
                "SELECT request_id, prompt_tokens, completion_tokens, usage_clamped FROM usage_ledger WHERE tenant_id = \(UUID(uuidString: tenant)!) ORDER BY request_id",
                logger: Logger(label: "t")).decode((String, Int, Int, Bool).self) {
                ledgered.append("\(id) \(prompt) \(completion) \(clamped)")
            }
            #expect(ledgered == ["good-1 3 4 false", "huge-1 1000000000 0 true"])
            var dead: [String] = []
            for try await reason in try await client.query(
                "SELECT reason FROM usage_dead_letter WHERE tenant_id = \(tenant)", logger: Logger(label: "t")).decode(String.self) {
                dead.append(reason)
            }
            #expect(dead == ["prompt_tokens is not an integer"])
            let pending = try await redis.send(RedisCommand("XPENDING", stream, MeteringWorker.group))
            #expect(pending.array?.first?.int == 0, "every entry is acknowledged")
        }
    }

    /// settle.lua's entries: one per settle call, one encoded event per request. Each event is
    /// ledgered or dead-lettered on its own, at the entry's time; a value holding `&` and `=`
    /// stays one value and cannot forge another field.
    @Test func eachEncodedEventOfAnEntryIsLedgeredOnItsOwn() async throws {
        try await PostgresFixture.withClient { client, _ in
            let redis = try RedisClient(configuration: RedisConfiguration.patient(url: TestEnvironment.redisURL))
            defer { redis.shutdown() }
            let tenant = UUID().uuidString.lowercased()
            let stream = LimiterKeys(tenantID: tenant).usageStream
            func event(_ id: String, prompt: String, clientID: String = "c") -> String {
                UsageEventCoding.encode([("request_id", id), ("tenant_id", tenant), ("key_id", "k"), ("model", "m"),
                                         ("prompt_tokens", prompt), ("completion_tokens", "4"), ("cost_micro_usd", "700"),
                                         ("client_request_id", clientID)])
            }
            _ = try await redis.send(RedisCommand("XADD", [stream, "*", UsageEventCoding.timeField, "1795780000000000",
                                                           "usage", event("enc-1", prompt: "3", clientID: "x&cost_micro_usd=0"),
                                                           "usage", "request_id=enc-bad&prompt_tokens=%zz",
                                                           "usage", event("enc-2", prompt: "lots"),
                                                           "usage", event("enc-3", prompt: "5")]))
            _ = try await redis.send(RedisCommand("PEXPIRE", stream, 60_000))
            _ = try await redis.send(RedisCommand("XGROUP", "CREATE", stream, MeteringWorker.group, "0"))
            let worker = Self.worker(redis, client)
            try await worker.drain(tenant)

            var ledgered: [String] = []
            for try await (id, prompt, cost, clientID, at) in try await client.query(
                "SELECT request_id, prompt_tokens, cost_micro_usd, client_request_id, extract(epoch FROM at)::int8 FROM usage_ledger WHERE tenant_id = \(UUID(uuidString: tenant)!) ORDER BY request_id",
                logger: Logger(label: "t")).decode((String, Int, Int, String?, Int).self) {
                ledgered.append("\(id) \(prompt) \(cost) \(clientID ?? "-") \(at)")
            }
            #expect(ledgered == ["enc-1 3 700 x&cost_micro_usd=0 1795780000", "enc-3 5 700 c 1795780000"])
            var dead: [String] = []
            for try await (reason, payload) in try await client.query(
                "SELECT reason, payload FROM usage_dead_letter WHERE tenant_id = \(tenant) ORDER BY reason",
                logger: Logger(label: "t")).decode((String, String).self) {
                dead.append("\(reason): \(payload.prefix { $0 != "&" })")
            }
            #expect(dead == ["not an encoded usage event: request_id=enc-bad", "prompt_tokens is not an integer: request_id=enc-2"])
            let pending = try await redis.send(RedisCommand("XPENDING", stream, MeteringWorker.group))
            #expect(pending.array?.first?.int == 0, "the entry is acknowledged")
        }
    }

    /// A tenant writing faster than one read per pass takes (`batch` entries): passes follow one
    /// another until it has caught up, instead of one batch per interval (at which pace a busy
    /// tenant's ledger would fall ever further behind).
    @Test func aBusyTenantIsDrainedWithoutWaitingAnIntervalPerBatch() async throws {
        try await PostgresFixture.withClient { client, _ in
            let redis = try RedisClient(configuration: RedisConfiguration.patient(url: TestEnvironment.redisURL))
            defer { redis.shutdown() }
            // Not in the tenants table: the metering workers of other tests' gateways, which read
            // every tenant of the shared database, never touch this stream; only this worker,
            // told by its limiter that the tenant is busy, reads it.
            let tenant = UUID()
            let tenantID = tenant.uuidString.lowercased()
            let stream = LimiterKeys(tenantID: tenantID).usageStream
            for entry in 0..<12 {
                let events = (0..<2).flatMap { index in
                    ["usage", UsageEventCoding.encode([("request_id", "busy-\(entry)-\(index)"), ("tenant_id", tenantID),
                                                       ("key_id", "k"), ("model", "m"), ("prompt_tokens", "1"),
                                                       ("completion_tokens", "1"), ("cost_micro_usd", "1")])]
                }
                _ = try await redis.send(RedisCommand("XADD", [stream, "*", UsageEventCoding.timeField, "1795780000000000"] + events))
            }
            _ = try await redis.send(RedisCommand("PEXPIRE", stream, 60_000))
            _ = try await redis.send(RedisCommand("XGROUP", "CREATE", stream, MeteringWorker.group, "0"))
            let limiter = Limiter(client: redis)
            // A replica serving the tenant marks it active with every request it admits.
            let serving = Task {
                while !Task.isCancelled {
                    limiter.activity.mark(tenantID)
                    try? await Task.sleep(for: .milliseconds(5))
                }
            }
            defer { serving.cancel() }
            var worker = Self.worker(redis, client, limiter: limiter, consumer: "busy-test")
            worker.batch = 2
            // One batch per interval would take 30 s here (12 entries, 2 a pass, 5 s apart), so
            // the old pacing fails the 20 s below. Not longer: under the full suite a catch-up
            // pass now and then misses the tenant (seen twice, not explained yet), and the next
            // interval's pass resumes.
            worker.interval = .seconds(5)
            let running = Task { [worker] in try await worker.run() }
            defer { running.cancel() }
            let deadline = ContinuousClock.now + .seconds(20)
            var rows = 0
            while rows < 24, ContinuousClock.now < deadline {
                for try await count in try await client.query(
                    "SELECT count(*)::int8 FROM usage_ledger WHERE tenant_id = \(tenant)", logger: Logger(label: "t")).decode(Int.self) {
                    rows = count
                }
                if rows < 24 { try await Task.sleep(for: .milliseconds(100)) }  // polling the ledger, the only signal
            }
            #expect(rows == 24, "\(rows) of 24 events ledgered")
        }
    }

    /// Entries this consumer read but never acknowledged (its last drain failed after the read)
    /// are ledgered by the next drain that recovers: within seconds, not after the claim time.
    @Test func entriesReadButNotAcknowledgedAreRecoveredByTheirConsumer() async throws {
        try await PostgresFixture.withClient { client, _ in
            let redis = try RedisClient(configuration: RedisConfiguration.patient(url: TestEnvironment.redisURL))
            defer { redis.shutdown() }
            let tenant = UUID().uuidString.lowercased()
            let stream = LimiterKeys(tenantID: tenant).usageStream
            _ = try await redis.send(RedisCommand("XADD", [stream, "*", "request_id", "read-1", "tenant_id", tenant, "key_id", "k",
                                                           "model", "m", "prompt_tokens", "1", "completion_tokens", "2",
                                                           "cost_micro_usd", "3", "ts_us", "1795780000000000"]))
            _ = try await redis.send(RedisCommand("PEXPIRE", stream, 60_000))
            _ = try await redis.send(RedisCommand("XGROUP", "CREATE", stream, MeteringWorker.group, "0"))
            // Delivered to the worker's consumer, then the worker "failed" before acknowledging.
            _ = try await redis.send(RedisCommand("XREADGROUP", "GROUP", MeteringWorker.group, "test", "COUNT", 10,
                                                  "STREAMS", stream, ">"))
            let worker = Self.worker(redis, client)
            func rows() async throws -> Int {
                for try await count in try await client.query(
                    "SELECT count(*)::int8 FROM usage_ledger WHERE tenant_id = \(UUID(uuidString: tenant)!)",
                    logger: Logger(label: "t")).decode(Int.self) {
                    return count
                }
                return 0
            }
            try await worker.drain(tenant, claim: false, recover: false)
            #expect(try await rows() == 0, "a plain read sees only new entries")
            try await worker.drain(tenant, claim: false, recover: true)
            #expect(try await rows() == 1)
            let pending = try await redis.send(RedisCommand("XPENDING", stream, MeteringWorker.group))
            #expect(pending.array?.first?.int == 0)
        }
    }
}
