import Foundation
import Hummingbird
import Logging
import NIOCore
import PostgresNIO
import Prometheus
import SluiceAdminAPI
import SluiceDataPlane
import SluiceBilling
import SluiceLimiter
import SluiceLog
import SluiceRedis
import SluiceTenancy

/// `/healthz`, `/readyz` and `/metrics` on the admin listener.
struct OperationsRoutes: Sendable {
    let redis: RedisClient
    let postgres: PostgresClient
    let limiter: Limiter
    let failurePolicy: RedisFailurePolicy
    let readiness: Readiness
    let registry: PrometheusCollectorRegistry
    let operations: OperationsMetrics
    let usageFallback: LedgerFallbackWriter
    let prices: PriceBook
    let logger: Logger

    func add(to router: Router<AdminRequestContext>) {
        router.get("/healthz") { _, _ in Self.text("ok\n") }
        router.get("/readyz") { _, _ in await readiness() }
        router.get("/metrics") { _, _ in
            operations.refresh(limiter: limiter, usageFallback: usageFallback)
            return Response(status: .ok, headers: [.contentType: "text/plain; version=0.0.4"],
                            body: .init(byteBuffer: ByteBuffer(bytes: registry.emitToBuffer())))
        }
    }

    /// Whether a load balancer should send this replica traffic, under its failure policy:
    /// - draining (SIGTERM received): 503, whatever else holds;
    /// - Redis unreachable: 503 under `closed` (every request would be refused), but 200 and
    ///   `degraded` under `open` and `local`, which serve without it: pulling every replica of
    ///   such a fleet out at once would turn a Redis outage into a full one;
    /// - PostgreSQL unreachable: 200 and `degraded` (keys resolve from the caches, usage waits
    ///   in Redis), for the same reason.
    private func readiness() async -> Response {
        var checks: [String: String] = [:]
        let redisUp: Bool
        do {
            let shas = LimiterScripts.all.map(\.sha1)
            // On a cluster, every master must have them.
            let replies = try await redis.sendToEveryMaster(RedisCommand("SCRIPT", ["EXISTS"] + shas))
            if replies.allSatisfy({ $0.array?.allSatisfy { $0.int == 1 } == true }) {
                checks["redis"] = "ok"
            } else {
                try await redis.load(LimiterScripts.all)  // a flushed or restarted Redis: load them again
                checks["redis"] = "ok (scripts reloaded)"
            }
            redisUp = true
        } catch {
            checks["redis"] = "\(error)"
            redisUp = false
        }
        let postgresUp: Bool
        do {
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { _ = try await postgres.query("SELECT 1", logger: logger).collect() }
                group.addTask {
                    try await Task.sleep(for: .seconds(2))
                    throw ReadinessTimeout()
                }
                try await group.next()
                group.cancelAll()
            }
            checks["postgres"] = "ok"
            postgresUp = true
        } catch {
            checks["postgres"] = error is ReadinessTimeout ? "timeout" : "unreachable"
            postgresUp = false
        }
        // Informational: until the catalogue is read, requests bill at the configuration's prices.
        checks["prices"] = prices.databaseVersions.map { "ok (\($0) versions)" } ?? "configuration only (catalogue not read yet)"
        let draining = readiness.isDraining
        let ready = !draining && (redisUp || failurePolicy != .closed)
        let body: [String: Any] = [
            "ready": ready, "draining": draining, "degraded": !(redisUp && postgresUp),
            "failure_policy": failurePolicy.rawValue, "checks": checks,
        ]
        let data = (try? JSONSerialization.data(withJSONObject: body, options: [.sortedKeys])) ?? Data()
        return Response(status: ready ? .ok : .serviceUnavailable, headers: [.contentType: "application/json"],
                        body: .init(byteBuffer: ByteBuffer(bytes: data)))
    }

    struct ReadinessTimeout: Error {}

    static func text(_ value: String) -> Response {
        Response(status: .ok, headers: [.contentType: "text/plain"], body: .init(byteBuffer: ByteBuffer(string: value)))
    }
}
