/// Which limits apply to one request, with their Redis keys: tenant, key and model levels.
struct LimitPlan: Sendable, Equatable {
    var rates: [RateLimitSpec] = []
    var concurrency: [ConcurrencyLimitSpec] = []
    var budgets: [BudgetSpec] = []

    init(for request: AdmitRequest, keys: LimiterKeys) {
        add(request.tenantLimits, prefix: "tenant", spendField: "t",
            rateKey: { keys.tenantRate($0) }, inFlightKey: keys.tenantInFlight)
        add(request.keyLimits, prefix: "key", spendField: "k:\(request.keyID)",
            rateKey: { keys.keyRate(request.keyID, $0) }, inFlightKey: keys.keyInFlight(request.keyID))
        add(request.modelLimits, prefix: "model", spendField: "m:\(request.model)",
            rateKey: { keys.modelRate(request.model, $0) }, inFlightKey: keys.modelRate(request.model, .requests) + ":inflight")
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
