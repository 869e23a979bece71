import Foundation
import Hummingbird
import SluiceTenancy
import SluiceWebhooks

/// What the webhook routes need: the store, the sealer for endpoint secrets, and whether
/// endpoints may be on private networks (tests, private deployments).
public struct AdminWebhookSettings: Sendable {
    let store: WebhookStore
    let sealer: WebhookSecretSealer
    let allowPrivateNetworks: Bool

    public init(store: WebhookStore, sealer: WebhookSecretSealer, allowPrivateNetworks: Bool) {
        self.store = store
        self.sealer = sealer
        self.allowPrivateNetworks = allowPrivateNetworks
    }
}

/// `/admin/v1/tenants/{id}/webhooks` and `/admin/v1/webhooks/{id}`: a tenant's endpoints (its
/// admins manage them, its viewers read them) and their delivery log.
extension AdminAPI {
    func createWebhook(_ request: Request, _ context: AdminRequestContext) async throws -> EditedResponse<WebhookBody> {
        let tenant = try tenantID(context)
        let caller = try context.requireCaller()
        try AdminPermission.manageKeys.check(caller, tenant: tenant)
        let settings = try webhookSettings()
        let body = try await FieldReader.body(try await readBody(request, context), allowed: ["url", "events"])
        let url = try webhookURL(try body.string("url", required: true, pattern: .webhookURL)!, settings)
        let events = try webhookEvents(body) ?? []
        _ = try await found { try await store.tenant(tenant) }
        // Every event fans out to each endpoint: a tenant gets a bounded number.
        guard try await settings.store.list(tenantID: tenant).count < Self.maxWebhooksPerTenant else {
            throw AdminError.invalid("url", "a tenant may have at most \(Self.maxWebhooksPerTenant) webhook endpoints")
        }
        let secret = WebhookSigning.newSecret()
        let endpoint = try await settings.store.create(tenantID: tenant, url: url, events: events,
                                                       sealedSecret: try settings.sealer.seal(secret), actor: caller.subject)
        return EditedResponse(status: .created, response: WebhookBody(endpoint, secret: secret))
    }

    static let maxWebhooksPerTenant = 20

    func listWebhooks(_ context: AdminRequestContext) async throws -> WebhookList {
        let tenant = try tenantID(context)
        try AdminPermission.read.check(try context.requireCaller(), tenant: tenant)
        _ = try await found { try await store.tenant(tenant) }
        return WebhookList(data: try await webhookSettings().store.list(tenantID: tenant).map { WebhookBody($0) })
    }

    func updateWebhook(_ request: Request, _ context: AdminRequestContext) async throws -> WebhookBody {
        let caller = try context.requireCaller()
        let settings = try webhookSettings()
        let endpoint = try await ownedWebhook(context, settings)
        try AdminPermission.manageKeys.check(caller, tenant: endpoint.tenantID)
        let body = try await FieldReader.body(try await readBody(request, context), allowed: ["url", "events", "enabled"])
        let url = try body.string("url", pattern: .webhookURL).map { try webhookURL($0, settings) }
        let events = try webhookEvents(body)
        var enabled: Bool?
        if let value = body.fields["enabled"], value != .null {
            guard case .bool(let flag) = value else { throw AdminError.invalid("enabled", "'enabled' must be a boolean") }
            enabled = flag
        }
        guard url != nil || events != nil || enabled != nil else {
            throw AdminError.invalid("body", "give at least one of 'url', 'events', 'enabled'")
        }
        guard let updated = try await settings.store.update(endpoint.id, url: url, events: events, enabled: enabled,
                                                            actor: caller.subject) else { throw AdminError.notFound }
        return WebhookBody(updated)
    }

    func webhookDeliveries(_ request: Request, _ context: AdminRequestContext) async throws -> Page<DeliveryBody> {
        let settings = try webhookSettings()
        let endpoint = try await ownedWebhook(context, settings)
        try AdminPermission.read.check(try context.requireCaller(), tenant: endpoint.tenantID)
        let (limit, before) = try idPagination(request)
        let deliveries = try await settings.store.deliveries(endpointID: endpoint.id, limit: limit + 1, before: before)
        return Page(items: deliveries.map(DeliveryBody.init), limit: limit) { String($0.delivery.id) }
    }

