import Foundation
import PostgresNIO
import SluiceLimiter

public struct Tenant: Sendable, Equatable, Codable {
    public let id: UUID
    public var name: String
    public var limits: Limits
    /// Per-model limits of this tenant, by model name.
    public var modelLimits: [String: Limits]
    public let createdAt: Date
    public var updatedAt: Date

    enum CodingKeys: String, CodingKey {
        case id, name, limits
        case modelLimits = "model_limits"
        case createdAt = "created_at"
        case updatedAt = "updated_at"
    }
}

/// An API key as listed: everything but the secret (which is never stored) and its hash.
public struct KeyRecord: Sendable, Equatable, Codable {
    public let id: String
    public let tenantID: UUID
    public var name: String
    public var limits: Limits
    /// Models the key may use; nil means every model.
    public var models: [String]?
    public let createdAt: Date
    public var expiresAt: Date?
    public var revokedAt: Date?
    /// Set on a rotated key: the key that replaces it.
    public var replacedBy: String?

    public func isUsable(at now: Date) -> Bool {
        revokedAt == nil && (expiresAt.map { $0 > now } ?? true)
    }

    enum CodingKeys: String, CodingKey {
        case id, name, limits, models
        case tenantID = "tenant_id"
        case createdAt = "created_at"
        case expiresAt = "expires_at"
        case revokedAt = "revoked_at"
        case replacedBy = "replaced_by"
    }
}

/// Everything the data plane needs about a key, as cached in replica memory and Redis.
public struct ResolvedKey: Sendable, Equatable, Codable {
    public let keyID: String
    public let tenantID: String
    public let secretHash: [UInt8]
    public let models: [String]?
    public let keyLimits: Limits
    public let tenantLimits: Limits
    public let modelLimits: [String: Limits]
    public let expiresAt: Date?
    public let revoked: Bool

    public func isUsable(at now: Date) -> Bool {
        !revoked && (expiresAt.map { $0 > now } ?? true)
    }

    public func allows(model: String) -> Bool {
        models.map { $0.contains(model) } ?? true
    }
}

/// One row of the usage report.
public struct UsageRow: Sendable, Equatable, Codable {
    public let group: String
    public let requests: Int
    public let promptTokens: Int
    public let completionTokens: Int
    public let costUSD: Double

    enum CodingKeys: String, CodingKey {
        case group, requests
        case promptTokens = "prompt_tokens"
        case completionTokens = "completion_tokens"
        case costUSD = "cost_usd"
    }
}

public enum UsageGrouping: String, Sendable, CaseIterable {
    case model, day, key
}

public enum TenancyError: Error, Sendable, Equatable {
    case notFound
    /// PostgreSQL refused a value the caller gave (out of range, not representable).
    case invalidValue(String)
    /// A transient conflict with a concurrent change (serialization failure, deadlock).
    case conflict

    /// What a store error means for the caller, when it is the caller's doing or transient;
    /// nil for a real fault.
    public static func classify(_ error: any Error) -> TenancyError? {
        if let error = error as? TenancyError { return error }
        if let error = error as? PostgresTransactionError, let inner = error.closureError { return classify(inner) }
        guard let error = error as? PSQLError, let state = error.serverInfo?[.sqlState] else { return nil }
        switch state {
        case "23503": return .notFound  // a referenced row (the tenant) does not exist
        case "40001", "40P01": return .conflict
        case _ where state.hasPrefix("22"): return .invalidValue(error.serverInfo?[.message] ?? "invalid value")
        default: return nil
        }
    }
}
