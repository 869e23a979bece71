import Foundation
import Logging
import NIOCore
import PostgresNIO
import SluiceLimiter

/// Tenants, keys and the audit log in PostgreSQL, the source of truth. Every change writes its
/// audit row in the same transaction. Callers (the admin API) enforce who may do what.
public struct TenantStore: Sendable {
    let client: PostgresClient
    let logger: Logger

    public init(client: PostgresClient, logger: Logger) {
        self.client = client
        self.logger = logger
    }

    /// A transaction that rethrows what its body threw (`TenancyError.notFound` stays itself,
    /// rather than arriving wrapped in a `PostgresTransactionError`).
    private func transaction<T: Sendable>(_ body: (PostgresConnection) async throws -> sending T) async throws -> T {
        do {
            return try await client.withTransaction(logger: logger, body)
        } catch let error as PostgresTransactionError {
            throw error.closureError ?? error
        }
    }

    // MARK: tenants

    public func createTenant(name: String, limits: Limits, modelLimits: [String: Limits], actor: String) async throws -> Tenant {
        let id = UUID()
        let limitsJSON = try JSONCoding.string(limits)
        let modelJSON = try JSONCoding.string(modelLimits)
        try await transaction { connection in
            _ = try await connection.query("""
                INSERT INTO tenants (id, name, limits, model_limits)
                VALUES (\(id), \(name), \(limitsJSON)::jsonb, \(modelJSON)::jsonb)
                """, logger: logger)
            try await Self.audit(connection, actor: actor, tenant: id, action: "tenant.create", target: id.uuidString,
                                 details: ["name": name], logger: logger)
        }
        return try await tenant(id)
    }

    public func tenant(_ id: UUID) async throws -> Tenant {
        let rows = try await client.query("""
            SELECT id, name, limits::text, model_limits::text, created_at, updated_at, stripe_customer_id FROM tenants WHERE id = \(id)
            """, logger: logger)
        for try await row in rows.decode((UUID, String, String, String, Date, Date, String?).self) {
            return try Self.tenant(row)
        }
        throw TenancyError.notFound
    }

    /// A page of tenants ordered by id, starting after `after`.
    public func listTenants(limit: Int, after: UUID?) async throws -> [Tenant] {
        let rows = try await client.query("""
            SELECT id, name, limits::text, model_limits::text, created_at, updated_at, stripe_customer_id FROM tenants
            WHERE \(after == nil) OR id > \(after ?? UUID())
            ORDER BY id LIMIT \(limit)
            """, logger: logger)
        var tenants: [Tenant] = []
        for try await row in rows.decode((UUID, String, String, String, Date, Date, String?).self) {
            tenants.append(try Self.tenant(row))
        }
        return tenants
    }

    /// `stripeCustomerID`: nil keeps it, `.some(nil)` clears it.
    public func updateTenant(_ id: UUID, name: String?, limits: Limits?, modelLimits: [String: Limits]?,
                             stripeCustomerID: String?? = nil, actor: String) async throws -> Tenant {
        let limitsJSON = try limits.map { try JSONCoding.string($0) }
        let modelJSON = try modelLimits.map { try JSONCoding.string($0) }
        try await transaction { connection in
            let rows = try await connection.query("""
                UPDATE tenants SET name = coalesce(\(name), name),
                    limits = coalesce(\(limitsJSON)::jsonb, limits),
                    model_limits = coalesce(\(modelJSON)::jsonb, model_limits),
                    stripe_customer_id = CASE WHEN \(stripeCustomerID != nil) THEN \(stripeCustomerID ?? nil) ELSE stripe_customer_id END,
                    updated_at = now()
                WHERE id = \(id) RETURNING id
                """, logger: logger)
            var found = false
            for try await _ in rows.decode(UUID.self) { found = true }
            guard found else { throw TenancyError.notFound }
            try await Self.audit(connection, actor: actor, tenant: id, action: "tenant.update", target: id.uuidString,
                                 details: ["name": name ?? "", "limits": limitsJSON ?? "", "model_limits": modelJSON ?? "",
                                           "stripe_customer_id": (stripeCustomerID ?? nil) ?? ""],
                                 logger: logger)
        }
        return try await tenant(id)
    }

