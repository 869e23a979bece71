import SluiceRedis

/// Lifetimes of what the scripts write. Every key has a TTL; nothing outlives these.
public struct LimiterTimings: Sendable {
    /// A concurrency slot frees itself this long after admission if nobody settles.
    public var lease: Duration = .seconds(120)
    /// A reservation not settled by then is forfeited (its usage can still be recorded).
    public var reservationTTL: Duration = .seconds(180)
    /// How long "already settled" is remembered, making settle idempotent.
    public var settledMarkTTL: Duration = .seconds(86_400)
    /// The usage stream expires this long after its last event if metering stops entirely.
    public var usageStreamTTL: Duration = .seconds(7 * 86_400)
    public var usageStreamMaxLength = 1_000_000

    public init() {}
}

/// admit and settle as one `EVALSHA` each: argument encoding and reply decoding.
struct RedisLimiterStore: Sendable {
    let client: RedisClient
    let timings: LimiterTimings

    func admit(_ request: AdmitRequest, plan: LimitPlan, keys: LimiterKeys) async throws(RedisClientError) -> AdmitDecision {
        var scriptKeys: [any RESPArgument] = [keys.request(request.requestID), keys.spend]
        var arguments: [any RESPArgument] = [
            request.requestID, request.tokensToReserve, timings.lease.microseconds,
            timings.reservationTTL.milliseconds, plan.budgetMicroUSD ?? -1, plan.rates.count, plan.concurrency.count,
        ]
        for rate in plan.rates {
            scriptKeys.append(rate.key)
            arguments += [rate.kind.rawValue, rate.interval, rate.burst, rate.perMinute, rate.name] as [any RESPArgument]
        }
        for limit in plan.concurrency {
            scriptKeys.append(limit.key)
            arguments += [limit.max, limit.name] as [any RESPArgument]
        }
        let reply = try await client.evalScript(LimiterScripts.admit, keys: scriptKeys, arguments: arguments)
        guard let fields = reply.array, fields.count == 9, let decision = fields[0].int else {
            throw .protocolError("admit returned \(reply)")
        }
        let name = fields[1].string ?? ""
        let retry = Duration.microseconds(fields[2].int ?? 0)
        let headers = Self.headers(fields[3...8].map { $0.int ?? -1 })
        switch decision {
        case 1:
            return .admitted(Admission(
                requestID: request.requestID, tenantID: request.tenantID, keyID: request.keyID, model: request.model,
                reservedTokens: request.tokensToReserve, headers: headers, degraded: false, tokenLimits: plan.rates.filter { $0.kind == .tokens },
                concurrencyKeys: plan.concurrency.map(\.key)))
        case 0:
            return .denied(Denial(reason: .rateLimited, limit: name, retryAfter: retry, headers: headers, fromCache: false))
        case 2:
            return .denied(Denial(reason: .budgetExhausted, limit: name, retryAfter: retry, headers: headers, fromCache: false))
        default:
            let burst = plan.rates.first { $0.name == name }?.burst ?? 0
            return .neverFits(limit: name, tokens: request.tokensToReserve, burst: burst)
        }
    }

    func settle(_ admission: Admission, usage: Usage) async throws(RedisClientError) -> SettleOutcome {
        let keys = LimiterKeys(tenantID: admission.tenantID)
        let scriptKeys: [any RESPArgument] = [
            keys.request(admission.requestID), keys.spend, keys.usageStream,
        ] + admission.tokenLimits.map(\.key) + admission.concurrencyKeys
        var arguments: [any RESPArgument] = [
            admission.requestID, usage.totalTokens, usage.costMicroUSD, timings.settledMarkTTL.milliseconds,
            timings.usageStreamTTL.milliseconds, timings.usageStreamMaxLength,
            admission.tokenLimits.count, admission.concurrencyKeys.count,
        ]
        arguments += admission.tokenLimits.map(\.interval) as [any RESPArgument]
        var event: [(String, String)] = [
            ("tenant_id", admission.tenantID), ("key_id", admission.keyID), ("model", admission.model),
            ("prompt_tokens", String(usage.promptTokens)), ("completion_tokens", String(usage.completionTokens)),
        ]
        event += usage.attributes.sorted { $0.key < $1.key }.map { ($0.key, $0.value) }
        for (field, value) in event { arguments += [field, value] as [any RESPArgument] }

        let reply = try await client.evalScript(LimiterScripts.settle, keys: scriptKeys, arguments: arguments)
        guard let fields = reply.array, fields.count == 3, let settled = fields[0].int else {
            throw .protocolError("settle returned \(reply)")
        }
        if settled == 0 { return .alreadySettled }
        return .settled(refunded: Int(fields[2].int ?? 0), reservationExpired: fields[1].int == -1)
    }

    /// Extends the request's concurrency leases (it holds some); returns how many were still held.
    func renew(_ admission: Admission) async throws(RedisClientError) -> Int {
        let reply = try await client.evalScript(LimiterScripts.renew, keys: admission.concurrencyKeys,
                                                arguments: [admission.requestID, timings.lease.microseconds])
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
