import Foundation
import SluiceLimiter
import SluiceRedis
import SluiceTenancy
import SluiceTestSupport
import Synchronization
import Testing

/// The gateway on a private Redis Cluster whose master is killed under load.
@Suite("Gateway through a Redis Cluster failover", .serialized)
struct ClusterFailoverTests {
    /// Kills the master of the tenant's slot while eight clients send requests, until its
    /// replica is promoted and requests are admitted again. Meanwhile each answer is what the
    /// failure policy promises (`closed`: 503 `limiter_unavailable`; `open`: admitted), and
    /// afterwards every admitted request is in the ledger exactly once: usage settled on the
    /// dead master and never confirmed by its replica went to the ledger directly.
    @Test(arguments: [RedisFailurePolicy.closed, .open])
    func aMasterKilledUnderLoadLosesNoBill(policy: RedisFailurePolicy) async throws {
        try await RedisClusterProcesses.with { cluster in
            try await failover(cluster, policy: policy)
        }
    }

    private func failover(_ cluster: RedisClusterProcesses, policy: RedisFailurePolicy) async throws {
        try await GatewayHarness.run(keyLimits: Limits(requestsPerMinute: 1_000_000), redisURL: cluster.url,
                                     failurePolicy: policy, settleReplicas: 1) { gateway in
            try await Self.killTheMaster(under: gateway, cluster: cluster, policy: policy)
        }
    }

    private static func killTheMaster(under gateway: GatewayHarness, cluster: RedisClusterProcesses,
                                      policy: RedisFailurePolicy) async throws {
        let slotKey = "sl:{t:\(gateway.tenant.id.uuidString.lowercased())}"
        guard let victim = try await cluster.masterPort(forKey: slotKey) else {
            Issue.record("no master for the tenant's slot")
            return
        }
        let survivor = cluster.ports.first { $0 != victim }!
        try await failOver(under: gateway, policy: policy, kill: { try cluster.kill(port: victim) }, diagnosis: {
            // Where the usage stream stands on the promoted master, should a bill be missing.
            let stream = "\(slotKey):usage:batched"
            guard let master = try? await cluster.masterPort(forKey: slotKey, askingPort: survivor) else { return "no master" }
            let length = (try? await cluster.command(["XLEN", stream], port: master))?.int ?? -1
            let groups = (try? await cluster.command(["XINFO", "GROUPS", stream], port: master)).map { "\($0)" } ?? "none"
            let pending = (try? await cluster.command(["ZCARD", "\(slotKey):pending"], port: master))?.int ?? -1
            return "usage stream on \(master): \(length) entries; groups \(groups); \(pending) unsettled reservations"
        }, promoted: {
            // A live node names another master for the slot (node timeout 1 s).
            guard let master = try? await cluster.masterPort(forKey: slotKey, askingPort: survivor) else { return false }
            return master != victim
        })
    }

