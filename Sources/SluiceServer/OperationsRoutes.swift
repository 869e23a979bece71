import Foundation
import Hummingbird
import Logging
import NIOCore
import PostgresNIO
import SluiceAdminAPI
import SluiceDataPlane
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
    let metrics: DataPlaneMetrics
    let usageFallback: LedgerFallbackWriter
    let logger: Logger

    func add(to router: Router<AdminRequestContext>) {
        router.get("/healthz") { _, _ in Self.text("ok\n") }
        router.get("/readyz") { _, _ in await readiness() }
        router.get("/metrics") { _, _ in
            let direct = usageFallback.counts
            let text = metrics.render()
                + Self.metric("sluice_limiter_degraded", "gauge", "1 while Redis is unreachable and the failure policy decides.",
                              limiter.isDegraded ? 1 : 0)
                + Self.metric("sluice_usage_direct_pending", "gauge",
                              "Usage rows Redis could not take, waiting to be written to the ledger.", direct.pending)
                + Self.metric("sluice_usage_direct_written_total", "counter",
                              "Usage rows written to the ledger directly (Redis could not take them).", direct.written)
                + Self.metric("sluice_usage_direct_dropped_total", "counter",
                              "Usage rows lost: the direct-write buffer was full.", direct.dropped)
                + Self.metric("sluice_log_lines_dropped_total", "counter",
                              "Log lines dropped: stdout was slower than the traffic and the log buffer was full.",
                              LogLineWriter.standardOutput.dropped)
            return Response(status: .ok, headers: [.contentType: "text/plain; version=0.0.4"],
                            body: .init(byteBuffer: ByteBuffer(string: text)))
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
            let reply = try await redis.send(RedisCommand("SCRIPT", ["EXISTS"] + shas))
            if reply.array?.allSatisfy({ $0.int == 1 }) == true {
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

    /// One unlabelled series in the Prometheus text format.
    private static func metric(_ name: String, _ type: String, _ help: String, _ value: Int) -> String {
        "# HELP \(name) \(help)\n# TYPE \(name) \(type)\n\(name) \(value)\n"
    }
}
