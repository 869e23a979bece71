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
    /// for the cluster to join without end). Spawned and reaped by hand on a thread of its own:
    /// Foundation's `Process` never reported the end of a script whose children daemonize.
    static func run(_ executable: String, _ arguments: [String], limit: Int = 120) async throws {
        let log = FileManager.default.temporaryDirectory.appendingPathComponent("sluice-cluster-\(UUID().uuidString).log").path
        defer { try? FileManager.default.removeItem(atPath: log) }
        let words = executable == "/usr/bin/env" ? arguments : [executable] + arguments
        let line = words.map { "'" + $0.replacingOccurrences(of: "'", with: "'\\''") + "'" }.joined(separator: " ")
        let command = "timeout -k 5 \(limit) \(executable == "/usr/bin/env" ? "" : "bash ")\(line) </dev/null >/dev/null 2>'\(log)'"
        let status: Int32 = try await withCheckedThrowingContinuation { continuation in
            let thread = Thread {
                var pid: pid_t = 0
                let argv: [UnsafeMutablePointer<CChar>?] = ["/bin/sh", "-c", command].map { (word: String) in strdup(word) } + [nil]
                defer { for pointer in argv { free(pointer) } }
                // Nothing of this process but stdio reaches the script: servers it daemonizes
                // would otherwise keep copies of whatever sockets were open at that moment (a
                // port just probed as free, a test's listener) for as long as they run.
                var actions = posix_spawn_file_actions_t()
                posix_spawn_file_actions_init(&actions)
                defer { posix_spawn_file_actions_destroy(&actions) }
                _ = Self.closeFrom?(&actions, 3)
                let spawned = posix_spawn(&pid, "/bin/sh", &actions, nil, argv, environ)
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

    /// glibc's `posix_spawn_file_actions_addclosefrom_np` (2.34 and later), which Swift's Glibc
    /// module does not declare.
    private static let closeFrom: (@convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, Int32) -> Int32)? = {
        guard let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "posix_spawn_file_actions_addclosefrom_np") else { return nil }
        return unsafeBitCast(symbol, to: (@convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, Int32) -> Int32).self)
    }()

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
