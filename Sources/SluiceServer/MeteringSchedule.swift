/// Which tenants' usage streams the metering worker reads in a pass. Pure (no I/O), so it is
/// tested without Redis; the worker carries its steps out.
///
/// - Tenants with usage settled through this replica since the last pass (and any whose drain
///   failed) are read every pass: the cost follows traffic.
/// - Every tenant is also visited in a slow rotation (`scanPasses` passes for all of them): it
///   finds usage another replica left unread when it died, claims entries a dead consumer read
///   but never acknowledged, and sweeps reservations whose settle never came.
/// - Active tenants claim and sweep every `maintenanceEvery` passes too.
struct MeteringSchedule {
    struct Step: Equatable {
        let tenant: String
        /// XAUTOCLAIM entries idle past the claim time (a dead consumer's).
        let claim: Bool
        /// Bill reservations past their deadline (`Limiter.sweep`).
        let sweep: Bool
        /// Read this consumer's own delivered but unacknowledged entries again first (its last
        /// drain of the tenant failed after the read).
        var recover = false
    }

    let scanPasses: Int
    let maintenanceEvery: Int
    private var pass = 0
    private var cursor = 0
    private var retry: Set<String> = []

    init(scanPasses: Int = 600, maintenanceEvery: Int = 30) {
        self.scanPasses = max(1, scanPasses)
        self.maintenanceEvery = max(1, maintenanceEvery)
    }

    /// The steps of the next pass, each tenant once. `all` is every tenant, in a stable order.
    mutating func next(active: Set<String>, all: [String]) -> [Step] {
        pass += 1
        let maintenance = pass % maintenanceEvery == 0
        var steps: [Step] = []
        var seen: Set<String> = []
        for tenant in active.union(retry).sorted() where seen.insert(tenant).inserted {
            steps.append(Step(tenant: tenant, claim: maintenance, sweep: maintenance, recover: retry.contains(tenant)))
        }
        retry = []
        guard !all.isEmpty else { return steps }
        let slice = (all.count + scanPasses - 1) / scanPasses
        for offset in 0..<min(slice, all.count) {
            let tenant = all[(cursor + offset) % all.count]
            if seen.insert(tenant).inserted {
                steps.append(Step(tenant: tenant, claim: true, sweep: true))
            }
        }
        cursor = (cursor + slice) % all.count
        return steps
    }

    /// A tenant whose drain failed is read again next pass (the others are not held up).
    mutating func failed(_ tenant: String) {
        retry.insert(tenant)
    }

    /// Tenants known to have usage waiting (the backlog gauge).
    var backlog: Int { retry.count }
}
