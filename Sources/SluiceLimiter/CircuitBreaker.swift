/// Trips after `failureThreshold` consecutive failures; then, for `openInterval`, callers skip
/// Redis entirely; after it one probe goes through (half-open) and its result decides.
/// Pure: time is passed in, so it is tested without waiting.
struct CircuitBreakerStateMachine: Sendable {
    enum State: Sendable, Equatable {
        case closed(consecutiveFailures: Int)
        case open(until: ContinuousClock.Instant)
        case halfOpen
    }

    let failureThreshold: Int
    let openInterval: Duration
    private(set) var state: State = .closed(consecutiveFailures: 0)

    init(failureThreshold: Int, openInterval: Duration) {
        self.failureThreshold = max(1, failureThreshold)
        self.openInterval = openInterval
    }

    var isOpen: Bool {
        if case .closed = state { return false }
        return true
    }

    /// Whether this call may use Redis. After the interval exactly one caller becomes the probe.
    mutating func allowsCall(now: ContinuousClock.Instant) -> Bool {
        switch state {
        case .closed:
            return true
        case .open(let until):
            guard now >= until else { return false }
            state = .halfOpen
            return true
        case .halfOpen:
            return false
        }
    }

    /// Returns true when this success closed a tripped breaker.
    mutating func recordSuccess() -> Bool {
        let wasOpen = isOpen
        state = .closed(consecutiveFailures: 0)
        return wasOpen
    }

    /// Returns true when this failure tripped the breaker.
    mutating func recordFailure(now: ContinuousClock.Instant) -> Bool {
        switch state {
        case .closed(let failures):
            if failures + 1 >= failureThreshold {
                state = .open(until: now + openInterval)
                return true
            }
            state = .closed(consecutiveFailures: failures + 1)
            return false
        case .halfOpen, .open:
            state = .open(until: now + openInterval)
            return false
        }
    }
}
