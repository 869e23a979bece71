import SluiceRedis

/// Lifetimes of what the scripts write. Every key has a TTL; nothing outlives these.
public struct LimiterTimings: Sendable {
    /// A concurrency slot frees itself this long after admission if nobody settles.
    public var lease: Duration = .seconds(120)
    /// An admitted request whose settle has not come by then (its replica died) is billed at
    /// its reservation by the sweep. Running requests renew it (streams) or end well before it
    /// (keep it above the upstream total timeout).
    public var reservationTTL: Duration = .seconds(180)
    /// The pending set lives this long past its last admission, so entries of a fleet that stopped
    /// entirely are still swept when it comes back within this time.
    public var pendingSetTTL: Duration = .seconds(7 * 86_400)
    /// The usage stream expires this long after its last event if metering stops entirely.
    public var usageStreamTTL: Duration = .seconds(7 * 86_400)
    public var usageStreamMaxLength = 1_000_000
    /// Replicas that must confirm a settle (`WAIT`) before its usage counts as safe in Redis;
    /// unconfirmed usage is also written to the ledger directly, so a failover that loses the
    /// write loses no bill. 0 (standalone Redis, or no replicas) skips the wait.
    public var settleReplicas = 0
    /// How long a settle waits for those replicas.
    public var settleReplicaWait: Duration = .milliseconds(50)

    public init() {}
}

/// What one admit call decided.
enum AdmitBatchReply: Sendable {
    /// A decision per request (nil: retry, the replica's day is not Redis's), and the batch's
    /// budgets with their spend after it.
    case decided([AdmitDecision?], spends: [(BudgetSpec, Int64)], month: Int, day: Int)
    /// A budget's spend hash does not count the current period yet: nothing was written.
    case unseeded(month: Int, day: Int)
}

/// One settle of a batch: the admission and its real usage, or a void (the answer never went
/// out: the reservation is withdrawn and nothing is billed).
struct SettleRequest: Sendable {
    let admission: Admission
    let usage: Usage
    var void = false
}

/// admit, settle (batched), renew and sweep as one `EVALSHA` each: arguments out, typed answers back.
struct RedisLimiterStore: Sendable {
    let client: RedisClient
    let timings: LimiterTimings

    /// Decides admits of one tenant in one call, in order: a decision per request (nil: the
    /// replica's day is not Redis's, try again), or `unseeded` when a budget's spend hash must
    /// first be rebuilt from the ledger.
    func admit(tenantID: String, _ batch: [AdmitItem]) async throws(RedisClientError) -> AdmitBatchReply {
        let keys = LimiterKeys(tenantID: tenantID)
        var rates = BatchKeys(), flights = BatchKeys(), budgets = BatchKeys()
        var budgetSpecs: [BudgetSpec] = []
        var perRequest: [any RESPArgument] = []
        let members = batch.map { Admission.pendingMember(for: $0.request) }
        for (item, member) in zip(batch, members) {
            let request = item.request
            perRequest += [request.requestID, request.tokensToReserve, timings.reservationTTL.microseconds,
                           request.reservedCostMicroUSD, request.admissionDay, member,
                           request.keyID, request.model, item.plan.rates.count] as [any RESPArgument]
            for rate in item.plan.rates {
                perRequest.append(rates.index(of: rate.key,
                                              [rate.kind.rawValue, rate.interval, rate.burst, rate.perMinute, rate.name]))
            }
            perRequest.append(item.plan.concurrency.count)
            for limit in item.plan.concurrency {
                perRequest.append(flights.index(of: limit.key, [limit.max, limit.name]))
            }
            perRequest.append(item.plan.budgets.count)
            for budget in item.plan.budgets {
                let known = budgets.keys.count
                perRequest.append(budgets.index(of: "\(budget.period.rawValue)|\(budget.limitMicroUSD)|\(budget.name)|\(budget.field)",
                                                [budget.period.rawValue, budget.field, budget.limitMicroUSD, budget.name]))
                if budgets.keys.count > known { budgetSpecs.append(budget) }
            }
        }
        let scriptKeys: [any RESPArgument] = [keys.pending, keys.spent] + rates.keys + flights.keys
        let arguments: [any RESPArgument] = [batch.count, rates.keys.count, flights.keys.count, timings.lease.microseconds,
                                             timings.pendingSetTTL.milliseconds, budgetSpecs.count]
            + rates.arguments + flights.arguments + budgets.arguments + perRequest
        let reply = try await client.evalScript(LimiterScripts.admit, keys: scriptKeys, arguments: arguments)
        guard let fields = reply.array, fields.count >= 3, let month = fields[1].int, let day = fields[2].int else {
            throw .protocolError("admit returned \(reply)")
        }
        let periods = (month: Int(month), day: Int(day))
        guard fields[0].int == 1 else { return .unseeded(month: periods.month, day: periods.day) }
        let first = 3 + budgetSpecs.count
        guard fields.count == first + 11 * batch.count else { throw .protocolError("admit returned \(reply)") }
        let spends = zip(budgetSpecs, fields[3..<first]).map { ($0, $1.int ?? 0) }
        let decisions = batch.enumerated().map { index, item in
            Self.decision(fields[(first + 11 * index)..<(first + 11 * index + 11)], item, pendingMember: members[index])
        }
        return .decided(decisions, spends: spends, month: periods.month, day: periods.day)
    }

