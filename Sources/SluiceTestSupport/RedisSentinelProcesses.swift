import Foundation

/// A private Redis master, replica and three sentinels (`scripts/redis-sentinel.sh`; master
/// name `sluice`) for tests that fail the master over. Use `with`: it stops them afterwards.
public final class RedisSentinelProcesses: Sendable {
    public let basePort: Int
    private let directory: String
    private static let script = LocalRedisScripts.path("redis-sentinel.sh")

    /// Runs `body` on a fresh private Sentinel setup, then stops it.
    public static func with<T: Sendable>(_ body: (RedisSentinelProcesses) async throws -> T) async throws -> T {
        try await LocalTopologyGate.with(start: { try await RedisSentinelProcesses() }, stop: { await $0.stop() }, body)
    }

    init() async throws {
        (basePort, directory) = try await LocalRedisScripts.start("redis-sentinel.sh", offsets: [0, 1, 10, 11, 12], name: "sentinel")
    }

    public var masterPort: Int { basePort }
    public var replicaPort: Int { basePort + 1 }
    public var url: String { "redis+sentinel://" + (10...12).map { "127.0.0.1:\(basePort + $0)" }.joined(separator: ",") + "/sluice" }

    /// SIGKILL the first master.
    public func killMaster() throws {
        let pid = try String(contentsOfFile: "\(directory)/master/redis.pid", encoding: .utf8)
        guard let number = Int32(pid.trimmingCharacters(in: .whitespacesAndNewlines)) else { return }
        Foundation.kill(number, SIGKILL)
    }

    func stop() async {
        try? await LocalRedisScripts.run(Self.script, ["stop", directory])
    }
}
