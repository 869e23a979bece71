import Foundation
import NIOCore
import NIOPosix
import SluiceRedis

/// A private Redis Cluster (three masters, three replicas; `scripts/redis-cluster.sh`) for tests
/// that kill or reshard nodes, so they never disturb the stack's cluster. `stop()` ends it.
public final class RedisClusterProcesses: Sendable {
    public let basePort: Int
    private let directory: String
    private static let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .appendingPathComponent("../../scripts/redis-cluster.sh").standardized.path

    public init() async throws {
        basePort = try await Self.freePortRange()
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("sluice-cluster-\(basePort)").path
        try await Self.run(Self.script, ["start", directory, String(basePort)])
    }

    public var ports: [Int] { (0..<6).map { basePort + $0 } }

    /// Seeds: the three nodes that start as masters.
    public var url: String { "redis+cluster://" + ports.prefix(3).map { "127.0.0.1:\($0)" }.joined(separator: ",") }

    public func stop() async {
        try? await Self.run(Self.script, ["stop", directory])
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
        try await Self.run("/usr/bin/env", ["redis-cli", "--cluster", "reshard", "127.0.0.1:\(basePort)", "--cluster-from", from,
                                      "--cluster-to", to, "--cluster-slots", String(slots), "--cluster-yes",
                                      "--cluster-pipeline", "100"])
    }

    /// One command to one node, on a connection of its own.
    public func command(_ words: [String], port: Int) async throws -> RESPValue {
        let client = try RedisClient(configuration: RedisConfiguration(port: port))
        defer { client.shutdown() }
        return try await client.send(RedisCommand(words[0], Array(words.dropFirst())))
    }

    /// Runs a command to its end. Spawned and reaped by hand on a thread of its own: Foundation's
    /// `Process` never reported the end of a script whose children daemonize.
    private static func run(_ executable: String, _ arguments: [String]) async throws {
        let log = FileManager.default.temporaryDirectory.appendingPathComponent("sluice-cluster-\(UUID().uuidString).log").path
        defer { try? FileManager.default.removeItem(atPath: log) }
        let words = executable == "/usr/bin/env" ? arguments : [executable] + arguments
        let line = words.map { "'" + $0.replacingOccurrences(of: "'", with: "'\\''") + "'" }.joined(separator: " ")
        let command = "\(executable == "/usr/bin/env" ? "" : "bash ")\(line) </dev/null >/dev/null 2>'\(log)'"
        let status: Int32 = try await withCheckedThrowingContinuation { continuation in
            let thread = Thread {
                var pid: pid_t = 0
                let argv: [UnsafeMutablePointer<CChar>?] = ["/bin/sh", "-c", command].map { (word: String) in strdup(word) } + [nil]
                defer { for pointer in argv { free(pointer) } }
                let spawned = posix_spawn(&pid, "/bin/sh", nil, nil, argv, environ)
                guard spawned == 0 else {
                    continuation.resume(throwing: RedisClusterError.failed("posix_spawn: \(spawned)"))
                    return
                }
                var status: Int32 = 0
                while waitpid(pid, &status, 0) == -1, errno == EINTR {}
                continuation.resume(returning: status)
            }
            thread.start()
        }
        guard status == 0 else {
            let output = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
            throw RedisClusterError.failed("\(arguments.prefix(2).joined(separator: " ")): \(output)")
        }
    }

    /// Six client ports and their bus ports (20 above), all free.
    private static func freePortRange() async throws -> Int {
        for _ in 0..<50 {
            let base = Int.random(in: 30_000..<50_000)
            var free = true
            for port in (0..<6).flatMap({ [base + $0, base + 20 + $0] }) {
                do {
                    let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                        .bind(host: "127.0.0.1", port: port).get()
                    try await channel.close()
                } catch {
                    free = false
                    break
                }
            }
            if free { return base }
        }
        throw RedisClusterError.failed("no free port range")
    }
}

public enum RedisClusterError: Error {
    case failed(String)
}
