import Foundation
import Logging
import NIOCore
import PostgresNIO
import SluiceLimiter

/// Where the resolver reads keys from when no cache has them: PostgreSQL in production.
/// A protocol so tests can count the queries a real database receives.
public protocol KeyLookup: Sendable {
    func lookupKey(_ keyID: String) async throws -> ResolvedKey?
}

extension TenantStore: KeyLookup {
    /// One query: the key with its tenant's limits.
    public func lookupKey(_ keyID: String) async throws -> ResolvedKey? {
        let rows = try await client.query("""
            SELECT k.id, k.tenant_id, k.secret_hash, k.models, k.limits::text, t.limits::text, t.model_limits::text,
                   k.expires_at, k.revoked_at IS NOT NULL, k.scope::text
            FROM api_keys k JOIN tenants t ON t.id = k.tenant_id WHERE k.id = \(keyID)
            """, logger: logger)
        for try await row in rows.decode((String, UUID, ByteBuffer, [String]?, String, String, String, Date?, Bool, String).self) {
            let scope = try JSONCoding.decode(KeyScope.self, row.9)
            return ResolvedKey(
                keyID: row.0, tenantID: row.1.uuidString.lowercased(), secretHash: Array(row.2.readableBytesView), models: row.3,
                keyLimits: try JSONCoding.decode(Limits.self, row.4), tenantLimits: try JSONCoding.decode(Limits.self, row.5),
                modelLimits: try JSONCoding.decode([String: Limits].self, row.6), expiresAt: row.7, revoked: row.8,
                scope: scope.isEmpty ? nil : scope)
        }
        return nil
    }
}
