import Foundation
import SluiceRedis
import Testing

@testable import SluiceLimiter

/// Budgets reserve each request's largest cost at admission, atomically with the other limits,
/// so requests in flight together cannot pass a budget; settle books the real cost.
@Suite("Budgets against a real Redis")
struct BudgetTests {
    /// Four replicas (limiters with their own connections), 200 requests in flight at once, each
    /// reserving 70 µUSD against a key's daily budget of 1,000 µUSD: exactly 14 are admitted. Each
    /// then costs 50 (its estimate was high): the refunds let 5 more in, and no more.
    @Test(arguments: RedisTarget.allCases) func manyRequestsInFlightCannotPassASmallBudget(target: RedisTarget) async throws {
        let replicas = try (0..<4).map { _ in try LimiterFixture(target: target) }
        let tenant = replicas[0].tenant
        let limits = Limits(dailyBudgetUSD: 0.001)
        func request() -> AdmitRequest {
            AdmitRequest(requestID: UUID().uuidString, tenantID: tenant, keyID: "k1", model: "m1", tokensToReserve: 10,
                         reservedCostMicroUSD: 70, keyLimits: limits)
        }
        func burst(_ count: Int, _ limiters: [Limiter]) async -> [AdmitDecision] {
            await withTaskGroup(of: AdmitDecision.self) { group in
                for index in 0..<count { group.addTask { await limiters[index % 4].admit(request()) } }
                return await group.reduce(into: []) { $0.append($1) }
            }
        }
        let first = await burst(200, replicas.map(\.limiter))
        let admitted = first.compactMap(\.admission)
        #expect(admitted.count == 14, "1000 / 70 = 14 reservations fit")
        let denials = first.compactMap(\.denial)
        #expect(denials.count == 186 && denials.allSatisfy { $0.reason == .budgetExhausted && $0.limit == "key_daily_budget_usd" })
        #expect(denials.allSatisfy { $0.fromCache || ($0.budget.map { $0.spentMicroUSD + 70 > $0.limitMicroUSD } ?? false) })

        for (index, admission) in admitted.enumerated() {
            _ = try await replicas[index % 4].limiter.settle(admission, usage: Usage(promptTokens: 5, completionTokens: 5, costMicroUSD: 50))
        }
        // 14 × 50 = 700 spent: 300 left, room for 4 more reservations of 70 (980), not 5.
        // Fresh replicas: the first ones' deny caches may hold the spent budget for up to 5 s.
        let second = await burst(40, replicas.map { Limiter(client: $0.client) })
        #expect(second.compactMap(\.admission).count == 4)
        let spend = try await replicas[0].client.send("HMGET", "sl:{t:\(tenant)}:spent", "d|k:k1", "d|t", "d|m:m1")
        #expect(spend.array?.map(\.int) == [980, 980, 980])
    }

    /// The three levels and both periods are separate budgets; the tightest one decides and is named.
    @Test func eachLevelIsItsOwnBudget() async throws {
        let fixture = try LimiterFixture()
        func admit(key: String, model: String, cost: Int64) async -> AdmitDecision {
            await fixture.limiter.admit(AdmitRequest(
                requestID: UUID().uuidString, tenantID: fixture.tenant, keyID: key, model: model, tokensToReserve: 1,
                reservedCostMicroUSD: cost, tenantLimits: Limits(monthlyBudgetUSD: 0.0005),
                keyLimits: key == "k1" ? Limits(dailyBudgetUSD: 0.0001) : .none,
                modelLimits: model == "dear" ? Limits(monthlyBudgetUSD: 0.0002) : .none))
        }
        #expect(await admit(key: "k1", model: "m", cost: 100).admission != nil)
        #expect(await admit(key: "k1", model: "m", cost: 1).denial?.limit == "key_daily_budget_usd")
        #expect(await admit(key: "k2", model: "dear", cost: 150).admission != nil)
        #expect(await admit(key: "k2", model: "dear", cost: 60).denial?.limit == "model_monthly_budget_usd")
        #expect(await admit(key: "k2", model: "m", cost: 250).admission != nil)   // tenant: 500 of 500
        let denial = await admit(key: "k3", model: "m", cost: 1).denial
        #expect(denial?.limit == "tenant_monthly_budget_usd")
        #expect(denial?.budget?.spentMicroUSD == 500 && denial?.budget?.limitMicroUSD == 500)
        #expect(denial.map { $0.retryAfter > .seconds(1) } == true, "spent in full: retry when the month ends")
    }

    /// A request's real cost may pass its reservation only by what its prompt estimate missed:
    /// the overshoot of a budget is at most that, summed over the requests in flight.
    @Test func overshootIsBoundedByTheEstimatesError() async throws {
        let fixture = try LimiterFixture()
        let limits = Limits(monthlyBudgetUSD: 0.001)
        let request = AdmitRequest(requestID: UUID().uuidString, tenantID: fixture.tenant, keyID: "k1", model: "m1",
                                   tokensToReserve: 10, reservedCostMicroUSD: 900, tenantLimits: limits)
        let admission = try #require(await fixture.limiter.admit(request).admission)
        _ = try await fixture.limiter.settle(admission, usage: Usage(promptTokens: 20, completionTokens: 0, costMicroUSD: 1_030))
        let spend = try await fixture.client.send("HGET", "sl:{t:\(fixture.tenant)}:spent", "m|t")
        #expect(spend.int == 1_030, "booked as it cost: 30 over the budget, the estimate's error")
        let denial = await fixture.limiter.admit(request).denial
        #expect(denial?.reason == .budgetExhausted)
    }
}
