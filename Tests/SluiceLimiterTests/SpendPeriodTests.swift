import Foundation
import Testing

@testable import SluiceLimiter

@Suite("Spend periods and the replica's budget memory")
struct SpendPeriodTests {
    @Test func daysAndMonthsMatchTheGregorianCalendar() {
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = TimeZone(identifier: "UTC")!
        // Every day boundary over a span with leap years, a century rule and the epoch.
        for seconds in stride(from: Int64(-86_400 * 800), through: 86_400 * 365 * 140, by: 86_400 * 7 + 3_601) {
            let date = Date(timeIntervalSince1970: TimeInterval(seconds))
            let parts = calendar.dateComponents([.year, .month, .day], from: date)
            let expected = (parts.year! * 100 + parts.month!) * 100 + parts.day!
            #expect(SpendPeriod.day(ofUnixSeconds: seconds) == expected)
            let dayStart = SpendPeriod.start(ofDay: expected)
            #expect(dayStart <= seconds && seconds < dayStart + 86_400)
            let month = expected / 100
            #expect(SpendPeriod.start(ofMonth: month) <= seconds && seconds < SpendPeriod.end(ofMonth: month))
        }
        #expect(SpendPeriod.day(ofUnixSeconds: 951_782_400) == 2000_02_29)
        #expect(SpendPeriod.end(ofMonth: 2026_12) == SpendPeriod.start(ofMonth: 2027_01))
    }

    /// Without Redis, a budget is enforced from the spend Redis last reported plus what this
    /// replica admitted since; a period that ended starts from zero.
    @Test func degradedBudgetsCountFromTheLastKnownSpend() {
        let memory = SpendMemory(capacity: 100)
        let limits = Limits(monthlyBudgetUSD: 0.001, dailyBudgetUSD: 0.0005)  // 1000 and 500 µUSD
        func request(cost: Int64, key: String = "k") -> (AdmitRequest, LimitPlan) {
            let request = AdmitRequest(requestID: UUID().uuidString, tenantID: "t", keyID: key, model: "m", tokensToReserve: 1,
                                       reservedCostMicroUSD: cost, tenantLimits: limits)
            return (request, LimitPlan(for: request, keys: LimiterKeys(tenantID: "t")))
        }
        let today = 2026_11_27
        let (first, plan) = request(cost: 100)
        memory.learn(tenantID: "t", plan.budgets.map { ($0, $0.period == .month ? 850 : 300) }, month: today / 100, day: today)
        #expect(memory.admit(first, plan: plan, today: today) == nil)  // 950 / 400
        let (second, _) = request(cost: 60)
        let denial = memory.admit(second, plan: plan, today: today)    // 1010 > 1000
        #expect(denial?.limit == "tenant_monthly_budget_usd" && denial?.budget?.spentMicroUSD == 950)
        let (third, _) = request(cost: 50)
        #expect(memory.admit(third, plan: plan, today: today) == nil)  // exactly 1000 / 450
        // Next day: the daily budget starts again, the monthly one does not.
        let (fourth, _) = request(cost: 1)
        #expect(memory.admit(fourth, plan: plan, today: today + 1)?.limit == "tenant_monthly_budget_usd")
        // Another tenant's budget is its own.
        let other = AdmitRequest(requestID: "x", tenantID: "u", keyID: "k", model: "m", tokensToReserve: 1,
                                 reservedCostMicroUSD: 400, tenantLimits: limits)
        #expect(memory.admit(other, plan: LimitPlan(for: other, keys: LimiterKeys(tenantID: "u")), today: today) == nil)
    }
}
