import Foundation
import NIOCore
import SluiceRedis
import SluiceTestSupport
import Testing

@testable import SluiceLimiter

/// The stack's two Redis setups: the exactness tests pass on both.
enum RedisTarget: String, CaseIterable, Sendable, CustomTestStringConvertible {
    case standalone
    case cluster

    var url: String { self == .cluster ? TestEnvironment.redisClusterURL : TestEnvironment.redisURL }
    var testDescription: String { rawValue }
}

/// A fresh tenant per test, so tests share the stack's Redis without seeing each other.
struct LimiterFixture {
    let client: RedisClient
    let limiter: Limiter
    let tenant: String

    init(target: RedisTarget = .standalone, url: String? = nil, configuration: LimiterConfiguration = .init(),
         poolSize: Int = 2) throws {
        var redis = try RedisConfiguration.patient(url: url ?? target.url)
        redis.poolSize = poolSize
        client = try RedisClient(configuration: redis)
        limiter = Limiter(client: client, configuration: configuration)
        tenant = "t" + UUID().uuidString.prefix(12).lowercased()
    }

    func request(_ id: String = UUID().uuidString, keyID: String = "k1", model: String = "m1", reserve: Int = 0,
                 tenantLimits: Limits = .none, keyLimits: Limits = .none, modelLimits: Limits = .none) -> AdmitRequest {
        AdmitRequest(requestID: id, tenantID: tenant, keyID: keyID, model: model, tokensToReserve: reserve,
                     tenantLimits: tenantLimits, keyLimits: keyLimits, modelLimits: modelLimits)
    }

    /// The scripts' store on the same Redis (for seeding spend, and for calls below the limiter).
    var store: RedisLimiterStore { RedisLimiterStore(client: client, timings: LimiterTimings()) }

    /// Every Redis key of this tenant.
    func keys() async throws -> [String] {
        var cursor = "0"
        var found: [String] = []
        repeat {
            // On a cluster, on the master of the tenant's slot.
            let reply = try await client.send(RedisCommand("SCAN", [cursor, "MATCH", "sl:{t:\(tenant)}*", "COUNT", 1000],
                                                           routingKey: "sl:{t:\(tenant)}"))
            guard let parts = reply.array, parts.count == 2 else { break }
            cursor = parts[0].string ?? "0"
            found += parts[1].array?.compactMap(\.string) ?? []
        } while cursor != "0"
        return found.sorted()
    }
}
