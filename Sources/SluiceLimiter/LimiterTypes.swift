/// What admit needs to know about one request.
public struct AdmitRequest: Sendable {
    public var requestID: String
    public var tenantID: String
    public var keyID: String
    public var model: String
    /// Prompt estimate + maximum output tokens (capped by the model's maximum).
    public var tokensToReserve: Int
    /// The prompt part of the reservation, and what the reservation costs: what the request is
    /// billed if its settle never comes.
    public var promptEstimate: Int
    public var reservedCostMicroUSD: Int64
    /// The price version the request is billed at (nil: no price known, free).
    public var priceID: Int64?
    /// The UTC day (YYYYMMDD) of the admission, by this replica's clock: the period its
    /// reservation is counted in (admit.lua makes the replica retry if Redis's day differs).
    public var admissionDay: Int
    public var tenantLimits: Limits
    public var keyLimits: Limits
    /// The tenant's limits for this model, if it has any.
    public var modelLimits: Limits

    public init(requestID: String, tenantID: String, keyID: String, model: String, tokensToReserve: Int,
                promptEstimate: Int = 0, reservedCostMicroUSD: Int64 = 0, priceID: Int64? = nil,
                admissionDay: Int = SpendPeriod.today,
                tenantLimits: Limits = .none, keyLimits: Limits = .none, modelLimits: Limits = .none) {
        self.requestID = requestID
        self.tenantID = tenantID
        self.keyID = keyID
        self.model = model
        self.tokensToReserve = tokensToReserve
        self.promptEstimate = min(promptEstimate, tokensToReserve)
        self.reservedCostMicroUSD = max(0, reservedCostMicroUSD)
        self.priceID = priceID
        self.admissionDay = admissionDay
        self.tenantLimits = tenantLimits
        self.keyLimits = keyLimits
        self.modelLimits = modelLimits
    }
}

/// Values for OpenAI's `x-ratelimit-*` headers: the tightest request and token limits.
/// nil when no limit of that kind applies.
public struct RateLimitHeaders: Sendable, Equatable {
    public struct Window: Sendable, Equatable {
        public let limit: Int
        public let remaining: Int
        /// Until the bucket is full again.
        public let reset: Duration
    }

    public var requests: Window?
    public var tokens: Window?

    public static let none = RateLimitHeaders(requests: nil, tokens: nil)
}

/// An admitted request: everything settle needs to give back what was not used.
public struct Admission: Sendable, Equatable {
    public let requestID: String
    public let tenantID: String
    public let keyID: String
    public let model: String
    public let reservedTokens: Int
    public let reservedCostMicroUSD: Int64
    public let priceID: Int64?
    let admissionDay: Int
    public let headers: RateLimitHeaders
    /// Admitted without Redis (fail-open or local policy): settle books nothing in Redis.
    public let degraded: Bool
    let tokenLimits: [RateLimitSpec]
    let concurrencyKeys: [String]
    /// Its member of the tenant's pending set: what sweep.lua bills if no settle comes.
    let pendingMember: String

    init(_ request: AdmitRequest, headers: RateLimitHeaders, degraded: Bool, tokenLimits: [RateLimitSpec],
         concurrencyKeys: [String], pendingMember: String = "") {
        self.requestID = request.requestID
        self.tenantID = request.tenantID
        self.keyID = request.keyID
        self.model = request.model
        self.reservedTokens = request.tokensToReserve
        self.reservedCostMicroUSD = request.reservedCostMicroUSD
        self.priceID = request.priceID
        self.admissionDay = request.admissionDay
        self.headers = headers
        self.degraded = degraded
        self.tokenLimits = tokenLimits
        self.concurrencyKeys = concurrencyKeys
        self.pendingMember = pendingMember
    }

    /// "<id>|<key id>|<prompt estimate>|<reserved tokens>|<reserved cost>|<day>|<price id>|<model>":
    /// the model last, so it may hold any character (lua/shared.lua parses it).
    static func pendingMember(for request: AdmitRequest) -> String {
        "\(request.requestID)|\(request.keyID)|\(request.promptEstimate)|\(request.tokensToReserve)|\(request.reservedCostMicroUSD)|\(request.admissionDay)|\(request.priceID.map(String.init) ?? "")|\(request.model)"
    }

