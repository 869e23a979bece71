import Synchronization

/// Which limits apply to one request, with their Redis keys: tenant, key and model levels.
struct LimitPlan: Sendable, Equatable {
    var rates: [RateLimitSpec] = []
    var concurrency: [ConcurrencyLimitSpec] = []
    var budgets: [BudgetSpec] = []
    /// The deny-cache entries that refuse the request without a Redis call: its request-rate
    /// limits and budgets.
    private(set) var denyCacheKeys: [String] = []
    /// What an admission keeps for its settle: the token limits and the in-flight sets.
    private(set) var tokenRates: [RateLimitSpec] = []
    private(set) var concurrencyKeys: [String] = []

    init(for request: AdmitRequest, keys: LimiterKeys) {
        add(request.tenantLimits, prefix: "tenant", spendField: "t",
            rateKey: { keys.tenantRate($0) }, inFlightKey: keys.tenantInFlight)
        add(request.keyLimits, prefix: "key", spendField: "k:\(request.keyID)",
            rateKey: { keys.keyRate(request.keyID, $0) }, inFlightKey: keys.keyInFlight(request.keyID))
        add(request.modelLimits, prefix: "model", spendField: "m:\(request.model)",
            rateKey: { keys.modelRate(request.model, $0) }, inFlightKey: keys.modelRate(request.model, .requests) + ":inflight")
        denyCacheKeys = rates.filter { $0.kind == .requests }.map(\.key) + budgets.map(keys.spentBudget)
        tokenRates = rates.filter { $0.kind == .tokens }
        concurrencyKeys = concurrency.map(\.key)
    }

    private mutating func add(_ limits: Limits, prefix: String, spendField: String,
                              rateKey: (RateLimitSpec.Kind) -> String, inFlightKey: String) {
        if let rate = limits.requestsPerMinute, rate > 0 {
            rates.append(RateLimitSpec(kind: .requests, perMinute: rate, burst: max(1, limits.burstRequests ?? rate),
                                       name: "\(prefix)_requests_per_minute", key: rateKey(.requests)))
        }
        if let rate = limits.tokensPerMinute, rate > 0 {
            rates.append(RateLimitSpec(kind: .tokens, perMinute: rate, burst: max(1, limits.burstTokens ?? rate),
                                       name: "\(prefix)_tokens_per_minute", key: rateKey(.tokens)))
        }
        if let maximum = limits.maxConcurrentRequests, maximum >= 0 {
            concurrency.append(ConcurrencyLimitSpec(max: maximum, name: "\(prefix)_max_concurrent_requests", key: inFlightKey))
        }
        budgets += BudgetSpec.budgets(of: limits, level: prefix, field: spendField)
    }

    /// The first token limit the reservation can never fit in, checked with no I/O.
    func neverFits(reserving tokens: Int) -> RateLimitSpec? {
        rates.first { $0.kind == .tokens && tokens > $0.burst }
    }
}

/// Plans by everything they depend on (tenant, key, model and the limits of each), so the
/// requests of one key share one: its Redis key names are built once, not per request. A
/// changed limit is a new entry. Bounded: emptied when full (plans are cheap to rebuild).
final class LimitPlanCache: Sendable {
    private struct Key: Hashable {
        let tenantID: String, keyID: String, model: String
        let tenantLimits: Limits, keyLimits: Limits, modelLimits: Limits
    }

    private let plans = Mutex<[Key: LimitPlan]>([:])
    private let capacity: Int

    init(capacity: Int) {
        self.capacity = capacity
    }

    var count: Int { plans.withLock { $0.count } }

    func plan(for request: AdmitRequest) -> LimitPlan {
        let key = Key(tenantID: request.tenantID, keyID: request.keyID, model: request.model,
                      tenantLimits: request.tenantLimits, keyLimits: request.keyLimits, modelLimits: request.modelLimits)
        if let plan = plans.withLock({ $0[key] }) { return plan }
        let plan = LimitPlan(for: request, keys: LimiterKeys(tenantID: request.tenantID))
        plans.withLock { plans in
            if plans.count >= capacity { plans.removeAll(keepingCapacity: true) }
            plans[key] = plan
        }
        return plan
    }
}
