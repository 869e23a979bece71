import Foundation
import NIOCore
import SluiceRedis

/// Where the development stack (scripts/stack-up.sh) listens, as the environment says.
public enum TestEnvironment {
    public static var redisURL: String {
        ProcessInfo.processInfo.environment["SLUICE_TEST_REDIS_URL"] ?? "redis://127.0.0.1:16379/0"
    }

    /// The stack's Redis Cluster (three masters, three replicas).
    public static var redisClusterURL: String {
        ProcessInfo.processInfo.environment["SLUICE_TEST_REDIS_CLUSTER_URL"]
            ?? "redis+cluster://127.0.0.1:16479,127.0.0.1:16480,127.0.0.1:16481"
    }

    public static var databaseURL: String {
        ProcessInfo.processInfo.environment["SLUICE_TEST_DATABASE_URL"]
            ?? "postgres://sluice:sluice@127.0.0.1:15432/sluice"
    }

    /// A prefix that keeps one test's keys apart from every other test's on a shared Redis.
    public static func uniquePrefix(_ name: String) -> String {
        "test:\(name):\(UUID().uuidString.prefix(8)):"
    }
}

extension RedisConfiguration {
    /// For tests that do not measure timing: the defaults (1 s to connect, 1 s per command)
    /// time out spuriously while a loaded 2-core machine starts dozens of servers at once.
    public static func patient(url: String) throws -> RedisConfiguration {
        var configuration = try RedisConfiguration(url: url)
        configuration.makePatient()
        return configuration
    }

    public static func patient(port: Int) -> RedisConfiguration {
        var configuration = RedisConfiguration(port: port)
        configuration.makePatient()
        return configuration
    }

    private mutating func makePatient() {
        connectTimeout = .seconds(5)
        commandTimeout = .seconds(5)
    }
}
