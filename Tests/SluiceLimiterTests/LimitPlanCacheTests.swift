import Testing

@testable import SluiceLimiter

/// Plans are shared by the requests of one key, and never outlive the limits they were made from.
@Suite("Limit plan cache")
struct LimitPlanCacheTests {
    private func request(_ id: String, key: String = "k1", model: String = "m", keyLimits: Limits) -> AdmitRequest {
        AdmitRequest(requestID: id, tenantID: "t1", keyID: key, model: model, tokensToReserve: 10,
                     tenantLimits: Limits(requestsPerMinute: 600), keyLimits: keyLimits)
    }

    @Test func requestsOfOneKeyGetThePlanTheirLimitsMake() {
        let cache = LimitPlanCache(capacity: 100)
        let limits = Limits(requestsPerMinute: 60, tokensPerMinute: 1_000, maxConcurrentRequests: 2, dailyBudgetUSD: 5)
        for id in ["r1", "r2", "r3"] {
            let made = LimitPlan(for: request(id, keyLimits: limits), keys: LimiterKeys(tenantID: "t1"))
            #expect(cache.plan(for: request(id, keyLimits: limits)) == made)
        }
        let plan = cache.plan(for: request("r4", keyLimits: limits))
        #expect(plan.rates.map(\.name) == ["tenant_requests_per_minute", "key_requests_per_minute", "key_tokens_per_minute"])
        #expect(plan.denyCacheKeys == ["sl:{t:t1}:rpm", "sl:{t:t1}:k:k1:rpm", "sl:{t:t1}:spent:d:k:k1"])
        #expect(plan.concurrencyKeys == ["sl:{t:t1}:k:k1:inflight"] && plan.tokenRates.map(\.perMinute) == [1_000])
    }

    /// An admin lowering a key's limit takes effect on the next request: the limits are part of
    /// what a plan is found by.
    @Test func aChangedLimitMakesANewPlan() {
        let cache = LimitPlanCache(capacity: 100)
        #expect(cache.plan(for: request("r1", keyLimits: Limits(requestsPerMinute: 60))).rates[1].perMinute == 60)
        #expect(cache.plan(for: request("r2", keyLimits: Limits(requestsPerMinute: 6))).rates[1].perMinute == 6)
        #expect(cache.plan(for: request("r3", key: "k2", keyLimits: Limits(requestsPerMinute: 6))).rates[1].key == "sl:{t:t1}:k:k2:rpm")
    }

    /// Many keys and models (a model name is the client's choice among those it may use): the
    /// cache stays within its capacity and every plan is still right.
    @Test func manyKeysStayWithinTheCapacity() {
        let cache = LimitPlanCache(capacity: 8)
        for index in 0..<100 {
            let plan = cache.plan(for: request("r\(index)", key: "k\(index)", model: "m\(index % 7)", keyLimits: Limits(requestsPerMinute: index + 1)))
            #expect(plan.rates[1].key == "sl:{t:t1}:k:k\(index):rpm" && plan.rates[1].perMinute == index + 1)
        }
        #expect(cache.count <= 8)
    }
}