    // MARK: keys

    /// Creates a key; the returned plaintext is the only time the secret exists outside the caller.
    public func createKey(tenantID: UUID, name: String, limits: Limits, models: [String]?, expiresAt: Date?,
                          scope: KeyScope = KeyScope(), hasher: KeyHasher, actor: String) async throws -> (KeyRecord, String) {
        let key = APIKey.generate()
        try await transaction { connection in
            try await Self.insertKey(connection, key: key, tenantID: tenantID, name: name, limits: limits,
                                     models: models, expiresAt: expiresAt, scope: scope, hasher: hasher, logger: logger)
            try await Self.audit(connection, actor: actor, tenant: tenantID, action: "key.create", target: key.keyID,
                                 details: ["name": name], logger: logger)
        }
        return (try await self.key(key.keyID), key.plaintext)
    }

    public func key(_ id: String) async throws -> KeyRecord {
        let rows = try await client.query("""
            SELECT id, tenant_id, name, limits::text, models, created_at, expires_at, revoked_at, replaced_by, scope::text
            FROM api_keys WHERE id = \(id)
            """, logger: logger)
        for try await row in rows.decode(KeyRow.self) { return try Self.keyRecord(row) }
        throw TenancyError.notFound
    }

    public func listKeys(tenantID: UUID, limit: Int, after: String?) async throws -> [KeyRecord] {
        let rows = try await client.query("""
            SELECT id, tenant_id, name, limits::text, models, created_at, expires_at, revoked_at, replaced_by, scope::text
            FROM api_keys WHERE tenant_id = \(tenantID) AND id > \(after ?? "")
            ORDER BY id LIMIT \(limit)
            """, logger: logger)
        var keys: [KeyRecord] = []
        for try await row in rows.decode(KeyRow.self) { keys.append(try Self.keyRecord(row)) }
        return keys
    }

    /// Changes what is given of a key (nil keeps a field; `.some(nil)` clears an optional one).
    /// Its secret, tenant and revocation cannot change here.
    public func updateKey(_ id: String, name: String?, limits: Limits?, models: [String]??, expiresAt: Date??,
                          scope: KeyScope?, actor: String) async throws -> KeyRecord {
        let old = try await key(id)
        let limitsJSON = try limits.map { try JSONCoding.string($0) }
        let scopeJSON = try scope.map { try JSONCoding.string($0) }
        try await transaction { connection in
            _ = try await connection.query("""
                UPDATE api_keys SET name = coalesce(\(name), name), limits = coalesce(\(limitsJSON)::jsonb, limits),
                    models = CASE WHEN \(models != nil) THEN \(models ?? nil) ELSE models END,
                    expires_at = CASE WHEN \(expiresAt != nil) THEN \(expiresAt ?? nil) ELSE expires_at END,
                    scope = coalesce(\(scopeJSON)::jsonb, scope)
                WHERE id = \(id)
                """, logger: logger)
            var details: [String: String] = [:]
            if let name { details["name"] = name }
            if let limitsJSON { details["limits"] = limitsJSON }
            if let models { details["models"] = models.map { $0.joined(separator: ",") } ?? "all" }
            if let expiresAt { details["expires_at"] = expiresAt.map { "\($0)" } ?? "never" }
            if let scopeJSON { details["scope"] = scopeJSON }
            try await Self.audit(connection, actor: actor, tenant: old.tenantID, action: "key.update", target: id,
                                 details: details, logger: logger)
        }
        return try await key(id)
    }

