import Foundation
import NIOCore
import NIOPosix
import SluiceRedis

/// A private Redis Cluster (three masters, three replicas; `scripts/redis-cluster.sh`) for tests
/// that kill or reshard nodes, so they never disturb the stack's cluster. Use `with`: it stops
/// the cluster afterwards, and runs one private topology at a time.
public final class RedisClusterProcesses: Sendable {
    public let basePort: Int
    private let directory: String
    private static let script = LocalRedisScripts.path("redis-cluster.sh")

    /// Runs `body` on a fresh private cluster, then stops it.
    public static func with<T: Sendable>(_ body: (RedisClusterProcesses) async throws -> T) async throws -> T {
        try await LocalTopologyGate.with(start: { try await RedisClusterProcesses() }, stop: { await $0.stop() }, body)
    }

    init() async throws {
        (basePort, directory) = try await LocalRedisScripts.start("redis-cluster.sh", offsets: Array(0..<6) + Array(20..<26), name: "cluster")
    }

    public var ports: [Int] { (0..<6).map { basePort + $0 } }

    /// Seeds: the three nodes that start as masters.
    public var url: String { "redis+cluster://" + ports.prefix(3).map { "127.0.0.1:\($0)" }.joined(separator: ",") }

    func stop() async {
        try? await LocalRedisScripts.run(Self.script, ["stop", directory])
    }

    /// SIGKILL one node.
    public func kill(port: Int) throws {
        let index = port - basePort
        let pid = try String(contentsOfFile: "\(directory)/node-\(index)/redis.pid", encoding: .utf8)
        guard let number = Int32(pid.trimmingCharacters(in: .whitespacesAndNewlines)) else { return }
        Foundation.kill(number, SIGKILL)
    }

    /// The port of the master serving `key`'s slot, asked of a node that is alive.
    public func masterPort(forKey key: String, askingPort: Int? = nil) async throws -> Int? {
        let slot = Int(RedisHashSlot.of(key))
        let reply = try await command(["CLUSTER", "SLOTS"], port: askingPort ?? basePort)
        for range in reply.array ?? [] {
            guard let parts = range.array, parts.count >= 3, let start = parts[0].int, let end = parts[1].int,
                  Int(start) <= slot, slot <= Int(end) else { continue }
            return parts[2].array?[1].int.map { Int($0) }
        }
        return nil
    }

    /// The node id of the node on `port`.
    public func nodeID(port: Int) async throws -> String {
        try await command(["CLUSTER", "MYID"], port: port).string ?? ""
    }

    /// Moves `slots` slots from one master to another with `redis-cli --cluster reshard`.
    public func reshard(fromPort: Int, toPort: Int, slots: Int) async throws {
        let from = try await nodeID(port: fromPort), to = try await nodeID(port: toPort)
        try await LocalRedisScripts.run("/usr/bin/env", ["redis-cli", "--cluster", "reshard", "127.0.0.1:\(basePort)", "--cluster-from", from,
                                      "--cluster-to", to, "--cluster-slots", String(slots), "--cluster-yes",
                                      "--cluster-pipeline", "100"])
    }

    /// One command to one node, on a connection of its own.
    public func command(_ words: [String], port: Int) async throws -> RESPValue {
        try await Self.command(words, port: port)
    }

    /// One command to a server on loopback, on a connection of its own.
    public static func command(_ words: [String], port: Int) async throws -> RESPValue {
        let client = try RedisClient(configuration: RedisConfiguration.patient(port: port))
        defer { client.shutdown() }
        return try await client.send(RedisCommand(words[0], Array(words.dropFirst())))
    }
}

public enum RedisClusterError: Error {
    case failed(String)
}
