import Foundation
import Hummingbird
import Logging
import NIOCore
import SluiceBilling
import SluiceLimiter
import SluiceRedis
import SluiceTenancy

/// The admin REST API (`/admin/v1/...`) on the admin listener. Paths and payloads are the
/// contract in interface.md and `docs/admin-api.openapi.yaml`.
public struct AdminAPI: Sendable {
    let store: TenantStore
    let hasher: KeyHasher
    let authenticator: AdminAuthenticator
    let redis: RedisClient?
    let prices: PriceStore?
    let statements: StatementStore?
    let webhooks: AdminWebhookSettings?
    let invalidationChannel: String
    let logger: Logger

    public init(store: TenantStore, hasher: KeyHasher, authenticator: AdminAuthenticator, redis: RedisClient?,
                prices: PriceStore? = nil, statements: StatementStore? = nil, webhooks: AdminWebhookSettings? = nil,
                invalidationChannel: String = KeyResolver.invalidationChannel, logger: Logger = Logger(label: "sluice.admin")) {
        self.store = store
        self.webhooks = webhooks
        self.prices = prices
        self.statements = statements
        self.invalidationChannel = invalidationChannel
        self.hasher = hasher
        self.authenticator = authenticator
        self.redis = redis
        self.logger = logger
    }

    /// Every route, as the OpenAPI document must list it (a test keeps the two equal).
    public static let routes: [(method: String, path: String)] = [
        ("post", "/admin/v1/tenants"), ("get", "/admin/v1/tenants"),
        ("get", "/admin/v1/tenants/{tenant_id}"), ("patch", "/admin/v1/tenants/{tenant_id}"),
        ("post", "/admin/v1/tenants/{tenant_id}/keys"), ("get", "/admin/v1/tenants/{tenant_id}/keys"),
        ("patch", "/admin/v1/keys/{key_id}"),
        ("post", "/admin/v1/keys/{key_id}/rotate"), ("post", "/admin/v1/keys/{key_id}/revoke"),
        ("get", "/admin/v1/tenants/{tenant_id}/usage"), ("get", "/admin/v1/openapi.yaml"),
        ("get", "/admin/v1/prices"), ("post", "/admin/v1/prices"), ("get", "/admin/v1/tenants/{tenant_id}/statements/{month}"),
        ("post", "/admin/v1/tenants/{tenant_id}/webhooks"), ("get", "/admin/v1/tenants/{tenant_id}/webhooks"),
        ("patch", "/admin/v1/webhooks/{webhook_id}"), ("get", "/admin/v1/webhooks/{webhook_id}/deliveries"),
        ("get", "/admin/v1/tenants/{tenant_id}/audit"),
    ]

    public func addRoutes(to router: Router<AdminRequestContext>) {
        router.get("/admin/v1/openapi.yaml") { _, _ in
            Response(status: .ok, headers: [.contentType: "application/yaml"],
                     body: .init(byteBuffer: ByteBuffer(string: EmbeddedOpenAPI.adminAPI)))
        }
        let api = router.group("/admin/v1").add(middleware: AdminErrorMiddleware(logger: logger))
            .add(middleware: AdminAuthMiddleware(authenticator: authenticator))
        api.post("tenants") { request, context in try await createTenant(request, context) }
        api.get("tenants") { request, context in try await listTenants(request, context) }
        api.get("tenants/:tenant_id") { _, context in try await getTenant(context) }
        api.patch("tenants/:tenant_id") { request, context in try await updateTenant(request, context) }
        api.post("tenants/:tenant_id/keys") { request, context in try await createKey(request, context) }
        api.get("tenants/:tenant_id/keys") { request, context in try await listKeys(request, context) }
        api.patch("keys/:key_id") { request, context in try await updateKey(request, context) }
        api.post("keys/:key_id/rotate") { request, context in try await rotateKey(request, context) }
        api.post("keys/:key_id/revoke") { _, context in try await revokeKey(context) }
        api.get("tenants/:tenant_id/usage") { request, context in try await usage(request, context) }
        api.get("tenants/:tenant_id/statements/:month") { request, context in try await statement(request, context) }
        api.post("tenants/:tenant_id/webhooks") { request, context in try await createWebhook(request, context) }
        api.get("tenants/:tenant_id/webhooks") { _, context in try await listWebhooks(context) }
        api.patch("webhooks/:webhook_id") { request, context in try await updateWebhook(request, context) }
        api.get("webhooks/:webhook_id/deliveries") { request, context in try await webhookDeliveries(request, context) }
        api.get("tenants/:tenant_id/audit") { request, context in try await auditLog(request, context) }
        api.get("prices") { request, context in try await listPrices(request, context) }
        api.post("prices") { request, context in try await addPrice(request, context) }
    }

    // MARK: tenants

