import Logging
import SluiceRedis
import Synchronization

/// What admit does when Redis cannot be reached.
public enum RedisFailurePolicy: String, Sendable, CaseIterable {
    /// Refuse fast: 503 `limiter_unavailable`.
    case closed
    /// Admit without limits.
    case open
    /// Enforce `limit ÷ expected replicas` in this replica's memory.
    case local
}

public struct LimiterConfiguration: Sendable {
    public var failurePolicy: RedisFailurePolicy = .closed
    /// For the `local` policy: how many replicas share the limits.
    public var expectedReplicas = 1
    /// Consecutive Redis failures that trip the breaker, and how long it stays open.
    public var breakerFailureThreshold = 3
    public var breakerOpenInterval: Duration = .seconds(1)
    public var denyCacheCapacity = 10_000
    public var timings = LimiterTimings()

    public init(failurePolicy: RedisFailurePolicy = .closed) {
        self.failurePolicy = failurePolicy
    }
}

/// The distributed limiter: one `EVALSHA` to admit, one to settle.
///
/// Before Redis: a request that can never fit is refused with no I/O, and a limit known to be
/// exhausted (deny cache) is refused until its retry-after. When Redis fails, the circuit
/// breaker makes a dead Redis cost at most one timeout per interval, and the failure policy
/// answers meanwhile.
public final class Limiter: Sendable {
    private let store: RedisLimiterStore
    private let settles: TenantBatcher<SettleRequest, SettleOutcome>
    private let admits: TenantBatcher<AdmitItem, AdmitDecision>
    private let configuration: LimiterConfiguration
    /// Tenants with usage settled through this replica, for the metering worker.
    public let activity = TenantActivity()
    private let denyCache: DenyCache
    private let plans: LimitPlanCache
    private let localLimiter: LocalLimiter
    private let spendMemory: SpendMemory
    private let breaker: Mutex<CircuitBreakerStateMachine>
    private let logger: Logger

    /// - Parameter spendSource: where budgets' spend is rebuilt from when Redis has lost it (the
    ///   ledger; without one, spend restarts at zero).
    public init(client: RedisClient, configuration: LimiterConfiguration = .init(),
                spendSource: any SpendSource = NoSpendSource(), logger: Logger = Logger(label: "sluice.limiter")) {
        self.store = RedisLimiterStore(client: client, timings: configuration.timings)
        self.settles = .settles(store: store)
        let spendMemory = SpendMemory(capacity: configuration.denyCacheCapacity)
        self.spendMemory = spendMemory
        self.admits = .admits(store: store, spendSource: spendSource, memory: spendMemory, logger: logger)
        self.configuration = configuration
        self.denyCache = DenyCache(capacity: configuration.denyCacheCapacity)
        self.plans = LimitPlanCache(capacity: configuration.denyCacheCapacity)
        self.localLimiter = LocalLimiter(expectedReplicas: configuration.expectedReplicas,
                                         capacity: configuration.denyCacheCapacity)
        self.breaker = Mutex(CircuitBreakerStateMachine(failureThreshold: configuration.breakerFailureThreshold,
                                                        openInterval: configuration.breakerOpenInterval))
        self.logger = logger
    }

    /// True while the breaker is open: the fleet runs on its failure policy.
    public var isDegraded: Bool { breaker.withLock { $0.isOpen } }

    public func admit(_ request: AdmitRequest) async -> AdmitDecision {
        let plan = plans.plan(for: request)
        if let limit = plan.neverFits(reserving: request.tokensToReserve) {
            return .neverFits(limit: limit.name, tokens: request.tokensToReserve, burst: limit.burst)
        }
        let now = ContinuousClock.now
        if let cached = denyCache.lookup(plan.denyCacheKeys, now: now) {
            return .denied(cached.denial.cached(retryAfter: cached.until - now))
        }
        guard breaker.withLock({ $0.allowsCall(now: now) }) else {
            return degradedAdmit(request, plan: plan, now: now)
        }
        do {
            activity.mark(request.tenantID)  // admitted requests leave usage or reservations to meter
            let decision = try await admits.run(AdmitItem(request: request, plan: plan), tenant: request.tenantID)
            recordSuccess()
            if case .denied(let denial) = decision {
                remember(denial, plan: plan, keys: LimiterKeys(tenantID: request.tenantID), now: .now)
            }
            // Undecidable (the ledger could not rebuild a lost spend): the failure policy answers.
            if case .unavailable = decision { return degradedAdmit(request, plan: plan, now: .now) }
            return decision
        } catch {
            recordFailure(error)
            // Sent but unanswered: the script may have run. Withdraw it once Redis answers, or
            // the sweep would bill a request whose answer never went out as admitted.
            if error == .timeout || error == .connectionClosed { withdraw(request, plan: plan) }
            return degradedAdmit(request, plan: plan, now: .now)
        }
    }

    private let withdrawals = Atomic<Int>(0)