    /// One request's 11 reply values (see admit.lua).
    private static func decision(_ fields: ArraySlice<RESPValue>, _ item: AdmitItem, pendingMember: String) -> AdmitDecision? {
        let request = item.request
        let at = fields.startIndex
        let name = fields[at + 1].string ?? ""
        let retry = Duration.microseconds(fields[at + 2].int ?? 0)
        let headers = Self.headers(fields[(at + 3)...(at + 8)].map { $0.int ?? -1 })
        switch fields[at].int {
        case 1:
            return .admitted(Admission(
                request, headers: headers, degraded: false, tokenLimits: item.plan.tokenRates,
                concurrencyKeys: item.plan.concurrencyKeys, pendingMember: pendingMember))
        case 0:
            return .denied(Denial(reason: .rateLimited, limit: name, retryAfter: retry, headers: headers, fromCache: false))
        case 2:
            return .denied(Denial(reason: .budgetExhausted, limit: name, retryAfter: retry, headers: headers, fromCache: false,
                                  spentMicroUSD: fields[at + 9].int, limitMicroUSD: fields[at + 10].int))
        case 3:
            return nil
        default:
            let burst = item.plan.rates.first { $0.name == name }?.burst ?? 0
            return .neverFits(limit: name, tokens: request.tokensToReserve, burst: burst)
        }
    }

    /// Rebuilds the tenant's spend hashes from the ledger's sums (see lua/seed.lua); false when
    /// the periods changed meanwhile.
    func seed(tenantID: String, month: Int, day: Int, sums: SpendSums) async throws(RedisClientError) -> Bool {
        let keys = LimiterKeys(tenantID: tenantID)
        var arguments: [any RESPArgument] = [month, day, sums.month.count]
        for (field, amount) in sums.month { arguments += [field, amount] as [any RESPArgument] }
        arguments.append(sums.day.count)
        for (field, amount) in sums.day { arguments += [field, amount] as [any RESPArgument] }
        let reply = try await client.evalScript(LimiterScripts.seed, keys: [keys.pending, keys.spent],
                                                arguments: arguments)
        return reply.int == 1
    }