    private func webhookSettings() throws -> AdminWebhookSettings {
        guard let webhooks else { throw AdminError(.notFound, code: "not_found", message: "webhooks are not configured here") }
        return webhooks
    }

    /// The endpoint named in the path; 404 for a malformed id, an unknown one, or another tenant's.
    private func ownedWebhook(_ context: AdminRequestContext, _ settings: AdminWebhookSettings) async throws -> WebhookEndpoint {
        guard let text = context.parameters.get("webhook_id"), let id = UUID(uuidString: text),
              let endpoint = try await settings.store.endpoint(id) else { throw AdminError.notFound }
        try AdminPermission.read.check(try context.requireCaller(), tenant: endpoint.tenantID)
        return endpoint
    }

    private func webhookURL(_ text: String, _ settings: AdminWebhookSettings) throws -> String {
        do {
            _ = try WebhookTarget(text, allowPrivateNetworks: settings.allowPrivateNetworks)
            return text
        } catch .privateAddress {
            throw AdminError.invalid("url", "'url' points at a loopback, private or link-local address")
        } catch {
            throw AdminError.invalid("url", "'url' must be an http(s) URL of at most 2048 bytes, without credentials or fragment")
        }
    }

    private func webhookEvents(_ body: FieldReader) throws -> [String]? {
        guard let events = try body.stringArray("events", maxCount: 20, pattern: .eventType) else { return nil }
        if let unknown = events.first(where: { !WebhookOutbox.eventTypes.contains($0) }) {
            throw AdminError.invalid("events", "unknown event type '\(unknown)'; known: \(WebhookOutbox.eventTypes.sorted().joined(separator: ", "))")
        }
        return Array(Set(events)).sorted()
    }
}

struct WebhookBody: ResponseEncodable {
    let endpoint: WebhookEndpoint
    /// Only in the answer to its creation.
    let secret: String?

    init(_ endpoint: WebhookEndpoint, secret: String? = nil) {
        self.endpoint = endpoint
        self.secret = secret
    }

    func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(endpoint.id.uuidString.lowercased(), forKey: .id)
        try container.encode(endpoint.tenantID.uuidString.lowercased(), forKey: .tenantID)
        try container.encode(endpoint.url, forKey: .url)
        try container.encode(endpoint.events, forKey: .events)
        try container.encode(endpoint.enabled, forKey: .enabled)
        try container.encode(endpoint.createdAt, forKey: .createdAt)
        try container.encode(endpoint.disabledAt, forKey: .disabledAt)
        try container.encode(endpoint.disabledReason, forKey: .disabledReason)
        if let secret { try container.encode(secret, forKey: .secret) }
    }

    enum CodingKeys: String, CodingKey {
        case id, url, events, enabled, secret
        case tenantID = "tenant_id"
        case createdAt = "created_at"
        case disabledAt = "disabled_at"
        case disabledReason = "disabled_reason"
    }
}

struct WebhookList: ResponseEncodable {
    let data: [WebhookBody]
}

struct DeliveryBody: Encodable, Sendable {
    let delivery: WebhookDelivery

    init(_ delivery: WebhookDelivery) {
        self.delivery = delivery
    }

    struct AttemptBody: Encodable {
        let attempt: WebhookDelivery.Attempt
        func encode(to encoder: any Encoder) throws {
            var container = encoder.container(keyedBy: CodingKeys.self)
            try container.encode(attempt.at, forKey: .at)
            try container.encode(attempt.status, forKey: .status)
            try container.encode(attempt.error, forKey: .error)
            try container.encode(attempt.durationMS, forKey: .durationMS)
        }
        enum CodingKeys: String, CodingKey {
            case at, status, error
            case durationMS = "duration_ms"
        }
    }

    func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(String(delivery.id), forKey: .id)
        try container.encode(delivery.eventID, forKey: .eventID)
        try container.encode(delivery.type, forKey: .type)
        try container.encode(delivery.status, forKey: .status)
        try container.encode(delivery.attempts.map(AttemptBody.init), forKey: .attempts)
        try container.encode(delivery.nextAttemptAt, forKey: .nextAttemptAt)
        try container.encode(delivery.deliveredAt, forKey: .deliveredAt)
    }

    enum CodingKeys: String, CodingKey {
        case id, type, status, attempts
        case eventID = "event_id"
        case nextAttemptAt = "next_attempt_at"
        case deliveredAt = "delivered_at"
    }
}
