import Synchronization

/// The tenants this replica admitted or settled requests for since the metering worker last
/// looked: the workers drain their streams, so their Redis cost follows traffic, not the tenant
/// count.
/// Bounded: past `capacity` tenants new marks are dropped (the worker's slow scan of every
/// tenant still reaches them).
public final class TenantActivity: Sendable {
    private let tenants = Mutex<Set<String>>([])
    let capacity: Int

    public init(capacity: Int = 100_000) {
        self.capacity = capacity
    }

    public func mark(_ tenant: String) {
        tenants.withLock { tenants in
            if tenants.count < capacity || tenants.contains(tenant) { tenants.insert(tenant) }
        }
    }

    /// The tenants marked since the last call.
    public func take() -> Set<String> {
        tenants.withLock { tenants in
            defer { tenants = [] }
            return tenants
        }
    }
}