    /// Issues a replacement with the same name, limits and models; the old key keeps working
    /// for `grace` (never longer than it would have anyway), then expires.
    public func rotateKey(_ id: String, grace: Duration, hasher: KeyHasher, actor: String) async throws -> (KeyRecord, String) {
        let old = try await key(id)
        guard old.isUsable(at: Date()) else { throw TenancyError.notFound }
        let replacement = APIKey.generate()
        let graceEnd = Date().addingTimeInterval(TimeInterval(grace.components.seconds))
        try await transaction { connection in
            try await Self.insertKey(connection, key: replacement, tenantID: old.tenantID, name: old.name, limits: old.limits,
                                     models: old.models, expiresAt: old.expiresAt, scope: old.scope, hasher: hasher,
                                     logger: logger)
            _ = try await connection.query("""
                UPDATE api_keys SET replaced_by = \(replacement.keyID),
                    expires_at = least(coalesce(expires_at, \(graceEnd)), \(graceEnd))
                WHERE id = \(id)
                """, logger: logger)
            try await Self.audit(connection, actor: actor, tenant: old.tenantID, action: "key.rotate", target: id,
                                 details: ["replaced_by": replacement.keyID, "grace_seconds": "\(grace.components.seconds)"],
                                 logger: logger)
        }
        return (try await key(replacement.keyID), replacement.plaintext)
    }

    public func revokeKey(_ id: String, actor: String) async throws -> KeyRecord {
        let old = try await key(id)
        try await transaction { connection in
            _ = try await connection.query("UPDATE api_keys SET revoked_at = coalesce(revoked_at, now()) WHERE id = \(id)",
                                           logger: logger)
            try await Self.audit(connection, actor: actor, tenant: old.tenantID, action: "key.revoke", target: id,
                                 details: [:], logger: logger)
        }
        return try await key(id)
    }

    public func keyIDs(tenantID: UUID) async throws -> [String] {
        var ids: [String] = []
        for try await id in try await client.query("SELECT id FROM api_keys WHERE tenant_id = \(tenantID)", logger: logger)
            .decode(String.self) {
            ids.append(id)
        }
        return ids
    }

    // MARK: audit

    /// The tenant's audit log, newest first: at most `limit` entries older than entry `before`.
    public func auditLog(tenantID: UUID, limit: Int, before: Int64?) async throws -> [AuditEntry] {
        let rows = try await client.query("""
            SELECT id, at, actor, action, target, details::text FROM audit_log
            WHERE tenant_id = \(tenantID) AND (\(before)::int8 IS NULL OR id < \(before)::int8)
            ORDER BY id DESC LIMIT \(limit)
            """, logger: logger)
        var entries: [AuditEntry] = []
        for try await (id, at, actor, action, target, details) in rows.decode((Int64, Date, String, String, String, String).self) {
            // Details are written as text maps; anything else reads as none.
            let map = (try? JSONCoding.decode([String: String].self, details)) ?? [:]
            entries.append(AuditEntry(id: id, at: at, actor: actor, action: action, target: target, details: map))
        }
        return entries
    }

    // MARK: usage

    /// The tenant's ledger between `from` and `to`, grouped, in group order: at most `limit`
    /// groups after the group `after` (paging through long ranges, e.g. a year by hour).
    public func usage(tenantID: UUID, from: Date, to: Date, groupBy: UsageGrouping, limit: Int = 10_000,
                      after: String? = nil) async throws -> [UsageRow] {
        let group: String
        switch groupBy {
        case .model: group = "model"
        case .key: group = "key_id"
        case .day: group = "to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD')"
        case .hour: group = "to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24')"
        case .dayModel: group = "to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD') || ' ' || model"
        }
        // The group expression is one of the constants above, never the caller's text.
        let query: PostgresQuery = """
            SELECT g, requests, prompt, completion, cost FROM (
                SELECT \(unescaped: group) AS g, count(*)::bigint AS requests, sum(prompt_tokens)::bigint AS prompt,
                       sum(completion_tokens)::bigint AS completion, sum(cost_micro_usd)::bigint AS cost
                FROM usage_ledger WHERE tenant_id = \(tenantID) AND at >= \(from) AND at < \(to) GROUP BY 1
            ) grouped WHERE \(after)::text IS NULL OR g COLLATE "C" > \(after)::text ORDER BY g COLLATE "C" LIMIT \(limit)
            """
        var rows: [UsageRow] = []
        for try await (group, requests, prompt, completion, cost) in try await client.query(query, logger: logger)
            .decode((String, Int64, Int64, Int64, Int64).self) {
            rows.append(UsageRow(group: group, requests: Int(requests), promptTokens: Int(prompt),
                                 completionTokens: Int(completion), costMicroUSD: cost))
        }
        return rows
    }

