import Foundation
import PostgresNIO
import SluiceLimiter

public struct Tenant: Sendable, Equatable, Codable {
    public let id: UUID
    public var name: String
    public var limits: Limits
    /// Per-model limits of this tenant, by model name.
    public var modelLimits: [String: Limits]
    /// The tenant's customer in Stripe, for the meter-event exporter.
    public var stripeCustomerID: String?
    public let createdAt: Date
    public var updatedAt: Date

    enum CodingKeys: String, CodingKey {
        case id, name, limits
        case modelLimits = "model_limits"
        case stripeCustomerID = "stripe_customer_id"
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
    public var scope: KeyScope

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
        case scope
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
    /// Optional: a key cached by an older release has none.
    public let scope: KeyScope?

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
    /// Exact: the ledger's sum. `costUSD` is the same for display (a JSON number).
    public let costMicroUSD: Int64
    public var costUSD: Double { Double(costMicroUSD) / 1_000_000 }

    public init(group: String, requests: Int, promptTokens: Int, completionTokens: Int, costMicroUSD: Int64) {
        self.group = group
        self.requests = requests
        self.promptTokens = promptTokens
        self.completionTokens = completionTokens
        self.costMicroUSD = costMicroUSD
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        self.init(group: try container.decode(String.self, forKey: .group), requests: try container.decode(Int.self, forKey: .requests),
                  promptTokens: try container.decode(Int.self, forKey: .promptTokens),
                  completionTokens: try container.decode(Int.self, forKey: .completionTokens),
                  costMicroUSD: try container.decode(Int64.self, forKey: .costMicroUSD))
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(group, forKey: .group)
        try container.encode(requests, forKey: .requests)
        try container.encode(promptTokens, forKey: .promptTokens)
        try container.encode(completionTokens, forKey: .completionTokens)
        try container.encode(costMicroUSD, forKey: .costMicroUSD)
        try container.encode(costUSD, forKey: .costUSD)
    }

    enum CodingKeys: String, CodingKey {
        case group, requests
        case promptTokens = "prompt_tokens"
        case completionTokens = "completion_tokens"
        case costMicroUSD = "cost_micro_usd"
        case costUSD = "cost_usd"
    }
}

/// One change to a tenant's configuration or keys: who, what, when (never a secret).
public struct AuditEntry: Sendable, Equatable, Codable {
    public let id: Int64
    public let at: Date
    public let actor: String
    public let action: String
    public let target: String
    public let details: [String: String]
}

/// How the usage report groups the ledger; groups sort as text in their natural order
/// (hours and days as `2026-11-27T13` and `2026-11-27`).
public enum UsageGrouping: String, Sendable, CaseIterable {
    case model, day, hour, key
    /// "YYYY-MM-DD model": a day has no space, so the first space splits the two.
    case dayModel = "day_model"
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
