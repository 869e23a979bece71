import Foundation
import Logging
import NIOCore
import NIOHTTP1
import PostgresNIO
import ServiceLifecycle
import SluiceTenancy
import SluiceUpstream
import Synchronization

/// How webhook deliveries are retried.
public struct WebhookRetryPolicy: Sendable {
    /// The wait after the first failure; it doubles after each, up to `maximumDelay`.
    public var firstDelay: Duration = .seconds(5)
    public var maximumDelay: Duration = .seconds(7_200)
    /// Failing this long after the first attempt, a delivery is given up and its endpoint disabled.
    public var giveUpAfter: Duration = .seconds(86_400)
    /// How often due deliveries are looked for.
    public var pollInterval: Duration = .seconds(1)
    /// A claimed delivery is not claimed again for this long (its replica may be sending it).
    public var claimLease: Duration = .seconds(90)

    public init() {}

    func delay(afterAttempts attempts: Int) -> Duration {
        let doubled = firstDelay * (1 << min(max(attempts - 1, 0), 20))
        return min(doubled, maximumDelay)
    }
}

/// Delivers the outbox: claims due deliveries (any replica may; `FOR UPDATE SKIP LOCKED` and a
/// claim lease keep two from sending one at once), signs each body as Standard Webhooks says,
/// POSTs it, and records the attempt. At least once: a delivery stays pending until a 2xx, with
/// exponential backoff; past `giveUpAfter` it fails, its endpoint is disabled, and a
/// `webhook.endpoint_disabled` event goes to the tenant's other endpoints.
public final class WebhookDispatcher: Service, Sendable {
    let client: PostgresClient
    let http: UpstreamClient
    let sealer: WebhookSecretSealer
    let policy: WebhookRetryPolicy
    let logger: Logger
    /// One `Backend` (and so one connection pool) per origin, for the process's life.
    private let origins = Mutex<[String: Backend]>([:])

    public init(client: PostgresClient, http: UpstreamClient, sealer: WebhookSecretSealer, policy: WebhookRetryPolicy = .init(),
                logger: Logger) {
        self.client = client
        self.http = http
        self.sealer = sealer
        self.policy = policy
        self.logger = logger
    }

    public func run() async throws {
        while !Task.isCancelled && !Task.isShuttingDownGracefully {
            do {
                let sent = try await pass()
                if sent > 0 { continue }  // there may be more due
            } catch {
                logger.warning("webhook delivery pass failed", metadata: ["error": "\(String(reflecting: error))"])
            }
            try? await cancelWhenGracefulShutdown { try await Task.sleep(for: self.policy.pollInterval) }
        }
    }

    struct Claimed: Sendable {
        let delivery: Int64
        let eventID: String
        let tenantID: UUID
        let endpointID: UUID
        let url: String
        let sealedSecret: Data
        let body: String
        let attempts: Int
        let firstAttempt: Date
    }

    /// Sends the deliveries due now (at most 20); returns how many it tried.
    @discardableResult
    public func pass() async throws -> Int {
        let lease = Self.seconds(policy.claimLease)
        let rows = try await client.query("""
            WITH due AS (
                SELECT d.id FROM webhook_deliveries d JOIN webhook_endpoints w ON w.id = d.endpoint_id
                WHERE d.status = 'pending' AND d.next_attempt_at <= now() AND w.enabled
                ORDER BY d.next_attempt_at LIMIT 20
                FOR UPDATE OF d SKIP LOCKED
            ), claimed AS (
                UPDATE webhook_deliveries d SET next_attempt_at = now() + make_interval(secs => \(lease)),
                    first_attempt_at = coalesce(d.first_attempt_at, now())
                FROM due WHERE d.id = due.id
                RETURNING d.id, d.event_id, d.endpoint_id, d.attempts, d.first_attempt_at
            )
            SELECT c.id, c.event_id, e.tenant_id, c.endpoint_id, w.url, w.secret_sealed, e.payload::text, c.attempts, c.first_attempt_at
            FROM claimed c JOIN webhook_events e ON e.id = c.event_id JOIN webhook_endpoints w ON w.id = c.endpoint_id
            """, logger: logger)
        var claimed: [Claimed] = []
        for try await (delivery, event, tenant, endpoint, url, secret, body, attempts, first)
            in rows.decode((Int64, String, UUID, UUID, String, ByteBuffer, String, Int, Date).self) {
            claimed.append(Claimed(delivery: delivery, eventID: event, tenantID: tenant, endpointID: endpoint, url: url,
                                   sealedSecret: Data(secret.readableBytesView), body: body, attempts: attempts, firstAttempt: first))
        }
        await withTaskGroup(of: Void.self) { group in
            for item in claimed { group.addTask { await self.deliver(item) } }
        }
        return claimed.count
    }

