import Foundation
import Logging
import PostgresNIO
import SluiceLimiter
import SluiceRedis
import SluiceTenancy
import SluiceTestSupport
import Testing

/// The ledger is the truth for spend: when Redis loses a tenant's spend, the next admit with a
/// budget rebuilds it from PostgreSQL first (plus the reservations still pending in Redis).
@Suite("Budgets rebuilt from the ledger")
struct BudgetRebuildTests {
    @Test func aFlushedRedisRebuildsSpendFromTheLedgerBeforeAdmitting() async throws {
        try await PostgresFixture.withClient { client, _ in
            let server = try await RedisServerProcess()
            defer { server.stop() }
            // Not a timing test: a loaded machine must not turn a slow first call into a 503.
            var configuration = try RedisConfiguration.patient(url: server.url)
            configuration.commandTimeout = .seconds(5)
            let redis = try RedisClient(configuration: configuration)
            defer { redis.shutdown() }
            let ledger = UsageLedger(client: client, logger: Logger(label: "t"))
            let tenant = UUID()
            let now = Date()
            // Spent this month before Redis knew anything: 600 today on k1, 250 earlier on k2
            // (last month's rows do not count).
            let startOfMonth = Date(timeIntervalSince1970: TimeInterval(SpendPeriod.start(ofMonth: SpendPeriod.today / 100)))
            try await ledger.insert([
                UsageEntry(requestID: UUID().uuidString, tenantID: tenant, keyID: "k1", model: "m", promptTokens: 1,
                           completionTokens: 1, costMicroUSD: 600, at: now),
                UsageEntry(requestID: UUID().uuidString, tenantID: tenant, keyID: "k2", model: "m", promptTokens: 1,
                           completionTokens: 1, costMicroUSD: 250, at: max(startOfMonth, now.addingTimeInterval(-86_400))),
                UsageEntry(requestID: UUID().uuidString, tenantID: tenant, keyID: "k1", model: "m", promptTokens: 1,
                           completionTokens: 1, costMicroUSD: 100_000, at: startOfMonth.addingTimeInterval(-1)),
            ])
            let limits = Limits(monthlyBudgetUSD: 0.001)  // 1000 µUSD
            func admit(_ limiter: Limiter, cost: Int64) async -> AdmitDecision {
                await limiter.admit(AdmitRequest(requestID: UUID().uuidString, tenantID: tenant.uuidString.lowercased(),
                                                 keyID: "k1", model: "m", tokensToReserve: 1, reservedCostMicroUSD: cost,
                                                 tenantLimits: limits))
            }
            let limiter = Limiter(client: redis, spendSource: ledger)
            let denial = await admit(limiter, cost: 200).denial  // 850 + 200 > 1000
            #expect(denial?.budget?.spentMicroUSD == 850)
            let inFlight = try #require(await admit(limiter, cost: 100).admission)  // 950, pending

            // Redis loses everything mid-month; a fresh replica (no memory) admits next.
            _ = try await redis.send("FLUSHALL")
            let fresh = Limiter(client: redis, spendSource: ledger)
            let again = await admit(fresh, cost: 200).denial
            #expect(again?.budget?.spentMicroUSD == 850, "rebuilt from the ledger, not from zero")
            #expect(await admit(fresh, cost: 150).admission != nil)  // 1000
            #expect(await admit(fresh, cost: 1).denial != nil)
            // The admission from before the flush settles without corrupting the rebuilt spend.
            #expect(try await limiter.settle(inFlight, usage: Usage(promptTokens: 1, completionTokens: 1, costMicroUSD: 90))
                == .alreadySettled)
            let spend = try await redis.send("HMGET", "sl:{t:\(tenant.uuidString.lowercased())}:spent", "m|t", "m|k:k1", "m|k:k2")
            #expect(spend.array?.map(\.int) == [1000, 750, 250])
            let day = try await redis.send("HGET", "sl:{t:\(tenant.uuidString.lowercased())}:spent", "d|k:k1")
            #expect(day.int == 750, "today's spend: 600 from the ledger and the 150 reserved since")
        }
    }
}
