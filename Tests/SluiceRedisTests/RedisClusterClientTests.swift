import Foundation
import NIOCore
import ServiceLifecycle
import SluiceTestSupport
import Testing

@testable import SluiceRedis

/// Against the stack's Redis Cluster (three masters, three replicas; scripts/stack-up.sh).
@Suite("Redis client against a real Redis Cluster")
struct RedisClusterClientTests {
    let client: RedisClient
    let prefix: String

    init() throws {
        client = try RedisClient(configuration: RedisConfiguration.patient(url: TestEnvironment.redisClusterURL))
        prefix = TestEnvironment.uniquePrefix("cluster")
    }

    /// Keys spread over every slot owner: each command reaches the master of its key's slot
    /// (a wrong guess would come back as MOVED, and the value would not be found).
    @Test func everyKeyReachesItsSlotsMasterAndOurSlotsAreRedis() async throws {
        defer { client.shutdown() }
        for index in 0..<300 {
            let key = "\(prefix)\(index)"
            #expect(try await client.send("SET", key, index, "EX", 60) == .simpleString("OK"))
            #expect(try await client.send("GET", key).string == String(index))
            let slot = try await client.send("CLUSTER", "KEYSLOT", key)
            #expect(slot.int == Int64(RedisHashSlot.of(key)), "\(key)")
        }
        let tagged = ["{\(prefix)t}:a", "{\(prefix)t}:b"]
        #expect(try await client.send("MSET", tagged[0], "1", tagged[1], "2") == .simpleString("OK"), "one slot: no CROSSSLOT")
        _ = try await client.send("DEL", tagged[0])
        _ = try await client.send("DEL", tagged[1])
    }

    /// PUBLISH on any node reaches a subscriber on any other: key invalidation reaches every replica.
    @Test func aPublishReachesASubscriberOnAnotherNode() async throws {
        defer { client.shutdown() }
        let channel = "\(prefix)channel"
        let subscriber = RedisSubscriber(client: client, channels: [channel])
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await subscriber.run() }
            var events = subscriber.events.makeAsyncIterator()
            #expect(await events.next() == .subscribed(channel: channel))
            // From three publishers, each talking to a different node first.
            for seed in try TestEnvironment.redisClusterURL.clusterSeeds() {
                let publisher = try RedisClient(configuration: RedisConfiguration.patient(url: "redis://\(seed)/0"))
                _ = try await publisher.send("PUBLISH", channel, seed)
                publisher.shutdown()
                guard case .message(_, let payload) = await events.next() else {
                    Issue.record("no message from \(seed)")
                    break
                }
                #expect(String(buffer: payload) == seed)
            }
            group.cancelAll()
        }
    }

    /// WAIT after a write: the cluster's replicas confirm it.
    @Test func aReplicatedWriteIsConfirmedByItsReplica() async throws {
        defer { client.shutdown() }
        let key = "\(prefix)durable"
        let (reply, replicas) = try await client.sendReplicated(RedisCommand("SET", key, "1", "EX", 60), replicas: 1,
                                                                waitTimeout: .seconds(1))
        #expect(reply == .simpleString("OK") && replicas == 1)
    }
}

extension String {
    /// The host:port list of a `redis+cluster://` URL.
    func clusterSeeds() throws -> [String] {
        guard case .cluster(let seeds) = try RedisConfiguration(url: self).topology else { return [] }
        return seeds.map(\.description)
    }
}

/// Redirections on a private cluster whose slot is put half-way through a migration by hand.
@Suite("Redis Cluster redirections", .serialized)
struct RedisClusterRedirectionTests {
    /// A script is loaded on every master at start-up; a master that forgets it (a promoted
    /// replica never had it) gets it again from the call that hit NOSCRIPT.
    /// (A private cluster: `SCRIPT FLUSH` on the stack's would pull scripts from under other tests.)
    @Test func scriptsLoadOnEveryMasterAndNoscriptRecoversOnTheNodeThatForgot() async throws {
        try await RedisClusterProcesses.with { cluster in
            let client = try RedisClient(configuration: RedisConfiguration.patient(url: cluster.url))
            defer { client.shutdown() }
            let script = RedisScript(name: "echo-key", source: "return redis.call('INCR', KEYS[1])")
            try await client.load([script])
            let shas = try await client.sendToEveryMaster(RedisCommand("SCRIPT", "EXISTS", script.sha1))
            #expect(shas.count == 3 && shas.allSatisfy { $0.array?.first?.int == 1 })
            let key = "script-\(UUID().uuidString.prefix(8))"
            #expect(try await client.evalScript(script, keys: [key], arguments: []).int == 1)
            // The key's master forgets every script.
            _ = try await client.send(RedisCommand("SCRIPT", ["FLUSH"], routingKey: key))
            #expect(try await client.evalScript(script, keys: [key], arguments: []).int == 2)
        }
    }

    /// With the slot MIGRATING on its master and IMPORTING on another, a key the master does
    /// not have is answered with ASK: the client sends ASKING and the command to the importing
    /// node, without moving the slot in its map. Once the slot is assigned to the other node, the
    /// old master answers MOVED and the client follows and remembers it.
    @Test func askIsFollowedOnceAndMovedForGood() async throws {
        try await RedisClusterProcesses.with { cluster in
            let key = "ask-\(UUID().uuidString.prefix(8))"
            let slot = String(RedisHashSlot.of(key))
            guard let source = try await cluster.masterPort(forKey: key) else { throw RedisClusterError.failed("no master") }
            let target = cluster.ports.prefix(3).first { $0 != source }!
            let sourceID = try await cluster.nodeID(port: source), targetID = try await cluster.nodeID(port: target)
            let client = try RedisClient(configuration: RedisConfiguration.patient(url: cluster.url))
            defer { client.shutdown() }
            _ = try await client.send("PING")  // learns the slot map
            _ = try await cluster.command(["CLUSTER", "SETSLOT", slot, "IMPORTING", sourceID], port: target)
            _ = try await cluster.command(["CLUSTER", "SETSLOT", slot, "MIGRATING", targetID], port: source)
            #expect(try await client.send("SET", key, "moved-by-ask") == .simpleString("OK"))
            // The key was written on the importing node, not on the source.
            #expect(try await cluster.command(["CLUSTER", "COUNTKEYSINSLOT", slot], port: target) == .integer(1))
            #expect(try await cluster.command(["CLUSTER", "COUNTKEYSINSLOT", slot], port: source) == .integer(0))
            // The slot is handed over: the old master answers MOVED from now on.
            for port in cluster.ports.prefix(3) {
                _ = try await cluster.command(["CLUSTER", "SETSLOT", slot, "NODE", targetID], port: port)
            }
            #expect(try await client.send("GET", key).string == "moved-by-ask")
            #expect(try await cluster.command(["GET", key], port: target).string == "moved-by-ask")
        }
    }
}
