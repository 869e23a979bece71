import Synchronization

/// Whether this replica should get traffic, as far as the replica itself decides it: false from
/// the moment a graceful shutdown begins. `/readyz` adds the store checks.
final class Readiness: Sendable {
    private let draining = Atomic<Bool>(false)

    var isDraining: Bool { draining.load(ordering: .relaxed) }

    func startDraining() {
        draining.store(true, ordering: .relaxed)
    }
}
