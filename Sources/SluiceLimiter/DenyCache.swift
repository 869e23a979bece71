import Synchronization

/// Limits known to be exhausted, by Redis key, until their retry-after: a client hammering
/// past its limit is refused by the replica with no Redis call. Bounded: when full of live
/// entries, new denials are simply not cached.
final class DenyCache: Sendable {
    struct Entry: Sendable {
        let until: ContinuousClock.Instant
        let denial: Denial
    }

    private let capacity: Int
    private let entries = Mutex<[String: Entry]>([:])

    init(capacity: Int) {
        self.capacity = capacity
    }

    /// The cached denial for the first of `keys` that is still exhausted at `now`.
    func lookup(_ keys: [String], now: ContinuousClock.Instant) -> Entry? {
        entries.withLock { entries in
            for key in keys {
                guard let entry = entries[key] else { continue }
                if entry.until > now { return entry }
                entries[key] = nil
            }
            return nil
        }
    }

    func insert(_ key: String, _ entry: Entry, now: ContinuousClock.Instant) {
        entries.withLock { entries in
            if entries.count >= capacity {
                entries = entries.filter { $0.value.until > now }
                if entries.count >= capacity { return }
            }
            entries[key] = entry
        }
    }
}
