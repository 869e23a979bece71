import Foundation

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