    func createTenant(_ request: Request, _ context: AdminRequestContext) async throws -> EditedResponse<Tenant> {
        try AdminPermission.managePlatform.check(try context.requireCaller(), tenant: nil)
        let body = try await FieldReader.body(try await readBody(request, context), allowed: ["name", "limits", "model_limits"])
        let name = try body.string("name", required: true, pattern: .displayName)!
        let tenant = try await store.createTenant(
            name: name, limits: try body.limits("limits") ?? Limits(), modelLimits: try body.modelLimits("model_limits") ?? [:],
            actor: try context.requireCaller().subject)
        return EditedResponse(status: .created, response: tenant)
    }

    func listTenants(_ request: Request, _ context: AdminRequestContext) async throws -> Page<Tenant> {
        try AdminPermission.managePlatform.check(try context.requireCaller(), tenant: nil)
        let (limit, after) = try pagination(request)
        let cursor = try after.map { text -> UUID in
            guard let id = UUID(uuidString: text) else { throw AdminError.invalid("after", "'after' must be a tenant id") }
            return id
        }
        let tenants = try await store.listTenants(limit: limit + 1, after: cursor)
        return Page(items: tenants, limit: limit) { $0.id.uuidString.lowercased() }
    }

    func getTenant(_ context: AdminRequestContext) async throws -> Tenant {
        let id = try tenantID(context)
        try AdminPermission.read.check(try context.requireCaller(), tenant: id)
        return try await found { try await store.tenant(id) }
    }

    func updateTenant(_ request: Request, _ context: AdminRequestContext) async throws -> Tenant {
        let id = try tenantID(context)
        let caller = try context.requireCaller()
        try AdminPermission.managePlatform.check(caller, tenant: id)
        let body = try await FieldReader.body(try await readBody(request, context),
                                              allowed: ["name", "limits", "model_limits", "stripe_customer_id"])
        let name = try body.string("name", pattern: .displayName)
        let limits = try body.limits("limits")
        let modelLimits = try body.modelLimits("model_limits")
        // Present and null clears the mapping; absent keeps it.
        let stripe: String?? = body.fields["stripe_customer_id"] == nil ? nil
            : .some(try body.string("stripe_customer_id", pattern: .stripeCustomer))
        guard name != nil || limits != nil || modelLimits != nil || stripe != nil else {
            throw AdminError.invalid("body", "give at least one of 'name', 'limits', 'model_limits', 'stripe_customer_id'")
        }
        let tenant = try await found {
            try await store.updateTenant(id, name: name, limits: limits, modelLimits: modelLimits, stripeCustomerID: stripe,
                                         actor: caller.subject)
        }
        // Every cached key of the tenant carries the old limits.
        await invalidate(try await store.keyIDs(tenantID: id))
        return tenant
    }

    // MARK: keys

    func createKey(_ request: Request, _ context: AdminRequestContext) async throws -> EditedResponse<CreatedKey> {
        let tenant = try tenantID(context)
        let caller = try context.requireCaller()
        try AdminPermission.manageKeys.check(caller, tenant: tenant)
        let body = try await FieldReader.body(try await readBody(request, context),
                                              allowed: ["name", "limits", "models", "expires_at", "scope"])
        let name = try body.string("name", required: true, pattern: .displayName)!
        let expiresAt = try body.futureDate("expires_at")
        let (record, plaintext) = try await found {
            try await store.createKey(tenantID: tenant, name: name, limits: try body.limits("limits") ?? Limits(),
                                      models: try body.stringArray("models", maxCount: 1_000, pattern: .modelName),
                                      expiresAt: expiresAt, scope: try body.scope("scope") ?? KeyScope(), hasher: hasher,
                                      actor: caller.subject)
        }
        return EditedResponse(status: .created, response: CreatedKey(record: record, key: plaintext))
    }

    /// `PATCH /admin/v1/keys/{id}`: what is given changes (`null` clears `models`, `expires_at`
    /// and scope parts), what is left out stays. Replicas drop their cached copy at once.
    func updateKey(_ request: Request, _ context: AdminRequestContext) async throws -> KeyRecord {
        let caller = try context.requireCaller()
        let key = try await ownedKey(context, caller: caller)
        let body = try await FieldReader.body(try await readBody(request, context),
                                              allowed: ["name", "limits", "models", "expires_at", "scope"])
        guard !body.fields.isEmpty else {
            throw AdminError.invalid("body", "give at least one of 'name', 'limits', 'models', 'expires_at', 'scope'")
        }
        let models: [String]?? = body.fields["models"] == nil ? nil
            : .some(try body.stringArray("models", maxCount: 1_000, pattern: .modelName))
        let expiresAt: Date?? = body.fields["expires_at"] == nil ? nil : .some(try body.futureDate("expires_at"))
        // `"scope": null` lifts every restriction.
        let scope = body.fields["scope"] == .null ? KeyScope() : try body.scope("scope", over: key.scope)
        let updated = try await found {
            try await store.updateKey(key.id, name: try body.string("name", pattern: .displayName), limits: try body.limits("limits"),
                                      models: models, expiresAt: expiresAt, scope: scope,
                                      actor: caller.subject)
        }
        await invalidate([key.id])
        return updated
    }

