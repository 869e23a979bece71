import Foundation
import NIOCore
import NIOPosix

/// One private topology at a time in a test process: a cluster is six servers, and several
/// starting at once beside the other suites starve a 2-core machine into timeouts.
actor LocalTopologyGate {
    static let shared = LocalTopologyGate()
    private var busy = false
    private var waiting: [CheckedContinuation<Void, Never>] = []

    func acquire() async {
        guard busy else {
            busy = true
            return
        }
        await withCheckedContinuation { waiting.append($0) }
    }

    func release() {
        if waiting.isEmpty { busy = false } else { waiting.removeFirst().resume() }
    }

    /// Starts a topology with `start`, runs `body` on it, stops it with `stop` (also when
    /// `body` throws), holding the gate throughout.
    static func with<Topology: Sendable, T: Sendable>(
        start: () async throws -> Topology, stop: (Topology) async -> Void, _ body: (Topology) async throws -> T
    ) async throws -> T {
        await shared.acquire()
        do {
            let topology = try await start()
            do {
                let result = try await body(topology)
                await stop(topology)
                await shared.release()
                return result
            } catch {
                await stop(topology)
                throw error
            }
        } catch {
            await shared.release()
            throw error
        }
    }
}

/// Runs the repository's scripts that start local Redis topologies (scripts/redis-*.sh).
enum LocalRedisScripts {
    static func path(_ name: String) -> String {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../scripts/\(name)").standardized.path
    }

    /// Runs a command to its end, or kills it after `limit` (`redis-cli --cluster create` waits
    /// for the cluster to join without end). Its stderr is in the error when it fails.
    static func run(_ executable: String, _ arguments: [String], limit: Int = 120) async throws {
        let log = FileManager.default.temporaryDirectory.appendingPathComponent("sluice-cluster-\(UUID().uuidString).log").path
        defer { try? FileManager.default.removeItem(atPath: log) }
        let words = executable == "/usr/bin/env" ? arguments : ["bash", executable] + arguments
        let code = try await ChildProcess.run("/usr/bin/timeout", ["-k", "5", String(limit)] + words, output: log)
        guard code == 0 else {
            let output = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
            throw RedisClusterError.failed("\(arguments.prefix(2).joined(separator: " ")): \(output)")
        }
    }

    /// A base port such that every `base + offset` is free.
    static func freePortRange(_ offsets: [Int]) async throws -> Int {
        for _ in 0..<50 {
            let base = Int.random(in: 20_000..<32_000)  // below the ephemeral range (32768 up)
            var free = true
            for port in offsets.map({ base + $0 }) {
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

    /// Starts `script` on a free port range (`offsets` from its base) in a fresh folder; tries
    /// another range when a port was taken meanwhile. Returns the base port and the folder.
    static func start(_ script: String, offsets: [Int], name: String) async throws -> (port: Int, directory: String) {
        var failure: (any Error)?
        for _ in 0..<3 {
            let port = try await freePortRange(offsets)
            let directory = FileManager.default.temporaryDirectory.appendingPathComponent("sluice-\(name)-\(port)").path
            do {
                try await run(path(script), ["start", directory, String(port)])
                return (port, directory)
            } catch {
                try? await run(path(script), ["stop", directory])
                failure = error
            }
        }
        throw failure ?? RedisClusterError.failed("\(script) did not start")
    }
}
