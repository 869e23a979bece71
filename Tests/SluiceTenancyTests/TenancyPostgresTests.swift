import Foundation
import Logging
import NIOCore
import PostgresNIO
import ServiceLifecycle
import SluiceLimiter
import SluiceRedis
import SluiceTestSupport
import Synchronization
import Testing

@testable import SluiceTenancy

/// Counts the lookups that reach the real PostgreSQL store; can simulate an outage.
final class CountingLookup: KeyLookup {
    let store: TenantStore
    let queries = Atomic<Int>(0)
    let failing = Atomic<Bool>(false)

    init(_ store: TenantStore) { self.store = store }

    func lookupKey(_ keyID: String) async throws -> ResolvedKey? {
        queries.add(1, ordering: .relaxed)
        if failing.load(ordering: .relaxed) { throw TestOutage() }
        return try await store.lookupKey(keyID)
    }

    struct TestOutage: Error {}
}

@Suite("Tenancy against real PostgreSQL and Redis", .serialized)
struct TenancyPostgresTests {
    let hasher = KeyHasher(pepper: "test-pepper")

    private func makeTenant(_ store: TenantStore, limits: Limits = Limits()) async throws -> Tenant {
        try await store.createTenant(name: "tenant \(UUID().uuidString.prefix(8))", limits: limits, modelLimits: [:], actor: "test")
    }