    func listKeys(_ request: Request, _ context: AdminRequestContext) async throws -> Page<KeyRecord> {
        let tenant = try tenantID(context)
        try AdminPermission.read.check(try context.requireCaller(), tenant: tenant)
        let (limit, after) = try pagination(request)
        _ = try await found { try await store.tenant(tenant) }
        let keys = try await store.listKeys(tenantID: tenant, limit: limit + 1, after: after)
        return Page(items: keys, limit: limit) { $0.id }
    }

    func rotateKey(_ request: Request, _ context: AdminRequestContext) async throws -> EditedResponse<CreatedKey> {
        let caller = try context.requireCaller()
        let old = try await ownedKey(context, caller: caller)
        let data = try await readBody(request, context)
        let grace = data.isEmpty ? nil : try FieldReader.body(data, allowed: ["grace_seconds"])
            .integer("grace_seconds", in: 0...(30 * 86_400))
        let (record, plaintext) = try await found {
            try await store.rotateKey(old.id, grace: .seconds(grace ?? 3_600), hasher: hasher, actor: caller.subject)
        }
        await invalidate([old.id])
        return EditedResponse(status: .created, response: CreatedKey(record: record, key: plaintext))
    }

    func revokeKey(_ context: AdminRequestContext) async throws -> KeyRecord {
        let caller = try context.requireCaller()
        let key = try await ownedKey(context, caller: caller)
        let revoked = try await store.revokeKey(key.id, actor: caller.subject)
        await invalidate([key.id])
        return revoked
    }

    // MARK: usage

    // MARK: audit

    /// `GET /admin/v1/tenants/{id}/audit`: the tenant's changes, newest first, paged by entry id.
    func auditLog(_ request: Request, _ context: AdminRequestContext) async throws -> Page<AuditEntry> {
        let tenant = try tenantID(context)
        try AdminPermission.read.check(try context.requireCaller(), tenant: tenant)
        let (limit, before) = try idPagination(request)
        _ = try await found { try await store.tenant(tenant) }
        let entries = try await store.auditLog(tenantID: tenant, limit: limit + 1, before: before)
        return Page(items: entries, limit: limit) { String($0.id) }
    }

    // MARK: helpers

    func readBody(_ request: Request, _ context: AdminRequestContext) async throws -> Data {
        do {
            return Data(try await request.body.collect(upTo: context.maxUploadSize).readableBytesView)
        } catch is NIOTooManyBytesError {
            throw AdminError(.contentTooLarge, code: "request_too_large", message: "the body is over \(context.maxUploadSize) bytes")
        }
    }

    func tenantID(_ context: AdminRequestContext) throws -> UUID {
        // A malformed id names no tenant: 404, like any other unknown id.
        guard let text = context.parameters.get("tenant_id"), let id = UUID(uuidString: text) else {
            throw AdminError.notFound
        }
        return id
    }

    /// The key named in the path, if the caller may manage it (404 otherwise, 403 for viewers).
    private func ownedKey(_ context: AdminRequestContext, caller: AdminCaller) async throws -> KeyRecord {
        guard let id = context.parameters.get("key_id"), APIKey.isValidKeyID(id) else { throw AdminError.notFound }
        let key = try await found { try await store.key(id) }
        try AdminPermission.manageKeys.check(caller, tenant: key.tenantID)
        return key
    }

    func pagination(_ request: Request, defaultLimit: Int = 100, maximum: Int = 1_000) throws -> (Int, String?) {
        let query = request.uri.queryParameters
        var limit = defaultLimit
        if let text = query.get("limit") {
            guard let value = Int(text), (1...maximum).contains(value) else {
                throw AdminError.invalid("limit", "'limit' must be an integer from 1 to \(maximum)")
            }
            limit = value
        }
        let after = query.get("after")
        if let after, after.utf8.count > 64 { throw AdminError.invalid("after", "'after' is not a valid cursor") }
        return (limit, after)
    }

    /// `limit` and `after` for lists paged by a row id, newest first: `after` is the last id seen.
    func idPagination(_ request: Request) throws -> (Int, Int64?) {
        let (limit, after) = try pagination(request)
        let before = try after.map { text -> Int64 in
            guard let value = Int64(text), value > 0 else { throw AdminError.invalid("after", "'after' is not a valid cursor") }
            return value
        }
        return (limit, before)
    }

    func time(_ text: String, _ field: String) throws -> Date {
        if let date = TextPattern.parseTimestamp(text) { return date }
        if let day = TextPattern.parseTimestamp(text + "T00:00:00Z") { return day }
        throw AdminError.invalid(field, "'\(field)' must be a date (2026-11-01) or an RFC 3339 time")
    }

    func found<T>(_ operation: () async throws -> T) async throws -> T {
        do {
            return try await operation()
        } catch TenancyError.notFound {
            throw AdminError.notFound
        }
    }

    private func invalidate(_ keyIDs: [String]) async {
        guard let redis else { return }
        await KeyResolver.publishInvalidation(keyIDs, redis: redis, channel: invalidationChannel, logger: logger)
    }
}
