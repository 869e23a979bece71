import Synchronization

/// The `local` failure policy: while Redis is unreachable each replica enforces its share,
/// `limit ÷ expected replicas`, in memory with the same GCRA. Budgets are `SpendMemory`'s. Bounded: at most `capacity` limit keys are tracked.
final class LocalLimiter: Sendable {
    private struct State {
        var theoreticalArrival: [String: ContinuousClock.Instant] = [:]
        var inFlight: [String: Int] = [:]
    }

    private let replicas: Int
    private let capacity: Int
    private let state = Mutex(State())

    init(expectedReplicas: Int, capacity: Int) {
        self.replicas = max(1, expectedReplicas)
        self.capacity = capacity
    }

    func admit(_ request: AdmitRequest, plan: LimitPlan, now: ContinuousClock.Instant) -> AdmitDecision {
        state.withLock { state in
            var arrivals: [(String, ContinuousClock.Instant)] = []
            for rate in plan.rates {
                let share = max(1, rate.perMinute / replicas)
                let burst = max(1, rate.burst / replicas)
                let interval = Duration.seconds(60) / share
                let cost = rate.kind == .tokens ? request.tokensToReserve : 1
                if cost > burst {
                    return .neverFits(limit: rate.name, tokens: cost, burst: burst)
                }
                let tat = max(state.theoreticalArrival[rate.key] ?? now, now)
                let next = tat + interval * cost
                let allowAt = next - interval * burst
                if allowAt > now {
                    return .denied(Denial(reason: .rateLimited, limit: rate.name, retryAfter: allowAt - now,
                                          headers: .none, fromCache: false))
                }
                arrivals.append((rate.key, next))
            }
            for limit in plan.concurrency where state.inFlight[limit.key, default: 0] >= max(1, limit.max / replicas) {
                return .denied(Denial(reason: .rateLimited, limit: limit.name, retryAfter: .seconds(1),
                                      headers: .none, fromCache: false))
            }
            if state.theoreticalArrival.count > capacity {
                state.theoreticalArrival = state.theoreticalArrival.filter { $0.value > now }
            }
            for (key, next) in arrivals { state.theoreticalArrival[key] = next }
            for limit in plan.concurrency { state.inFlight[limit.key, default: 0] += 1 }
            return .admitted(Admission(request, headers: .none, degraded: true, tokenLimits: [],
                                       concurrencyKeys: plan.concurrency.map(\.key)))
        }
    }

    func release(_ admission: Admission) {
        state.withLock { state in
            for key in admission.concurrencyKeys {
                let count = (state.inFlight[key] ?? 1) - 1
                state.inFlight[key] = count > 0 ? count : nil
            }
        }
    }
}
