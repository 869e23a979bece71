import Foundation
import Testing

@testable import SluiceServer

/// The Redis settings of the configuration file and the environment.
@Suite("Redis settings")
struct RedisSettingsTests {
    static let secrets = ["SLUICE_ADMIN_JWT_SECRET": String(repeating: "s", count: 40), "SLUICE_KEY_PEPPER": String(repeating: "p", count: 20)]

    static func load(_ yaml: String, environment: [String: String] = [:]) throws(ConfigurationError) -> GatewayConfiguration {
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("sluice-\(UUID().uuidString).yaml").path
        let model = "models:\n  - name: m\n    backends: [{url: \"http://127.0.0.1:9\"}]\n"
        FileManager.default.createFile(atPath: file, contents: Data((model + yaml).utf8))
        defer { try? FileManager.default.removeItem(atPath: file) }
        return try GatewayConfiguration.load(file: file, environment: secrets.merging(environment) { $1 })
    }

    /// `yaml` (after the configuration's one model) must stop start-up with an error naming `key`.
    static func expectRefused(_ yaml: String, key: String, environment: [String: String] = [:],
                              sourceLocation: SourceLocation = #_sourceLocation) {
        do {
            _ = try load(yaml, environment: environment)
            Issue.record("accepted: \(yaml)", sourceLocation: sourceLocation)
        } catch {
            #expect(error.key == key, "\(yaml): \(error)", sourceLocation: sourceLocation)
        }
    }

    @Test func clusterNodesAndSettleReplicasFromTheFileAndTheEnvironment() throws {
        let configuration = try Self.load("redis_cluster_nodes: [10.0.0.1:7000, 10.0.0.2:7001]\nredis_settle_replicas: 1\n")
        #expect(configuration.redisURL == "redis+cluster://10.0.0.1:7000,10.0.0.2:7001")
        #expect(configuration.redisSettleReplicas == 1)
        let overridden = try Self.load("redis_settle_replicas: 1\n", environment: ["SLUICE_REDIS_SETTLE_REPLICAS": "0"])
        #expect(overridden.redisSettleReplicas == 0)
    }

    @Test func badRedisSettingsNameTheirKey() {
        for (yaml, key) in [("redis_cluster_nodes: []\n", "redis_cluster_nodes"),
                            ("redis_cluster_nodes: [\"a:1,b:2\"]\n", "redis_cluster_nodes"),
                            ("redis_cluster_nodes: 5\n", "redis_cluster_nodes"),
                            ("redis_settle_replicas: 99\n", "redis_settle_replicas"),
                            ("redis_url: redis+cluster://\n", "redis_url")] {
            Self.expectRefused(yaml, key: key)
        }
        #expect(throws: ConfigurationError.self) { _ = try Self.load("", environment: ["SLUICE_REDIS_SETTLE_REPLICAS": "many"]) }
    }
}
