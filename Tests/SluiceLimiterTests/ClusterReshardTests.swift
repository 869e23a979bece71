import Foundation
import SluiceRedis
import SluiceTestSupport
import Synchronization
import Testing

@testable import SluiceLimiter

/// The limiter on a private Redis Cluster while `redis-cli --cluster reshard` moves the
/// tenant's slot to another master.
@Suite("Limits on a Redis Cluster while slots move", .serialized)
struct ClusterReshardTests {
    /// Four replicas use up a 60-per-minute burst, keep sending while the slot migrates (keys
    /// move one by one: the scripts meet ASK and TRYAGAIN), then burst again once it has moved.
    /// Over the whole run the admitted count stays within the burst plus the refill: the state
    /// moved with the slot, nothing started over from a full bucket.
    @Test func limitsHoldWhileTheTenantsSlotMigrates() async throws {
        try await RedisClusterProcesses.with { cluster in
            try await Self.migrateUnderLoad(cluster)
        }
    }

    /// `count` admits at once, spread over the replicas.
    private static func burst(_ count: Int, _ replicas: [LimiterFixture], _ tenant: String, _ limits: Limits,
                              _ tally: AdmitTally) async {
        await withTaskGroup(of: Void.self) { group in
            for index in 0..<count {
                let replica = replicas[index % replicas.count]
                group.addTask {
                    var request = replica.request(keyID: "k", keyLimits: limits)
                    request.tenantID = tenant
                    tally.record(await replica.limiter.admit(request))
                }
            }
        }
    }

    private static func migrateUnderLoad(_ cluster: RedisClusterProcesses) async throws {
        let limit = 60
        // A tenant whose slot is among the first 50 of its master's range: the reshard of 100
        // slots below moves it (redis-cli takes the source's slots from the lowest).
        var tenant = ""
        repeat {
            tenant = "rs" + UUID().uuidString.prefix(12).lowercased()
            let slot = Int(RedisHashSlot.of(LimiterKeys(tenantID: tenant).tag))
            if [0, 5_461, 10_923].contains(where: { slot >= $0 && slot < $0 + 50 }) { break }
        } while true
        let slotKey = LimiterKeys(tenantID: tenant).tag
        let tenantID = tenant
        guard let source = try await cluster.masterPort(forKey: slotKey) else {
            Issue.record("no master for the slot")
            return
        }
        let target = cluster.ports.prefix(3).first { $0 != source }!
        // No deny cache: every request goes to Redis while the slot moves.
        var configuration = LimiterConfiguration()
        configuration.denyCacheCapacity = 0
        let replicas = try (0..<4).map { _ in try LimiterFixture(url: cluster.url, configuration: configuration, poolSize: 1) }
        defer { for replica in replicas { replica.client.shutdown() } }
        let limits = Limits(requestsPerMinute: limit)
        let tally = AdmitTally()
        let started = ContinuousClock.now
        await Self.burst(2 * limit, replicas, tenant, limits, tally)
        #expect(tally.admitted == limit, "the first burst admits the limit")

        // The migration, with requests flowing all along.
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                defer { tally.finished.store(true, ordering: .relaxed) }
                try await cluster.reshard(fromPort: source, toPort: target, slots: 100)
            }
            group.addTask {
                while !tally.finished.load(ordering: .relaxed) { await Self.burst(8, replicas, tenantID, limits, tally) }
            }
            try await group.waitForAll()
        }
        #expect(try await cluster.masterPort(forKey: slotKey) == target, "the tenant's slot moved")
        await Self.burst(2 * limit, replicas, tenant, limits, tally)
        let elapsed = Double((ContinuousClock.now - started).components.seconds) + 1
        let ceiling = limit + Int(elapsed * Double(limit) / 60) + 1
        print("reshard under load: \(tally.summary) in \(Int(elapsed)) s; at most \(ceiling) may be admitted")
        #expect(tally.admitted <= ceiling, "the limit held through the migration")
        #expect(tally.admitted >= limit, "and was not refused wholesale")
    }
}

/// Decisions by kind, shared by the load's tasks.
final class AdmitTally: Sendable {
    private let counts = Mutex<[String: Int]>([:])
    /// Set when the migration is over.
    let finished = Atomic<Bool>(false)

    func record(_ decision: AdmitDecision) {
        let kind = switch decision {
        case .admitted: "admitted"
        case .denied: "denied"
        case .neverFits: "never fits"
        case .unavailable: "unavailable"
        }
        counts.withLock { $0[kind, default: 0] += 1 }
    }

    var admitted: Int { counts.withLock { $0["admitted"] ?? 0 } }
    var summary: String { counts.withLock { $0.sorted { $0.key < $1.key }.map { "\($0.value) \($0.key)" }.joined(separator: ", ") } }
}
