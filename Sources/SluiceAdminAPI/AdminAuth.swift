import Foundation
import JWTKit

public enum AdminRole: String, Sendable, Codable, CaseIterable {
    case platformAdmin = "platform_admin"
    case tenantAdmin = "tenant_admin"
    case tenantViewer = "tenant_viewer"
}

/// The admin JWT's claims: `sub`, `role`, `tenant` (tenant roles only), `exp`.
public struct AdminClaims: JWTPayload, Equatable {
    public var sub: SubjectClaim
    public var role: AdminRole
    public var tenant: String?
    public var exp: ExpirationClaim

    public init(sub: String, role: AdminRole, tenant: String?, expires: Date) {
        self.sub = SubjectClaim(value: sub)
        self.role = role
        self.tenant = tenant
        self.exp = ExpirationClaim(value: expires)
    }

    public func verify(using algorithm: some JWTAlgorithm) async throws {
        try exp.verifyNotExpired()
        if role != .platformAdmin {
            guard let tenant, UUID(uuidString: tenant) != nil else {
                throw JWTError.claimVerificationFailure(failedClaim: nil, reason: "tenant roles need a tenant id")
            }
        }
    }
}

/// Who is calling, after the token checked out.
public struct AdminCaller: Sendable, Equatable {
    public let subject: String
    public let role: AdminRole
    public let tenant: UUID?
}

/// Verifies admin tokens: HS256 with `SLUICE_ADMIN_JWT_SECRET`, and optionally RS256/ES256
/// public keys (PEM) for tokens minted by an external identity provider.
public struct AdminAuthenticator: Sendable {
    let keys: JWTKeyCollection
    /// Tokens from an OpenID Connect provider, when one is configured.
    let oidc: OIDCVerifier?

    /// An HS256 secret shorter than the hash (32 bytes) is refused: it would be guessable.
    public static let minimumSecretLength = 32

    public init(hmacSecret: String?, rsaPublicKeysPEM: [String] = [], ecdsaPublicKeysPEM: [String] = [],
                oidc: OIDCVerifier? = nil) async throws {
        self.oidc = oidc
        let keys = JWTKeyCollection()
        if let hmacSecret {
            guard hmacSecret.utf8.count >= Self.minimumSecretLength else {
                throw AdminAuthConfigurationError.secretTooShort(minimum: Self.minimumSecretLength)
            }
            await keys.add(hmac: HMACKey(from: hmacSecret), digestAlgorithm: .sha256, kid: "hs256")
        }
        for (index, pem) in rsaPublicKeysPEM.enumerated() {
            await keys.add(rsa: try Insecure.RSA.PublicKey(pem: pem), digestAlgorithm: .sha256, kid: JWKIdentifier(string: "rs256-\(index)"))
        }
        for (index, pem) in ecdsaPublicKeysPEM.enumerated() {
            await keys.add(ecdsa: try ES256PublicKey(pem: pem), kid: JWKIdentifier(string: "es256-\(index)"))
        }
        self.keys = keys
    }

    /// The caller, or nil for a missing, malformed, expired or badly signed token.
    public func caller(bearer token: String) async -> AdminCaller? {
        if let claims = try? await keys.verify(token, as: AdminClaims.self) {
            return AdminCaller(subject: claims.sub.value, role: claims.role, tenant: claims.tenant.flatMap(UUID.init(uuidString:)))
        }
        return await oidc?.caller(token: token)
    }

    /// Mints an HS256 token (the `sluice admin token` command and tests).
    public func token(_ claims: AdminClaims) async throws -> String {
        try await keys.sign(claims, kid: "hs256")
    }
}

public enum AdminAuthConfigurationError: Error, CustomStringConvertible {
    case secretTooShort(minimum: Int)

    public var description: String {
        switch self {
        case .secretTooShort(let minimum):
            return "SLUICE_ADMIN_JWT_SECRET must be at least \(minimum) bytes (e.g. openssl rand -hex 32)"
        }
    }
}
