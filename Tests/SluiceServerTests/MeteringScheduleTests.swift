import Testing

@testable import SluiceServer

/// Which streams the metering worker reads per pass: cost that follows traffic, every tenant
/// still visited, failures retried without holding up the rest. No I/O.
@Suite("Metering schedule")
struct MeteringScheduleTests {
    let tenants = (0..<1_000).map { "t\($0)" }

    @Test func activeTenantsEveryPassEveryTenantWithinTheRotation() {
        var schedule = MeteringSchedule(scanPasses: 100, maintenanceEvery: 30)
        var visited: Set<String> = []
        for _ in 0..<100 {
            let steps = schedule.next(active: ["t7", "t500"], all: tenants)
            #expect(steps.prefix(2).map(\.tenant) == ["t500", "t7"], "active tenants first, every pass")
            #expect(steps.count <= 12, "2 active + a slice of 10: the cost does not grow with the tenant count")
            #expect(Set(steps.map(\.tenant)).count == steps.count, "each tenant once per pass")
            visited.formUnion(steps.map(\.tenant))
        }
        #expect(visited.count == tenants.count, "every tenant within one rotation")
    }

    @Test func withoutTrafficAPassCostsOnlyItsSlice() {
        var schedule = MeteringSchedule(scanPasses: 600, maintenanceEvery: 30)
        let many = (0..<10_000).map { "t\($0)" }
        let steps = schedule.next(active: [], all: many)
        #expect(steps.count == 17)
        #expect(steps.allSatisfy { $0.claim && $0.sweep }, "the rotation claims and sweeps")
    }

    @Test func activeTenantsClaimAndSweepEveryMaintenancePass() {
        var schedule = MeteringSchedule(scanPasses: 1_000, maintenanceEvery: 3)
        let maintained = (1...6).map { _ in schedule.next(active: ["a"], all: []).first!.claim }
        #expect(maintained == [false, false, true, false, false, true])
    }

    @Test func aFailedTenantIsRetriedNextPassAndOthersAreNotHeldUp() {
        var schedule = MeteringSchedule(scanPasses: 1_000, maintenanceEvery: 30)
        _ = schedule.next(active: ["a", "b"], all: [])
        schedule.failed("a")
        #expect(schedule.backlog == 1)
        let next = schedule.next(active: ["c"], all: [])
        #expect(next.map(\.tenant) == ["a", "c"])
        #expect(next.map(\.recover) == [true, false], "the failed tenant rereads what it read but did not acknowledge")
        #expect(schedule.next(active: [], all: []).isEmpty, "retried once it succeeded")
    }
}