    @Test func migrationsAreIdempotentAndSafeConcurrently() async throws {
        try await PostgresFixture.withClient { client, _ in
            let logger = Logger(label: "test")
            let results = try await withThrowingTaskGroup(of: [Int].self) { group in
                for _ in 0..<3 { group.addTask { try await Migrator(client: client, logger: logger).migrate() } }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            #expect(results.allSatisfy { $0.isEmpty }, "the fixture migrated already; nothing is left to apply")
            let rows = try await client.query("SELECT count(*)::bigint, max(version) FROM schema_migrations", logger: logger)
            for try await (count, version) in rows.decode((Int64, Int).self) {
                #expect(Int(count) == Migrations.all.count && version == Migrations.all.last?.version)
            }
        }
    }

    @Test func keyLifecycleCreateUseRotateExpireRevoke() async throws {
        try await PostgresFixture.withClient { [hasher] client, store in
            let tenant = try await makeTenant(store)
            let (record, plaintext) = try await store.createKey(tenantID: tenant.id, name: "ci", limits: Limits(requestsPerMinute: 5),
                                                                models: ["m1"], expiresAt: nil, hasher: hasher, actor: "test")
            let resolver = KeyResolver(database: store, redis: nil, hasher: hasher)
            guard case .valid(let resolved) = await resolver.authenticate(plaintext) else {
                Issue.record("fresh key refused"); return
            }
            #expect(resolved.tenantID == tenant.id.uuidString.lowercased())
            #expect(resolved.allows(model: "m1") && !resolved.allows(model: "m2"))
            #expect(resolved.keyLimits.requestsPerMinute == 5)

            // The secret is nowhere in the database, only its HMAC.
            let secret = try #require(APIKey(parsing: plaintext)).secret
            let rows = try await client.query("SELECT row_to_json(k)::text FROM api_keys k WHERE id = \(record.id)", logger: Logger(label: "t"))
            for try await json in rows.decode(String.self) {
                #expect(!json.contains(secret))
                #expect(!json.contains(plaintext))
            }

            // A wrong secret with the right id is refused.
            let forged = APIKey(keyID: record.id, secret: APIKey.generate().secret).plaintext
            #expect(await resolver.authenticate(forged) == .rejected(.wrongSecret))

            // Rotate with a grace period: both work now; after the grace only the new one.
            let (newRecord, newPlaintext) = try await store.rotateKey(record.id, grace: .seconds(60), hasher: hasher, actor: "test")
            resolver.invalidate(record.id)
            let afterGrace = Date().addingTimeInterval(61)
            if case .valid = await resolver.authenticate(plaintext) {} else { Issue.record("old key refused during grace") }
            if case .valid = await resolver.authenticate(newPlaintext) {} else { Issue.record("new key refused") }
            #expect(await resolver.authenticate(plaintext, now: afterGrace) == .rejected(.expired))
            if case .valid = await resolver.authenticate(newPlaintext, now: afterGrace) {} else { Issue.record("new key expired") }
            #expect(try await store.key(record.id).replacedBy == newRecord.id)

            // Expiry set at creation.
            let (_, shortLived) = try await store.createKey(tenantID: tenant.id, name: "short", limits: Limits(), models: nil,
                                                            expiresAt: Date().addingTimeInterval(30), hasher: hasher, actor: "test")
            #expect(await resolver.authenticate(shortLived, now: Date().addingTimeInterval(31)) == .rejected(.expired))

            // Revoke.
            _ = try await store.revokeKey(newRecord.id, actor: "test")
            resolver.invalidate(newRecord.id)
            #expect(await resolver.authenticate(newPlaintext) == .rejected(.revoked))

            // Unknown ids and malformed keys.
            #expect(await resolver.authenticate(APIKey.generate().plaintext) == .rejected(.unknown))
            #expect(await resolver.authenticate("slk_nonsense") == .rejected(.malformed))

            // Every change is in the audit log with its actor.
            let audit = try await client.query("SELECT action FROM audit_log WHERE tenant_id = \(tenant.id) ORDER BY id", logger: Logger(label: "t"))
            var actions: [String] = []
            for try await action in audit.decode(String.self) { actions.append(action) }
            #expect(actions == ["tenant.create", "key.create", "key.rotate", "key.create", "key.revoke"])
        }
    }

    @Test func aThousandConcurrentLookupsOfAnUncachedKeyMakeOneQuery() async throws {
        try await PostgresFixture.withClient { [hasher] _, store in
            let tenant = try await makeTenant(store)
            let (_, plaintext) = try await store.createKey(tenantID: tenant.id, name: "herd", limits: Limits(), models: nil,
                                                           expiresAt: nil, hasher: hasher, actor: "test")
            let redis = try RedisClient(configuration: RedisConfiguration.patient(url: TestEnvironment.redisURL))
            for presented in [plaintext, APIKey.generate().plaintext] {  // a real key, then an unknown one
                let lookup = CountingLookup(store)
                let resolver = KeyResolver(database: lookup, redis: redis, hasher: hasher)
                let results = await withTaskGroup(of: KeyAuthentication.self) { group in
                    for _ in 0..<1_000 { group.addTask { await resolver.authenticate(presented) } }
                    return await group.reduce(into: []) { $0.append($1) }
                }
                #expect(Set(results.map { if case .valid = $0 { "valid" } else { "\($0)" } }).count == 1)
                #expect(lookup.queries.load(ordering: .relaxed) == 1)
            }
            redis.shutdown()
        }
    }

    @Test func redisDownFallsThroughAndDatabaseDownKeepsCachedKeys() async throws {
        try await PostgresFixture.withClient { [hasher] _, store in
            let tenant = try await makeTenant(store)
            let (_, plaintext) = try await store.createKey(tenantID: tenant.id, name: "outage", limits: Limits(), models: nil,
                                                           expiresAt: nil, hasher: hasher, actor: "test")
            // Redis unreachable: PostgreSQL answers.
            let deadRedis = try RedisClient(configuration: RedisConfiguration.patient(port: try await RedisServerProcess.freePort()))
            var settings = KeyResolverSettings()
            settings.memoryTTL = .zero  // every call goes past memory to the stores
            let lookup = CountingLookup(store)
            let resolver = KeyResolver(database: lookup, redis: deadRedis, hasher: hasher, settings: settings)
            if case .valid = await resolver.authenticate(plaintext) {} else { Issue.record("refused with Redis down") }

            // PostgreSQL unreachable too: the stale memory copy keeps the key working.
            lookup.failing.store(true, ordering: .relaxed)
            if case .valid = await resolver.authenticate(plaintext) {} else { Issue.record("cached key refused with stores down") }
            // An uncached key cannot be checked: refused as unavailable, not as unknown.
            #expect(await resolver.authenticate(APIKey.generate().plaintext) == .rejected(.unavailable))

            // A replica with a dead database but a warm Redis cache still resolves.
            let redis = try RedisClient(configuration: RedisConfiguration.patient(url: TestEnvironment.redisURL))
            let warm = KeyResolver(database: store, redis: redis, hasher: hasher)
            _ = await warm.authenticate(plaintext)
            let failingLookup = CountingLookup(store)
            failingLookup.failing.store(true, ordering: .relaxed)
            let cold = KeyResolver(database: failingLookup, redis: redis, hasher: hasher)
            if case .valid = await cold.authenticate(plaintext) {} else { Issue.record("Redis tier did not answer") }
            #expect(failingLookup.queries.load(ordering: .relaxed) == 0)
            deadRedis.shutdown()
            redis.shutdown()
        }
    }

    @Test func revocationReachesEveryReplicaWithinOneSecond() async throws {
        try await PostgresFixture.withClient { [hasher] _, store in
            let tenant = try await makeTenant(store)
            let (record, plaintext) = try await store.createKey(tenantID: tenant.id, name: "fleet", limits: Limits(), models: nil,
                                                                expiresAt: nil, hasher: hasher, actor: "test")
            var settings = KeyResolverSettings()
            settings.invalidationChannel = "sl:keys:invalidate:test:\(UUID().uuidString)"
            let channel = settings.invalidationChannel
            let redis = try RedisClient(configuration: RedisConfiguration.patient(url: TestEnvironment.redisURL))
            let replicas = try (0..<3).map { _ in
                KeyResolver(database: store, redis: try RedisClient(configuration: RedisConfiguration.patient(url: TestEnvironment.redisURL)),
                            hasher: hasher, settings: settings)
            }
            try await withThrowingTaskGroup(of: Void.self) { group in
                for replica in replicas {
                    let subscriber = RedisSubscriber(client: redis, channels: [channel])
                    group.addTask { try await subscriber.run() }
                    group.addTask { await replica.followInvalidations(subscriber.events) }
                }
                // Wait until all three are subscribed (the server's count is the signal).
                for _ in 0..<500 {
                    let counts = try await redis.send("PUBSUB", "NUMSUB", channel)
                    if counts.array?.last?.int == 3 { break }
                    try await Task.sleep(for: .milliseconds(5))
                }
                for replica in replicas {
                    if case .valid = await replica.authenticate(plaintext) {} else { Issue.record("replica refused a good key") }
                }

                // From the revocation's commit: every replica refuses the key within a second.
                _ = try await store.revokeKey(record.id, actor: "test")
                let clock = ContinuousClock()
                let revokedAt = clock.now
                await KeyResolver.publishInvalidation([record.id], redis: redis, channel: channel, logger: Logger(label: "t"))
                for replica in replicas {
                    while await replica.authenticate(plaintext) != .rejected(.revoked), clock.now - revokedAt < .seconds(1) {
                        try await Task.sleep(for: .milliseconds(5))
                    }
                }
                #expect(clock.now - revokedAt < .seconds(1), "not every replica refused the key within a second")
                for replica in replicas { #expect(await replica.authenticate(plaintext) == .rejected(.revoked)) }
                group.cancelAll()
            }
            redis.shutdown()
        }
    }

    /// The fallback writer is idempotent with the stream path (same request id counts once) and
    /// bounded: rows beyond its capacity are dropped, not queued without limit.
    @Test func ledgerFallbackIsIdempotentAndBounded() async throws {
        try await PostgresFixture.withClient { client, _ in
            let tenant = UUID()
            let rows = (0..<3).map { index in
                UsageEntry(requestID: "fallback-\(UUID().uuidString)", tenantID: tenant, keyID: "k\(index)", model: "m",
                         promptTokens: 1, completionTokens: index, costMicroUSD: 0, at: Date())
            }
            let ledger = UsageLedger(client: client, logger: Logger(label: "t"))
            try await ledger.insert([rows[0]])  // as if the stream path had already ledgered it

            let writer = LedgerFallbackWriter(ledger: ledger, logger: Logger(label: "t"), capacity: 2)
            for row in rows { writer.record(row) }
            #expect(writer.counts == (pending: 2, written: 0, dropped: 1))
            await writer.flush()
            #expect(writer.counts == (pending: 0, written: 2, dropped: 1))

            var stored: [Int] = []
            for try await tokens in try await client.query(
                "SELECT completion_tokens FROM usage_ledger WHERE tenant_id = \(tenant) ORDER BY completion_tokens",
                logger: Logger(label: "t")).decode(Int.self) {
                stored.append(tokens)
            }
            #expect(stored == [0, 1], "row 0 once, row 1 written, row 2 dropped at capacity")
        }
    }

    /// With Redis and PostgreSQL both down, a cached key works for the stale window only: a key
    /// revoked meanwhile stops working once the window has passed.
    @Test func theStaleWindowBoundsAKeyRevokedWhileBothStoresAreDown() async throws {
        #expect(KeyResolverSettings().staleTTL == .seconds(60), "the documented default")
        try await PostgresFixture.withClient { [hasher] _, store in
            let tenant = try await makeTenant(store)
            let (record, plaintext) = try await store.createKey(tenantID: tenant.id, name: "stale", limits: Limits(), models: nil,
                                                                expiresAt: nil, hasher: hasher, actor: "test")
            let deadRedis = try RedisClient(configuration: RedisConfiguration.patient(port: try await RedisServerProcess.freePort()))
            defer { deadRedis.shutdown() }
            var settings = KeyResolverSettings()
            settings.memoryTTL = .zero
            settings.staleTTL = .milliseconds(800)
            let lookup = CountingLookup(store)
            let resolver = KeyResolver(database: lookup, redis: deadRedis, hasher: hasher, settings: settings)
            if case .valid = await resolver.authenticate(plaintext) {} else { Issue.record("refused while PostgreSQL answers") }
            let cached = ContinuousClock.now

            _ = try await store.revokeKey(record.id, actor: "test")
            lookup.failing.store(true, ordering: .relaxed)
            if case .valid = await resolver.authenticate(plaintext) {} else { Issue.record("the stale window did not apply") }
            // Time itself is what is tested here: wait out the window.
            try await Task.sleep(until: cached + .milliseconds(900))
            #expect(await resolver.authenticate(plaintext) == .rejected(.unavailable), "a stale key outlived its window")
        }
    }

    /// One row PostgreSQL refuses (a count out of the column's range) goes to the dead-letter
    /// table with the reason; the rest of the batch is ledgered. The same server request id
    /// under two tenants is two rows.
    @Test func aRefusedRowIsDeadLetteredAndTheBatchProceeds() async throws {
        try await PostgresFixture.withClient { client, _ in
            let tenant = UUID()
            let otherTenant = UUID()
            let shared = "shared-\(UUID().uuidString)"
            var poison = UsageEntry(requestID: "poison-\(UUID().uuidString)", tenantID: tenant, keyID: "k", model: "m",
                                    promptTokens: 1, completionTokens: 1, costMicroUSD: 0, at: Date())
            poison.promptTokens = 3_000_000_000  // beyond integer: PostgreSQL refuses the batch
            let rows = [
                UsageEntry(requestID: shared, tenantID: tenant, keyID: "k", model: "m", promptTokens: 1, completionTokens: 2,
                           costMicroUSD: 0, at: Date(), clientRequestID: "c1", usageSource: "estimated", usageClamped: true),
                poison,
                UsageEntry(requestID: shared, tenantID: otherTenant, keyID: "k", model: "m", promptTokens: 1, completionTokens: 3,
                           costMicroUSD: 0, at: Date()),
            ]
            let ledger = UsageLedger(client: client, logger: Logger(label: "t"))
            try await ledger.insert(rows)
            try await ledger.insert(rows)  // again: nothing doubles

            var stored: [Int] = []
            for try await tokens in try await client.query(
                "SELECT completion_tokens FROM usage_ledger WHERE tenant_id IN (\(tenant), \(otherTenant)) ORDER BY completion_tokens",
                logger: Logger(label: "t")).decode(Int.self) {
                stored.append(tokens)
            }
            #expect(stored == [2, 3])
            var reasons: [String] = []
            for try await reason in try await client.query(
                "SELECT reason FROM usage_dead_letter WHERE request_id = \(poison.requestID)", logger: Logger(label: "t"))
                .decode(String.self) {
                reasons.append(reason)
            }
            #expect(reasons.count == 2 && reasons.allSatisfy { $0.contains("out of range") }, "\(reasons)")
        }
    }

    /// Migrations 2 and 3 re-key the ledger by (tenant, request id) and partition it by month
    /// without losing a row written under migration 1; afterwards a repeated id is still ignored.
    @Test func theLedgerMigrationKeepsExistingRows() async throws {
        try await Self.withScratchDatabase { scratch in
            let migrator = Migrator(client: scratch, logger: Logger(label: "t"))
            #expect(try await migrator.migrate(upTo: 1) == [1])
            let tenant = UUID()
            _ = try await scratch.query("""
                INSERT INTO usage_ledger (request_id, tenant_id, key_id, model, prompt_tokens, completion_tokens, cost_micro_usd, at)
                VALUES ('old-1', \(tenant), 'k', 'm', 5, 6, 7, now()), ('old-2', \(tenant), 'k', 'm', 1, 1, 1, now())
                """, logger: Logger(label: "t"))
            _ = try await scratch.query("""
                INSERT INTO model_prices (model, effective_from, input_usd_per_million, output_usd_per_million)
                VALUES ('m', '2026-01-01T00:00:00Z', 0.15, 0.6)
                """, logger: Logger(label: "t"))
            #expect(try await migrator.migrate() == [2, 3, 4, 5, 6, 7])
            // Migration 4: USD per million (numeric) became whole micro-USD, cached input at the input price.
            for try await (id, input, cached, output) in try await scratch.query("""
                SELECT id, input_micro_usd_per_million, cached_input_micro_usd_per_million, output_micro_usd_per_million
                FROM model_prices WHERE model = 'm'
                """, logger: Logger(label: "t")).decode((Int64, Int64, Int64, Int64).self) {
                #expect(id > 0 && input == 150_000 && cached == 150_000 && output == 600_000)
            }
            var kept: [String] = []
            for try await (id, source) in try await scratch.query(
                "SELECT request_id, usage_source FROM usage_ledger WHERE tenant_id = \(tenant) ORDER BY request_id",
                logger: Logger(label: "t")).decode((String, String).self) {
                kept.append("\(id):\(source)")
            }
            #expect(kept == ["old-1:backend", "old-2:backend"])
            // The same id again is ignored; under another tenant it is a new row.
            let ledger = UsageLedger(client: scratch, logger: Logger(label: "t"))
            let other = UUID()
            try await ledger.insert([
                UsageEntry(requestID: "old-1", tenantID: tenant, keyID: "k", model: "m", promptTokens: 9, completionTokens: 9,
                           costMicroUSD: 9, at: Date(timeIntervalSinceNow: -40 * 86_400)),
                UsageEntry(requestID: "old-1", tenantID: other, keyID: "k", model: "m", promptTokens: 1, completionTokens: 1,
                           costMicroUSD: 1, at: Date()),
            ])
            var counts: [Int] = []
            for owner in [tenant, other] {
                for try await count in try await scratch.query("SELECT count(*)::int8 FROM usage_ledger WHERE tenant_id = \(owner)",
                                                               logger: Logger(label: "t")).decode(Int.self) {
                    counts.append(count)
                }
            }
            #expect(counts == [2, 1])
            // Rows live in their month's partition.
            for try await partition in try await scratch.query(
                "SELECT tableoid::regclass::text FROM usage_ledger WHERE tenant_id = \(other)", logger: Logger(label: "t"))
                .decode(String.self) {
                #expect(partition.hasPrefix("usage_ledger_2"), "\(partition)")
            }
        }
    }

    /// Retention drops whole months with their request ids; the current month stays.
    @Test func retentionDropsOldMonthsWithTheirRequestIDs() async throws {
        try await Self.withScratchDatabase { scratch in
            try await Migrator(client: scratch, logger: Logger(label: "t")).migrate()
            let ledger = UsageLedger(client: scratch, logger: Logger(label: "t"))
            _ = try await scratch.query("SELECT sluice_ledger_partitions(now() - interval '6 months', now())", logger: Logger(label: "t"))
            let tenant = UUID()
            try await ledger.insert([
                UsageEntry(requestID: "old", tenantID: tenant, keyID: "k", model: "m", promptTokens: 1, completionTokens: 1,
                           costMicroUSD: 1, at: Date(timeIntervalSinceNow: -150 * 86_400)),
                UsageEntry(requestID: "new", tenantID: tenant, keyID: "k", model: "m", promptTokens: 1, completionTokens: 1,
                           costMicroUSD: 1, at: Date()),
            ])
            let dropped = try await LedgerPartitions(client: scratch, logger: Logger(label: "t"), retentionMonths: 2).maintain()
            #expect(dropped.count >= 3, "\(dropped)")
            var left: [String] = []
            for try await id in try await scratch.query("SELECT request_id FROM usage_ledger ORDER BY 1", logger: Logger(label: "t"))
                .decode(String.self) {
                left.append(id)
            }
            var ids: [String] = []
            for try await id in try await scratch.query("SELECT request_id FROM usage_request_ids ORDER BY 1", logger: Logger(label: "t"))
                .decode(String.self) {
                ids.append(id)
            }
            #expect(left == ["new"] && ids == ["new"])
        }
    }

    /// A database of its own, dropped afterwards (migration and retention tests reshape tables).
    static func withScratchDatabase(_ body: @Sendable (PostgresClient) async throws -> Void) async throws {
        let database = "sluice_scratch_\(UUID().uuidString.prefix(8).lowercased())"
        try await PostgresFixture.withClient { client, _ in
            _ = try await client.query(PostgresQuery(unsafeSQL: "CREATE DATABASE \(database)"), logger: Logger(label: "t"))
        }
        var url = TestEnvironment.databaseURL
        url = String(url[..<url.lastIndex(of: "/")!]) + "/" + database
        let scratch = PostgresClient(configuration: try DatabaseURL.configuration(url), backgroundLogger: Logger(label: "t"))
        do {
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { await scratch.run() }
                defer { group.cancelAll() }
                try await body(scratch)
            }
        } catch {
            try? await Self.drop(database)
            throw error
        }
        try await Self.drop(database)
    }

    private static func drop(_ database: String) async throws {
        try await PostgresFixture.withClient { client, _ in
            _ = try await client.query(PostgresQuery(unsafeSQL: "DROP DATABASE \(database) WITH (FORCE)"), logger: Logger(label: "t"))
        }
    }

    /// Invalidating several keys drops each one's Redis copy (one DEL per key: on a cluster the
    /// keys live in different slots, where a multi-key DEL fails).
    @Test func invalidatingSeveralKeysDropsEveryCachedCopy() async throws {
        let redis = try RedisClient(configuration: RedisConfiguration.patient(url: TestEnvironment.redisURL))
        defer { redis.shutdown() }
        let ids = (0..<3).map { _ in "inv" + UUID().uuidString.prefix(8) }
        for id in ids { _ = try await redis.send(RedisCommand("SET", KeyResolver.cacheKey(id), "cached", "PX", 60_000)) }
        await KeyResolver.publishInvalidation(ids, redis: redis, channel: "sl:test:" + UUID().uuidString, logger: Logger(label: "t"))
        for id in ids {
            #expect(try await redis.send(RedisCommand("EXISTS", KeyResolver.cacheKey(id))) == .integer(0), "\(id)")
        }
    }
}