    /// Sends load through the gateway, kills the master with `kill`, waits for `promoted`,
    /// then checks the answers against the policy and the ledger against the admitted requests.
    static func failOver(under gateway: GatewayHarness, policy: RedisFailurePolicy, kill: @escaping @Sendable () throws -> Void,
                         diagnosis: @Sendable () async -> String = { "" },
                         promoted: @escaping @Sendable () async -> Bool) async throws {
        let load = LoadRecord()
        try await withThrowingTaskGroup(of: Void.self) { group in
            for worker in 0..<8 {
                group.addTask { try await load.send(through: gateway, worker: worker) }
            }
            try await Task.sleep(for: .milliseconds(500))
            try kill()
            load.phase.store(1, ordering: .relaxed)
            let deadline = ContinuousClock.now + .seconds(30)
            while ContinuousClock.now < deadline, !(await promoted()) {
                try await Task.sleep(for: .milliseconds(100))
            }
            load.phase.store(2, ordering: .relaxed)
            // Run until 50 requests after the promotion were admitted (or 20 s pass).
            let recoveryDeadline = ContinuousClock.now + .seconds(20)
            while ContinuousClock.now < recoveryDeadline,
                  load.answers.withLock({ $0.filter { $0.afterRecovery && $0.status == 200 }.count }) < 50 {
                try await Task.sleep(for: .milliseconds(50))
            }
            load.phase.store(3, ordering: .relaxed)
            try await group.waitForAll()
        }
        let all = load.answers.withLock { $0 }
        let admitted = all.filter { $0.status == 200 }
        let refused = all.filter { $0.status != 200 }
        print("failover (\(policy)): \(all.count) requests, \(admitted.count) admitted, refused: "
              + "\(Dictionary(grouping: refused, by: { "\($0.status) \($0.code ?? "")" }).mapValues(\.count))")
        switch policy {
        case .closed:
            let other = refused.filter { $0.status != 503 || $0.code != "limiter_unavailable" }
            let examples = other.prefix(3).map { "\($0.status) \($0.code ?? "-")" }.joined(separator: ", ")
            #expect(other.isEmpty, "closed refuses with 503 limiter_unavailable, nothing else: \(examples)")
        case .open, .local:
            #expect(refused.isEmpty, "open keeps admitting")
        }
        #expect(all.filter { $0.afterRecovery && $0.status == 200 }.count >= 50, "admitting again after the promotion")
        // Entries the metering worker read from the dead master and never acknowledged are
        // claimed from the promoted one after the claim time (60 s): late, never lost.
        let rows = try await GatewayHardeningTests.ledger(tenant: gateway.tenant.id, atLeast: admitted.count, within: .seconds(100))
        let billed = rows.compactMap(\.clientRequestID)
        #expect(billed.count == Set(billed).count, "no request billed twice")
        let missing = Set(admitted.map(\.id)).subtracting(billed)
        let afterRecovery = admitted.filter { missing.contains($0.id) && $0.afterRecovery }.count
        let report = "\(rows.count) rows, \(admitted.count) admitted, \(missing.count) missing (\(afterRecovery) after the promotion), e.g. "
            + missing.sorted().prefix(5).joined(separator: " ")
        let complete = missing.isEmpty && billed.count == admitted.count
        let state = complete ? "" : await diagnosis()
        #expect(complete, "every admitted request billed: \(report); \(state)")
    }
}

/// The gateway on a private Sentinel setup (a master, a replica, three sentinels) whose master
/// is killed under load: the client follows the sentinels to the promoted replica.
@Suite("Gateway through a Redis Sentinel failover", .serialized)
struct SentinelFailoverTests {
    @Test func aMasterKilledUnderLoadIsFollowedToThePromotedReplica() async throws {
        try await RedisSentinelProcesses.with { sentinel in
            try await GatewayHarness.run(keyLimits: Limits(requestsPerMinute: 1_000_000), redisURL: sentinel.url,
                                         failurePolicy: .closed, settleReplicas: 1) { gateway in
                try await ClusterFailoverTests.failOver(under: gateway, policy: .closed, kill: { try sentinel.killMaster() },
                                                        promoted: {
                    let reply = try? await RedisClusterProcesses.command(["SENTINEL", "get-master-addr-by-name", "sluice"],
                                                                        port: sentinel.basePort + 10)
                    return reply?.array?.last?.string == String(sentinel.replicaPort)
                })
            }
        }
    }

    /// A server that is not a master is refused at connect time under Sentinel, so a demoted
    /// master that comes back is never written to.
    @Test func aReplicaIsNeverTakenForTheMaster() async throws {
        try await RedisSentinelProcesses.with { sentinel in
            var configuration = RedisConfiguration.patient(port: sentinel.replicaPort)
            configuration.requiresMasterRole = true
            let client = try RedisClient(configuration: configuration)
            defer { client.shutdown() }
            await #expect(throws: RedisClientError.self) { _ = try await client.send("SET", "k", "v") }
        }
    }
}

/// What the load saw: each answer, and where the test is (shared with the load's tasks).
final class LoadRecord: Sendable {
    struct Answer: Sendable {
        let id: String
        let status: Int
        let code: String?
        let afterRecovery: Bool
    }

    let answers = Mutex<[Answer]>([])
    /// 0 before the kill, 1 until the promotion, 2 after it, 3 stop.
    let phase = Atomic<Int>(0)

    /// One client: a request after another, each with its own id, until the phase is 3.
    func send(through gateway: GatewayHarness, worker: Int) async throws {
        var index = 0
        while phase.load(ordering: .relaxed) < 3 {
            index += 1
            let id = "fo-\(worker)-\(index)"
            let recovered = phase.load(ordering: .relaxed) == 2
            let response = try await gateway.chat(headers: [("x-request-id", id)])
            let answer = Answer(id: id, status: response.status, code: response.errorCode, afterRecovery: recovered)
            answers.withLock { $0.append(answer) }
        }
    }
}
