import Foundation
import Logging
import PostgresNIO

/// The webhook outbox: an event is written in the same transaction as the change that causes
/// it, with a delivery row for each of the tenant's enabled endpoints whose filter takes it;
/// the dispatcher delivers from there. A `dedupeKey` makes an event that periodic checks find
/// again (a budget threshold, a key about to expire) be written once.
public enum WebhookOutbox {
    /// Every event type an endpoint can subscribe to.
    public static let eventTypes: Set<String> = [
        "budget.threshold", "key.created", "key.rotated", "key.revoked", "key.expiring", "usage.daily",
        "webhook.endpoint_disabled",
    ]

    /// The event an audited change causes, if any.
    static func eventType(forAudit action: String) -> String? {
        switch action {
        case "key.create": "key.created"
        case "key.rotate": "key.rotated"
        case "key.revoke": "key.revoked"
        default: nil
        }
    }

    /// Writes the event and its deliveries; false when an event with `dedupeKey` exists already.
    @discardableResult
    public static func enqueue(_ connection: PostgresConnection, tenantID: UUID, type: String, data: [String: String],
                               dedupeKey: String? = nil, logger: Logger) async throws -> Bool {
        let id = "msg_" + UUID().uuidString.replacingOccurrences(of: "-", with: "").lowercased()
        let payload = try JSONCoding.string(Payload(type: type, timestamp: Date().formatted(.iso8601), data: data))
        let rows = try await connection.query("""
            WITH event AS (
                INSERT INTO webhook_events (id, tenant_id, type, payload, dedupe_key)
                VALUES (\(id), \(tenantID), \(type), \(payload)::jsonb, \(dedupeKey))
                ON CONFLICT (dedupe_key) DO NOTHING
                RETURNING id
            ), deliveries AS (
                INSERT INTO webhook_deliveries (event_id, endpoint_id, next_attempt_at)
                SELECT event.id, w.id, now() FROM event JOIN webhook_endpoints w ON w.tenant_id = \(tenantID)
                WHERE w.enabled AND (cardinality(w.events) = 0 OR \(type) = ANY(w.events))
            )
            SELECT count(*)::int8 FROM event
            """, logger: logger)
        for try await count in rows.decode(Int.self) { return count == 1 }
        return false
    }

    /// The body every endpoint gets (Standard Webhooks' recommended shape).
    struct Payload: Encodable {
        let type: String
        let timestamp: String
        let data: [String: String]
    }
}
