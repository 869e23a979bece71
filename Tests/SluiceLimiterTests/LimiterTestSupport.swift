import Foundation
import NIOCore
import SluiceRedis
import SluiceTestSupport

@testable import SluiceLimiter

/// A fresh tenant per test, so tests share the stack's Redis without seeing each other.
struct LimiterFixture {
    let client: RedisClient
    let limiter: Limiter
    let tenant: String

    init(configuration: LimiterConfiguration = .init(), poolSize: Int = 2) throws {
        var redis = try RedisConfiguration(url: TestEnvironment.redisURL)
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

    /// Every Redis key of this tenant.
    func keys() async throws -> [String] {
        var cursor = "0"
        var found: [String] = []
        repeat {
            let reply = try await client.send("SCAN", cursor, "MATCH", "sl:{t:\(tenant)}*", "COUNT", 1000)
            guard let parts = reply.array, parts.count == 2 else { break }
            cursor = parts[0].string ?? "0"
            found += parts[1].array?.compactMap(\.string) ?? []
        } while cursor != "0"
        return found.sorted()
    }
}

extension AdmitDecision {
    var admission: Admission? {
        if case .admitted(let admission) = self { return admission }
        return nil
    }

    var denial: Denial? {
        if case .denied(let denial) = self { return denial }
        return nil
    }
}
