@testable import SluiceLimiter

extension RedisLimiterStore {
    struct Undecided: Error {}

    /// Decides a batch as the limiter does, with an empty ledger behind spend hashes that need
    /// seeding (these tests start each tenant from nothing).
    func decide(tenantID: String, _ batch: [AdmitItem]) async throws -> [AdmitDecision] {
        for _ in 0..<3 {
            switch try await admit(tenantID: tenantID, batch) {
            case .unseeded(let month, let day):
                _ = try await seed(tenantID: tenantID, month: month, day: day, sums: SpendSums())
            case .decided(let decisions, _, _, _):
                return decisions.map { $0 ?? .unavailable }
            }
        }
        throw Undecided()
    }

    func admit(_ request: AdmitRequest, plan: LimitPlan) async throws -> AdmitDecision {
        try await decide(tenantID: request.tenantID, [AdmitItem(request: request, plan: plan)])[0]
    }

    /// Seeds the tenant's spend hashes for today with nothing spent.
    func seedEmpty(tenantID: String) async throws {
        let today = SpendPeriod.today
        _ = try await seed(tenantID: tenantID, month: today / 100, day: today, sums: SpendSums())
    }
}
