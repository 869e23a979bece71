import Foundation
import Logging
import PostgresNIO

/// A tenant's webhook endpoint, as listed (never with its secret).
public struct WebhookEndpoint: Sendable, Equatable {
    public let id: UUID
    public let tenantID: UUID
    public var url: String
    /// Event types it takes; empty: every type.
    public var events: [String]
    public var enabled: Bool
    public let createdAt: Date
    public var disabledAt: Date?
    public var disabledReason: String?
}

/// One delivery of an event to an endpoint, with its attempts: the delivery log.
public struct WebhookDelivery: Sendable, Equatable {
    public struct Attempt: Sendable, Equatable {
        public let at: Date
        public let status: Int?
        public let error: String?
        public let durationMS: Int
    }

    public let id: Int64
    public let eventID: String
    public let type: String
    public let status: String
    public let attempts: [Attempt]
    public let nextAttemptAt: Date?
    public let deliveredAt: Date?
}

/// Webhook endpoints and their delivery log in PostgreSQL.
public struct WebhookStore: Sendable {
    let client: PostgresClient
    let logger: Logger

    public init(client: PostgresClient, logger: Logger) {
        self.client = client
        self.logger = logger
    }

    typealias EndpointRow = (UUID, UUID, String, [String], Bool, Date, Date?, String?)
    static let endpointColumns = "id, tenant_id, url, events, enabled, created_at, disabled_at, disabled_reason"

    static func endpoint(_ row: EndpointRow) -> WebhookEndpoint {
        WebhookEndpoint(id: row.0, tenantID: row.1, url: row.2, events: row.3, enabled: row.4, createdAt: row.5,
                        disabledAt: row.6, disabledReason: row.7)
    }

    public func create(tenantID: UUID, url: String, events: [String], sealedSecret: Data, actor: String) async throws -> WebhookEndpoint {
        let id = UUID()
        let rows = try await client.query("""
            WITH created AS (
                INSERT INTO webhook_endpoints (id, tenant_id, url, events, secret_sealed)
                VALUES (\(id), \(tenantID), \(url), \(events), \(ByteBuffer(bytes: sealedSecret)))
                RETURNING \(unescaped: Self.endpointColumns)
            ), audited AS (
                INSERT INTO audit_log (actor, tenant_id, action, target, details)
                VALUES (\(actor), \(tenantID), 'webhook.create', \(id.uuidString.lowercased()), jsonb_build_object('url', \(url)))
            )
            SELECT \(unescaped: Self.endpointColumns) FROM created
            """, logger: logger)
        for try await row in rows.decode(EndpointRow.self) { return Self.endpoint(row) }
        throw MissingRow()
    }

    public func endpoint(_ id: UUID) async throws -> WebhookEndpoint? {
        let rows = try await client.query("""
            SELECT \(unescaped: Self.endpointColumns) FROM webhook_endpoints WHERE id = \(id)
            """, logger: logger)
        for try await row in rows.decode(EndpointRow.self) { return Self.endpoint(row) }
        return nil
    }

    public func list(tenantID: UUID) async throws -> [WebhookEndpoint] {
        let rows = try await client.query("""
            SELECT \(unescaped: Self.endpointColumns) FROM webhook_endpoints WHERE tenant_id = \(tenantID) ORDER BY created_at, id
            """, logger: logger)
        var endpoints: [WebhookEndpoint] = []
        for try await row in rows.decode(EndpointRow.self) { endpoints.append(Self.endpoint(row)) }
        return endpoints
    }

    /// Changes what is given; re-enabling clears the reason it was disabled.
    public func update(_ id: UUID, url: String?, events: [String]?, enabled: Bool?, actor: String) async throws -> WebhookEndpoint? {
        let rows = try await client.query("""
            WITH updated AS (
                UPDATE webhook_endpoints SET url = coalesce(\(url), url), events = coalesce(\(events), events),
                    enabled = coalesce(\(enabled), enabled),
                    disabled_at = CASE WHEN \(enabled) IS TRUE THEN NULL WHEN \(enabled) IS FALSE THEN now() ELSE disabled_at END,
                    disabled_reason = CASE WHEN \(enabled) IS TRUE THEN NULL WHEN \(enabled) IS FALSE THEN 'disabled by ' || \(actor)
                                           ELSE disabled_reason END
                WHERE id = \(id)
                RETURNING \(unescaped: Self.endpointColumns)
            ), audited AS (
                INSERT INTO audit_log (actor, tenant_id, action, target, details)
                SELECT \(actor), tenant_id, 'webhook.update', \(id.uuidString.lowercased()), '{}'::jsonb FROM updated
            )
            SELECT \(unescaped: Self.endpointColumns) FROM updated
            """, logger: logger)
        for try await row in rows.decode(EndpointRow.self) { return Self.endpoint(row) }
        return nil
    }

    /// The endpoint's deliveries, newest first, each with its attempts.
    public func deliveries(endpointID: UUID, limit: Int, before: Int64?) async throws -> [WebhookDelivery] {
        let rows = try await client.query("""
            SELECT d.id, d.event_id, e.type, d.status, d.next_attempt_at, d.delivered_at,
                   coalesce(array_agg(a.at ORDER BY a.id) FILTER (WHERE a.id IS NOT NULL), '{}'),
                   coalesce(array_agg(coalesce(a.status, 0) ORDER BY a.id) FILTER (WHERE a.id IS NOT NULL), '{}'),
                   coalesce(array_agg(coalesce(a.error, '') ORDER BY a.id) FILTER (WHERE a.id IS NOT NULL), '{}'),
                   coalesce(array_agg(a.duration_ms ORDER BY a.id) FILTER (WHERE a.id IS NOT NULL), '{}')
            FROM webhook_deliveries d JOIN webhook_events e ON e.id = d.event_id
            LEFT JOIN webhook_attempts a ON a.delivery_id = d.id
            WHERE d.endpoint_id = \(endpointID) AND (\(before)::int8 IS NULL OR d.id < \(before)::int8)
            GROUP BY d.id, e.type ORDER BY d.id DESC LIMIT \(limit)
            """, logger: logger)
        var deliveries: [WebhookDelivery] = []
        for try await (id, event, type, status, next, delivered, times, statuses, errors, durations)
            in rows.decode((Int64, String, String, String, Date?, Date?, [Date], [Int32], [String], [Int32]).self) {
            let attempts = times.indices.map { index in
                WebhookDelivery.Attempt(at: times[index], status: statuses[index] == 0 ? nil : Int(statuses[index]),
                                        error: errors[index].isEmpty ? nil : errors[index], durationMS: Int(durations[index]))
            }
            deliveries.append(WebhookDelivery(id: id, eventID: event, type: type, status: status, attempts: attempts,
                                              nextAttemptAt: status == "pending" ? next : nil, deliveredAt: delivered))
        }
        return deliveries
    }
}

struct MissingRow: Error {}
