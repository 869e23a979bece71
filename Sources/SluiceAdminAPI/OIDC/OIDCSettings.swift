import Foundation

/// Admins signed in at the company's identity provider (OpenID Connect): the issuer and
/// audience to trust, and how the provider's claims map to Sluice roles and tenants.
public struct OIDCSettings: Sendable, Equatable {
    /// Exactly as the provider's tokens say it (`iss`); its discovery document is at
    /// `<issuer>/.well-known/openid-configuration`.
    public var issuer: String
    /// Must be among the token's `aud`.
    public var audience: String
    /// The claim holding the caller's groups or roles: a string or a list of strings.
    public var rolesClaim = "groups"
    /// Claim value → role; values mapping to several roles give the strongest.
    public var roles: [String: AdminRole] = [:]
    /// The claim naming a tenant role's tenant (its UUID).
    public var tenantClaim = "sluice_tenant"
    /// Clock skew allowed on `exp` and `nbf`.
    public var leeway: Duration = .seconds(60)
    /// A token signed by a key the cached set does not have re-reads the set at most this often.
    public var refreshInterval: Duration = .seconds(30)
    /// The web UI signs in as this public client (authorization code with PKCE); its ID tokens
    /// must carry `audience`, which is usually the same client.
    public var uiClientID: String?
    public var uiScope = "openid profile"

    public init(issuer: String, audience: String) {
        self.issuer = issuer
        self.audience = audience
    }

    public var discoveryURL: String {
        (issuer.hasSuffix("/") ? String(issuer.dropLast()) : issuer) + "/.well-known/openid-configuration"
    }

    /// Who the claims say the caller is, or nil when they do not check out: wrong issuer or
    /// audience, expired, not yet valid, no subject, no mapped role, or a tenant role without
    /// a tenant.
    func caller(_ claims: OIDCClaims, now: Date) -> AdminCaller? {
        let leeway = Double(self.leeway.components.seconds)
        guard claims.issuer == issuer, claims.audiences.contains(audience),
              let expires = claims.expires, now.timeIntervalSince1970 < expires + leeway,
              (claims.notBefore.map { now.timeIntervalSince1970 >= $0 - leeway } ?? true),
              let subject = claims.subject, !subject.isEmpty else { return nil }
        let granted = (claims.strings[rolesClaim] ?? []).compactMap { roles[$0] }
        guard let role = AdminRole.allCases.first(where: granted.contains) else { return nil }  // strongest first
        if role == .platformAdmin { return AdminCaller(subject: subject, role: role, tenant: nil) }
        guard let tenant = claims.strings[tenantClaim]?.first.flatMap(UUID.init(uuidString:)) else { return nil }
        return AdminCaller(subject: subject, role: role, tenant: tenant)
    }
}