    // MARK: helpers

    typealias KeyRow = (String, UUID, String, String, [String]?, Date, Date?, Date?, String?, String)

    private static func insertKey(_ connection: PostgresConnection, key: APIKey, tenantID: UUID, name: String,
                                  limits: Limits, models: [String]?, expiresAt: Date?, scope: KeyScope, hasher: KeyHasher,
                                  logger: Logger) async throws {
        let limitsJSON = try JSONCoding.string(limits)
        let scopeJSON = try JSONCoding.string(scope)
        let hash = ByteBuffer(bytes: hasher.hash(key.secret))  // bytea
        let rows = try await connection.query("""
            INSERT INTO api_keys (id, tenant_id, name, secret_hash, limits, models, expires_at, scope)
            SELECT \(key.keyID), id, \(name), \(hash), \(limitsJSON)::jsonb, \(models), \(expiresAt), \(scopeJSON)::jsonb
            FROM tenants WHERE id = \(tenantID) RETURNING id
            """, logger: logger)
        var inserted = false
        for try await _ in rows.decode(String.self) { inserted = true }
        guard inserted else { throw TenancyError.notFound }
    }

    private static func audit(_ connection: PostgresConnection, actor: String, tenant: UUID?, action: String,
                              target: String, details: [String: String], logger: Logger) async throws {
        let json = try JSONCoding.string(details)
        _ = try await connection.query("""
            INSERT INTO audit_log (actor, tenant_id, action, target, details)
            VALUES (\(actor), \(tenant), \(action), \(target), \(json)::jsonb)
            """, logger: logger)
        // Key changes reach the tenant's webhooks, written in the same transaction.
        if let type = WebhookOutbox.eventType(forAudit: action), let tenant {
            var data = details
            data["key_id"] = target
            data["tenant_id"] = tenant.uuidString.lowercased()
            try await WebhookOutbox.enqueue(connection, tenantID: tenant, type: type, data: data, logger: logger)
        }
    }

    private static func tenant(_ row: (UUID, String, String, String, Date, Date, String?)) throws -> Tenant {
        Tenant(id: row.0, name: row.1, limits: try JSONCoding.decode(Limits.self, row.2),
               modelLimits: try JSONCoding.decode([String: Limits].self, row.3), stripeCustomerID: row.6,
               createdAt: row.4, updatedAt: row.5)
    }

    private static func keyRecord(_ row: KeyRow) throws -> KeyRecord {
        KeyRecord(id: row.0, tenantID: row.1, name: row.2, limits: try JSONCoding.decode(Limits.self, row.3),
                  models: row.4, createdAt: row.5, expiresAt: row.6, revokedAt: row.7, replacedBy: row.8,
                  scope: try JSONCoding.decode(KeyScope.self, row.9))
    }
}

/// JSON for jsonb columns and caches: sorted keys, so equal values give equal text.
enum JSONCoding {
    static func string(_ value: some Encodable) throws -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys
        return String(decoding: try encoder.encode(value), as: UTF8.self)
    }

    static func decode<T: Decodable>(_ type: T.Type, _ text: String) throws -> T {
        try JSONDecoder().decode(type, from: Data(text.utf8))
    }
}