    /// Settles requests of one tenant in one call; an outcome per request, in order.
    func settle(tenantID: String, _ batch: [SettleRequest]) async throws(RedisClientError) -> [SettleOutcome] {
        let keys = LimiterKeys(tenantID: tenantID)
        var tokens = BatchKeys(), flights = BatchKeys()
        var perRequest: [any RESPArgument] = []
        for request in batch {
            let admission = request.admission
            perRequest += [admission.pendingMember, admission.requestID, request.usage.totalTokens, request.usage.costMicroUSD,
                           admission.reservedTokens, admission.reservedCostMicroUSD, admission.admissionDay, admission.keyID,
                           admission.model, admission.tokenLimits.count] as [any RESPArgument]
            for limit in admission.tokenLimits { perRequest.append(tokens.index(of: limit.key, [limit.interval])) }
            perRequest.append(admission.concurrencyKeys.count)
            for key in admission.concurrencyKeys { perRequest.append(flights.index(of: key)) }
            perRequest.append(request.void ? "" : Self.event(admission, request.usage))
        }
        let scriptKeys: [any RESPArgument] = [keys.pending, keys.spent, keys.usageStream]
            + tokens.keys + flights.keys
        let arguments: [any RESPArgument] = [timings.usageStreamTTL.milliseconds, timings.usageStreamMaxLength, batch.count,
                                             tokens.keys.count, flights.keys.count] + tokens.arguments + perRequest
        let (reply, replicas) = try await client.evalScript(LimiterScripts.settle, keys: scriptKeys, arguments: arguments,
                                                            replicas: timings.settleReplicas,
                                                            waitTimeout: timings.settleReplicaWait)
        guard let fields = reply.array, fields.count == 2 * batch.count else {
            throw .protocolError("settle returned \(reply)")
        }
        let confirmed = replicas >= timings.settleReplicas
        return (0..<batch.count).map { index in
            guard fields[2 * index].int == 1 else { return .alreadySettled }
            let refunded = Int(fields[2 * index + 1].int ?? 0)
            return confirmed ? .settled(refunded: refunded) : .unconfirmed(refunded: refunded)
        }
    }

    /// The usage event, encoded (settle.lua adds the time it ran).
    private static func event(_ admission: Admission, _ usage: Usage) -> String {
        UsageEventCoding.encode(
            [("request_id", admission.requestID), ("tenant_id", admission.tenantID), ("key_id", admission.keyID),
             ("model", admission.model), ("prompt_tokens", String(usage.promptTokens)),
             ("completion_tokens", String(usage.completionTokens)), ("cost_micro_usd", String(usage.costMicroUSD)),
             ("price_id", admission.priceID.map(String.init) ?? "")]
                + usage.attributes.sorted { $0.key < $1.key }.map { ($0.key, $0.value) })
    }

    /// Extends the request's concurrency leases and billing deadline; returns how many leases were still held.
    func renew(_ admission: Admission) async throws(RedisClientError) -> Int {
        let keys = LimiterKeys(tenantID: admission.tenantID)
        let reply = try await client.evalScript(
            LimiterScripts.renew, keys: [keys.pending] + admission.concurrencyKeys,
            arguments: [admission.requestID, timings.lease.microseconds, admission.pendingMember,
                        timings.reservationTTL.microseconds])
        return Int(reply.int ?? 0)
    }

    /// Bills, at their reservation, up to `limit` requests of the tenant whose settle never came.
    func sweep(tenantID: String, limit: Int) async throws(RedisClientError) -> Int {
        let keys = LimiterKeys(tenantID: tenantID)
        let reply = try await client.evalScript(
            LimiterScripts.sweep, keys: [keys.pending, keys.spent, keys.usageStream],
            arguments: [tenantID, limit, timings.usageStreamTTL.milliseconds, timings.usageStreamMaxLength])
        return Int(reply.int ?? 0)
    }

    private static func headers(_ values: [Int64]) -> RateLimitHeaders {
        func window(_ offset: Int) -> RateLimitHeaders.Window? {
            guard values[offset] >= 0 else { return nil }
            return .init(limit: Int(values[offset]), remaining: Int(max(0, values[offset + 1])),
                         reset: .microseconds(max(0, values[offset + 2])))
        }
        return RateLimitHeaders(requests: window(0), tokens: window(3))
    }
}

extension Duration {
    var microseconds: Int64 {
        components.seconds * 1_000_000 + components.attoseconds / 1_000_000_000_000
    }

    var milliseconds: Int64 {
        components.seconds * 1_000 + components.attoseconds / 1_000_000_000_000_000
    }
}

/// The keys of a batch, each once, with the arguments that describe each; requests refer to
/// them by 1-based index, as the scripts read them.
struct BatchKeys {
    private(set) var keys: [String] = []
    private(set) var arguments: [any RESPArgument] = []
    private var positions: [String: Int] = [:]

    /// The key's index; a new key is added with its `describing` arguments.
    mutating func index(of key: String, _ describing: @autoclosure () -> [any RESPArgument] = []) -> Int {
        if let known = positions[key] { return known }
        keys.append(key)
        arguments += describing()
        positions[key] = keys.count
        return keys.count
    }
}

