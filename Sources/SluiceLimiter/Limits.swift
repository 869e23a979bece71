/// The limits of one level (tenant, key, or a tenant's model). Absent means no limit there.
/// Field names follow the admin API (`requests_per_minute`, ...).
public struct Limits: Sendable, Equatable, Hashable, Codable {
    public var requestsPerMinute: Int?
    public var tokensPerMinute: Int?
    public var maxConcurrentRequests: Int?
    /// Spend caps in USD per UTC calendar month and day (converted to whole micro-USD once).
    public var monthlyBudgetUSD: Double?
    public var dailyBudgetUSD: Double?
    /// Requests admitted at once from a fresh state; defaults to `requestsPerMinute`.
    public var burstRequests: Int?
    /// Tokens reservable at once from a fresh state; defaults to `tokensPerMinute`.
    public var burstTokens: Int?

    public init(requestsPerMinute: Int? = nil, tokensPerMinute: Int? = nil, maxConcurrentRequests: Int? = nil,
                monthlyBudgetUSD: Double? = nil, dailyBudgetUSD: Double? = nil, burstRequests: Int? = nil,
                burstTokens: Int? = nil) {
        self.requestsPerMinute = requestsPerMinute
        self.tokensPerMinute = tokensPerMinute
        self.maxConcurrentRequests = maxConcurrentRequests
        self.monthlyBudgetUSD = monthlyBudgetUSD
        self.dailyBudgetUSD = dailyBudgetUSD
        self.burstRequests = burstRequests
        self.burstTokens = burstTokens
    }

    public static let none = Limits()

    enum CodingKeys: String, CodingKey {
        case requestsPerMinute = "requests_per_minute"
        case tokensPerMinute = "tokens_per_minute"
        case maxConcurrentRequests = "max_concurrent_requests"
        case monthlyBudgetUSD = "monthly_budget_usd"
        case dailyBudgetUSD = "daily_budget_usd"
        case burstRequests = "burst_requests"
        case burstTokens = "burst_tokens"
    }
}

/// One rate limit as the admit script sees it.
struct RateLimitSpec: Sendable, Equatable {
    enum Kind: String, Sendable { case requests = "r", tokens = "t" }
    let kind: Kind
    let perMinute: Int
    let burst: Int
    /// Named in denials and logs, e.g. `key_requests_per_minute`.
    let name: String
    let key: String

    /// Microseconds per unit: GCRA's emission interval.
    var interval: Double { 60_000_000 / Double(perMinute) }
}

struct ConcurrencyLimitSpec: Sendable, Equatable {
    let max: Int
    let name: String
    let key: String
}

/// A budget as the admit script sees it: which spend field of which period, and its cap. The
/// webhook checks read budgets the same way, so both name and convert them alike.
public struct BudgetSpec: Sendable, Equatable {
    public enum Period: String, Sendable { case month = "m", day = "d" }
    public let period: Period
    /// `t` (the tenant), `k:<key id>` or `m:<model>`: a spend field of the tenant.
    public let field: String
    public let limitMicroUSD: Int64
    /// Named in denials, e.g. `key_daily_budget_usd`.
    public let name: String

    /// The budgets of one level's limits: `level` names them (`tenant`, `key`, `model`),
    /// `field` is that level's spend field.
    public static func budgets(of limits: Limits, level: String, field: String) -> [BudgetSpec] {
        var found: [BudgetSpec] = []
        if let cap = Limits.microUSD(limits.monthlyBudgetUSD) {
            found.append(BudgetSpec(period: .month, field: field, limitMicroUSD: cap, name: "\(level)_monthly_budget_usd"))
        }
        if let cap = Limits.microUSD(limits.dailyBudgetUSD) {
            found.append(BudgetSpec(period: .day, field: field, limitMicroUSD: cap, name: "\(level)_daily_budget_usd"))
        }
        return found
    }
}

extension Limits {
    /// A budget in USD as whole micro-USD (rounded to the nearest): the only place a budget is
    /// a floating-point number is the admin API's JSON, and it is converted once, here.
    static func microUSD(_ usd: Double?) -> Int64? {
        guard let usd, usd >= 0, usd.isFinite else { return nil }
        return Int64((usd * 1_000_000).rounded())
    }
}