    /// Voids an admission that may have happened, retrying until Redis answers or the request's
    /// billing deadline passes (then the sweep bills it: the one case that over-bills). Bounded:
    /// at most 10,000 at a time.
    private func withdraw(_ request: AdmitRequest, plan: LimitPlan) {
        guard withdrawals.add(1, ordering: .relaxed).newValue <= 10_000 else {
            withdrawals.subtract(1, ordering: .relaxed)
            return
        }
        let admission = Admission(request, headers: .none, degraded: false, tokenLimits: plan.tokenRates,
                                  concurrencyKeys: plan.concurrencyKeys, pendingMember: Admission.pendingMember(for: request))
        let deadline = ContinuousClock.now + configuration.timings.reservationTTL
        Task { [self] in
            defer { withdrawals.subtract(1, ordering: .relaxed) }
            while ContinuousClock.now < deadline {
                let void = SettleRequest(admission: admission, usage: Usage(promptTokens: 0, completionTokens: 0), void: true)
                if (try? await settles.run(void, tenant: admission.tenantID)) != nil { return }
                try? await Task.sleep(for: .milliseconds(500))
            }
        }
    }

    /// Books the real usage, batched with the tenant's other settles (`TenantBatcher`).
    /// Idempotent, so a dropped connection is retried; a timeout is not (Redis is stuck), nor is
    /// anything once the breaker is open. The caller then records the usage another way; the
    /// request stays pending in Redis until its deadline, when the sweep would bill its
    /// reservation, and the ledger keeps whichever row came first.
    public func settle(_ admission: Admission, usage: Usage) async throws(RedisClientError) -> SettleOutcome {
        try await withCheckedContinuation { continuation in
            settle(admission, usage: usage) { continuation.resume(returning: $0) }
        }.get()
    }

    /// Settles without waiting: `completion` gets the outcome (on the thread that finished it).
    public func settle(_ admission: Admission, usage: Usage,
                       completion: @escaping @Sendable (Result<SettleOutcome, RedisClientError>) -> Void) {
        if admission.degraded {
            localLimiter.release(admission)
            return completion(.success(.skipped))
        }
        guard !isDegraded else { return completion(.failure(.connectFailed("the limiter's circuit breaker is open"))) }
        // Marked before the outcome is known: a settle whose answer is lost may still have run.
        activity.mark(admission.tenantID)
        settles.submit(SettleRequest(admission: admission, usage: usage), tenant: admission.tenantID) { [self] result in
            switch result {
            case .success:
                recordSuccess()
            case .failure(let error): recordFailure(error)
            }
            completion(result)
        }
    }

    /// Bills, at their reservation, up to `limit` of the tenant's requests whose settle never
    /// came (their replica died). The metering workers call it; returns how many it billed.
    public func sweep(tenantID: String, limit: Int = 500) async throws(RedisClientError) -> Int {
        try await store.sweep(tenantID: tenantID, limit: limit)
    }

    /// How often a running request should `renew`: a third of the lease (or of the billing
    /// deadline, if shorter), so two renewals can fail before anything is lost.
    public var renewalInterval: Duration { min(configuration.timings.lease, configuration.timings.reservationTTL) / 3 }

    /// Keeps a long request's concurrency slots and its billing deadline (call every
    /// `renewalInterval` while it runs). Best effort: a failure only means the lease may run out
    /// before the request ends.
    public func renew(_ admission: Admission) async {
        guard !admission.degraded else { return }
        do {
            _ = try await store.renew(admission)
        } catch {
            logger.warning("lease renewal failed", metadata: ["request_id": "\(admission.requestID)", "error": "\(error)"])
        }
    }

    private func degradedAdmit(_ request: AdmitRequest, plan: LimitPlan, now: ContinuousClock.Instant) -> AdmitDecision {
        switch configuration.failurePolicy {
        case .closed:
            return .unavailable
        case .open:
            if let denial = spendMemory.admit(request, plan: plan) { return .denied(denial) }
            return .admitted(Admission(request, headers: .none, degraded: true, tokenLimits: [], concurrencyKeys: []))
        case .local:
            let decision = localLimiter.admit(request, plan: plan, now: now)
            guard case .admitted(let admission) = decision else { return decision }
            if let denial = spendMemory.admit(request, plan: plan) {
                localLimiter.release(admission)
                return .denied(denial)
            }
            return decision
        }
    }

    /// Request-count denials and budgets spent in full are cached; token and concurrency denials
    /// are not (a smaller request may fit, a slot may free any moment), nor a budget that only
    /// this request's reservation would pass. Budget denials for at most 5 s, so a raised budget
    /// takes effect quickly.
    private func remember(_ denial: Denial, plan: LimitPlan, keys: LimiterKeys, now: ContinuousClock.Instant) {
        switch denial.reason {
        case .budgetExhausted:
            guard let budget = plan.budgets.first(where: { $0.name == denial.limit }),
                  let (spent, limit) = denial.budget, spent >= limit else { return }
            denyCache.insert(keys.spentBudget(budget), .init(until: now + min(denial.retryAfter, .seconds(5)), denial: denial),
                             now: now)
        case .rateLimited:
            guard let rate = plan.rates.first(where: { $0.name == denial.limit }), rate.kind == .requests else { return }
            denyCache.insert(rate.key, .init(until: now + denial.retryAfter, denial: denial), now: now)
        }
    }

    private func recordSuccess() {
        if breaker.withLock({ $0.recordSuccess() }) {
            logger.notice("limiter recovered: redis answers again")
        }
    }

    private func recordFailure(_ error: RedisClientError) {
        if breaker.withLock({ $0.recordFailure(now: .now) }) {
            logger.error("limiter degraded: redis unreachable, applying failure policy",
                         metadata: ["policy": "\(configuration.failurePolicy.rawValue)", "error": "\(error)"])
        }
    }
}