    /// Whether the request holds concurrency slots (and so long requests must renew them).
    public var holdsConcurrencySlots: Bool { !concurrencyKeys.isEmpty }
}

public enum AdmitDecision: Sendable, Equatable {
    case admitted(Admission)
    case denied(Denial)
    /// The request can never fit: its reservation is larger than a token burst. Not retryable.
    case neverFits(limit: String, tokens: Int, burst: Int)
    /// Redis is unreachable and the policy is fail-closed.
    case unavailable

    public var admission: Admission? {
        if case .admitted(let admission) = self { return admission }
        return nil
    }

    public var denial: Denial? {
        if case .denied(let denial) = self { return denial }
        return nil
    }
}

public struct Denial: Sendable, Equatable {
    public enum Reason: Sendable, Equatable {
        /// A request, token or concurrency limit: `rate_limit_exceeded`.
        case rateLimited
        /// A monthly or daily budget would be passed: `insufficient_quota`.
        case budgetExhausted
    }

    public let reason: Reason
    /// Which limit, e.g. `key_requests_per_minute` or `tenant_max_concurrent_requests`.
    public let limit: String
    /// When the request would pass (everything else unchanged).
    public let retryAfter: Duration
    public let headers: RateLimitHeaders
    /// Answered from the replica's deny cache, without Redis.
    public let fromCache: Bool
    /// For a budget: its spend (settled, plus reservations of requests in flight) and its cap.
    public var budget: (spentMicroUSD: Int64, limitMicroUSD: Int64)? {
        guard let spentMicroUSD, let limitMicroUSD else { return nil }
        return (spentMicroUSD, limitMicroUSD)
    }
    var spentMicroUSD: Int64?
    var limitMicroUSD: Int64?

    init(reason: Reason, limit: String, retryAfter: Duration, headers: RateLimitHeaders, fromCache: Bool,
         spentMicroUSD: Int64? = nil, limitMicroUSD: Int64? = nil) {
        self.reason = reason
        self.limit = limit
        self.retryAfter = retryAfter
        self.headers = headers
        self.fromCache = fromCache
        self.spentMicroUSD = spentMicroUSD
        self.limitMicroUSD = limitMicroUSD
    }

    func cached(retryAfter: Duration) -> Denial {
        Denial(reason: reason, limit: limit, retryAfter: retryAfter, headers: headers, fromCache: true,
               spentMicroUSD: spentMicroUSD, limitMicroUSD: limitMicroUSD)
    }
}

/// The real usage of a finished (or cancelled) request.
public struct Usage: Sendable, Equatable {
    public var promptTokens: Int
    public var completionTokens: Int
    public var costMicroUSD: Int64
    /// Extra fields for the usage event (status, backend, ...).
    public var attributes: [String: String]

    public init(promptTokens: Int, completionTokens: Int, costMicroUSD: Int64 = 0, attributes: [String: String] = [:]) {
        self.promptTokens = promptTokens
        self.completionTokens = completionTokens
        self.costMicroUSD = costMicroUSD
        self.attributes = attributes
    }

    public var totalTokens: Int { promptTokens + completionTokens }
}

public enum SettleOutcome: Sendable, Equatable {
    /// Booked now. `refunded` is tokens given back (negative: debt).
    case settled(refunded: Int)
    /// Booked on a master, but fewer replicas than `settleReplicas` confirmed it in time: a
    /// failover could still lose it, so the caller writes the usage to the ledger as well.
    case unconfirmed(refunded: Int)
    /// Settled before, or billed at its reservation by the sweep (its settle came too late), or
    /// its admission was lost with a failed-over master. The caller writes the usage to the
    /// ledger directly: the ledger keeps one row per request id, so a bill already there stays.
    case alreadySettled
    /// A degraded admission: nothing to book in Redis.
    case skipped
}