    private func deliver(_ item: Claimed) async {
        let started = ContinuousClock.now
        let (status, error) = await send(item)
        let duration = Int(Self.seconds(ContinuousClock.now - started) * 1_000)
        do {
            try await record(item, status: status, error: error, durationMS: duration)
        } catch {
            logger.error("webhook attempt not recorded", metadata: ["delivery": "\(item.delivery)", "error": "\(error)"])
        }
    }

    /// One POST: the HTTP status, or why there was none.
    private func send(_ item: Claimed) async -> (Int?, String?) {
        let target: WebhookTarget
        do {
            // Checked at registration; parsed again here only for its parts.
            target = try WebhookTarget(item.url, allowPrivateNetworks: true)
        } catch {
            return (nil, "the endpoint URL is not valid")
        }
        guard let secret = try? sealer.open(item.sealedSecret) else { return (nil, "the endpoint secret cannot be opened") }
        let timestamp = Int64(Date().timeIntervalSince1970)
        guard let signature = WebhookSigning.signature(secret: secret, id: item.eventID, timestamp: timestamp, body: item.body) else {
            return (nil, "the endpoint secret is malformed")
        }
        let backend: Backend
        do {
            backend = try origins.withLock { origins in
                if let known = origins[target.origin] { return known }
                let made = try Backend(url: target.origin)
                origins[target.origin] = made
                return made
            }
        } catch {
            return (nil, "the endpoint URL is not valid")
        }
        let request = UpstreamRequest(method: .POST, path: target.pathAndQuery, headers: HTTPHeaders([
            ("content-type", "application/json"), ("user-agent", "sluice-webhooks"),
            ("webhook-id", item.eventID), ("webhook-timestamp", String(timestamp)), ("webhook-signature", signature),
        ]), body: ByteBuffer(string: item.body))
        do {
            let response = try await http.send(request, to: backend)
            let status = Int(response.head.status.code)
            _ = try? await response.collect(limit: 64 * 1024)  // the answer's body is not used
            return (status, nil)
        } catch {
            return (nil, "\(error)")
        }
    }

    private func record(_ item: Claimed, status: Int?, error: String?, durationMS: Int) async throws {
        let delivered = status.map { (200..<300).contains($0) } ?? false
        let attempts = item.attempts + 1
        // Given up when the next attempt would come later than `giveUpAfter` from the first.
        let givingUp = !delivered && Date().timeIntervalSince(item.firstAttempt) + Self.seconds(policy.delay(afterAttempts: attempts))
            > Self.seconds(policy.giveUpAfter)
        let next = Date().addingTimeInterval(Self.seconds(policy.delay(afterAttempts: attempts)))
        let state = delivered ? "delivered" : givingUp ? "failed" : "pending"
        try await client.withTransaction(logger: logger) { connection in
            _ = try await connection.query("""
                INSERT INTO webhook_attempts (delivery_id, status, error, duration_ms)
                VALUES (\(item.delivery), \(status), \(error.map { String($0.prefix(1_000)) }), \(durationMS))
                """, logger: logger)
            _ = try await connection.query("""
                UPDATE webhook_deliveries SET status = \(state), attempts = \(attempts), last_attempt_at = now(),
                    last_status = \(status), last_error = \(error.map { String($0.prefix(1_000)) }),
                    delivered_at = CASE WHEN \(delivered) THEN now() END,
                    next_attempt_at = CASE WHEN \(state) = 'pending' THEN \(next) END
                WHERE id = \(item.delivery)
                """, logger: logger)
            guard givingUp else { return }
            let rows = try await connection.query("""
                UPDATE webhook_endpoints SET enabled = false, disabled_at = now(),
                    disabled_reason = 'deliveries kept failing'
                WHERE id = \(item.endpointID) AND enabled RETURNING url
                """, logger: logger)
            var url: String?
            for try await value in rows.decode(String.self) { url = value }
            guard let url else { return }
            _ = try await connection.query("""
                INSERT INTO audit_log (actor, tenant_id, action, target, details)
                VALUES ('sluice', \(item.tenantID), 'webhook.disable', \(item.endpointID.uuidString.lowercased()),
                        jsonb_build_object('reason', 'deliveries kept failing'))
                """, logger: logger)
            try await WebhookOutbox.enqueue(connection, tenantID: item.tenantID, type: "webhook.endpoint_disabled",
                                            data: ["endpoint_id": item.endpointID.uuidString.lowercased(), "url": url,
                                                   "reason": "deliveries kept failing"], logger: logger)
        }
        if givingUp {
            logger.error("webhook endpoint disabled: its deliveries kept failing",
                         metadata: ["endpoint_id": "\(item.endpointID)", "tenant_id": "\(item.tenantID)"])
        }
    }

    static func seconds(_ duration: Duration) -> TimeInterval {
        Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
    }
}
