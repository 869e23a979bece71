import Foundation
import Hummingbird
import HummingbirdTesting
import JWTKit
import Logging
import NIOCore
import SluiceAdminAPI
import SluiceTenancy
import SluiceUpstream
import Synchronization
import Testing
import _CryptoExtras

/// A local OpenID Connect provider: a discovery document and a key set that can rotate.
final class LocalIdentityProvider: Sendable {
    struct SigningKey: Sendable {
        let kid: String
        let keys: JWTKeyCollection
        let jwk: [String: String]
    }

    let issuer: String
    private let published = Mutex<[SigningKey]>([])
    let keySetReads = Atomic<Int>(0)

    private init(issuer: String) { self.issuer = issuer }

    /// Runs a provider on a free port for `body`.
    static func with(_ body: @escaping @Sendable (LocalIdentityProvider) async throws -> Void) async throws {
        let (ports, continuation) = AsyncStream.makeStream(of: Int.self)
        let holder = Mutex<LocalIdentityProvider?>(nil)
        let router = Router()
        router.get("realms/ops/.well-known/openid-configuration") { _, _ -> Response in
            let issuer = holder.withLock { $0!.issuer }
            return Self.json(["issuer": issuer, "jwks_uri": "\(issuer)/protocol/certs"])
        }
        router.get("realms/ops/protocol/certs") { _, _ -> Response in
            let provider = holder.withLock { $0! }
            provider.keySetReads.add(1, ordering: .relaxed)
            return Self.json(["keys": provider.published.withLock { $0.map(\.jwk) }])
        }
        var logger = Logger(label: "idp")
        logger.logLevel = .critical
        let app = Application(router: router, configuration: .init(address: .hostname("127.0.0.1", port: 0)),
                              onServerRunning: { continuation.yield($0.localAddress?.port ?? 0) }, logger: logger)
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await app.run() }
            var iterator = ports.makeAsyncIterator()
            let port = await iterator.next() ?? 0
            let provider = LocalIdentityProvider(issuer: "http://127.0.0.1:\(port)/realms/ops")
            holder.withLock { $0 = provider }
            try await body(provider)
            group.cancelAll()
        }
    }

    private static func json(_ object: Any) -> Response {
        let data = try! JSONSerialization.data(withJSONObject: object)
        return Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(bytes: data)))
    }

    static func base64URL(_ data: Data) -> String {
        data.base64EncodedString().replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
    }

    static func es256Key(kid: String) async throws -> SigningKey {
        let key = ES256PrivateKey()
        let keys = JWTKeyCollection()
        await keys.add(ecdsa: key, kid: JWKIdentifier(string: kid))
        let parameters = try #require(key.parameters)
        return SigningKey(kid: kid, keys: keys, jwk: ["kty": "EC", "crv": "P-256", "x": parameters.x, "y": parameters.y,
                                                       "kid": kid, "alg": "ES256", "use": "sig"])
    }

    static func rs256Key(kid: String) async throws -> SigningKey {
        let key = try Insecure.RSA.PrivateKey(backing: _RSA.Signing.PrivateKey(keySize: .bits2048))
        let keys = JWTKeyCollection()
        await keys.add(rsa: key, digestAlgorithm: .sha256, kid: JWKIdentifier(string: kid))
        let (modulus, exponent) = try key.publicKey.getKeyPrimitives()
        return SigningKey(kid: kid, keys: keys, jwk: ["kty": "RSA", "n": base64URL(modulus), "e": base64URL(exponent),
                                                       "kid": kid, "alg": "RS256", "use": "sig"])
    }

    func publish(_ keys: [SigningKey]) { published.withLock { $0 = keys } }

    func verifier(refreshInterval: Duration = .seconds(30)) throws -> OIDCVerifier {
        var settings = OIDCSettings(issuer: issuer, audience: "sluice-admin")
        settings.roles = ["ops": .platformAdmin, "acme-admins": .tenantAdmin, "acme-staff": .tenantViewer]
        settings.refreshInterval = refreshInterval
        let http = try UpstreamClient()
        return OIDCVerifier(settings: settings, fetch: { try await http.fetch($0) }, logger: Logger(label: "oidc-test"))
    }
}

/// What a provider puts in its tokens.
struct ProviderClaims: JWTPayload {
    var iss: String
    var sub = "alice@example.com"
    var aud: [String] = ["sluice-admin"]
    var exp = Date().addingTimeInterval(300).timeIntervalSince1970
    var nbf: Double?
    var groups: [String] = ["ops"]
    var sluice_tenant: String?

    func verify(using algorithm: some JWTAlgorithm) async throws {}
}

@Suite("Admins from an OpenID Connect provider")
struct AdminOIDCTests {
    func token(_ key: LocalIdentityProvider.SigningKey, _ claims: ProviderClaims) async throws -> String {
        try await key.keys.sign(claims, kid: JWKIdentifier(string: key.kid))
    }

    @Test func rs256AndEs256TokensMapToRolesAndTenantsAndReachTheAPI() async throws {
        try await LocalIdentityProvider.with { provider in
            let rsa = try await LocalIdentityProvider.rs256Key(kid: "rsa-1")
            let ec = try await LocalIdentityProvider.es256Key(kid: "ec-1")
            provider.publish([rsa, ec])
            let verifier = try provider.verifier()
            try await AdminHarness.run(oidc: verifier) { harness in
                let own = try await harness.newTenant()
                let other = try await harness.newTenant()
                let platform = try await token(rsa, ProviderClaims(iss: provider.issuer))
                #expect(try await harness.call(.get, "/admin/v1/tenants", token: platform).status == .ok)

                var claims = ProviderClaims(iss: provider.issuer, groups: ["everyone", "acme-staff", "acme-admins"])
                claims.sluice_tenant = own.id.uuidString.lowercased()
                let tenantAdmin = try await token(ec, claims)
                let caller = await harness.authenticator.caller(bearer: tenantAdmin)
                #expect(caller?.role == .tenantAdmin && caller?.tenant == own.id, "the strongest mapped group wins")
                #expect(try await harness.call(.get, "/admin/v1/tenants/\(own.id)", token: tenantAdmin).status == .ok)
                #expect(try await harness.call(.get, "/admin/v1/tenants/\(other.id)", token: tenantAdmin).status == .notFound)
                #expect(try await harness.call(.get, "/admin/v1/tenants", token: tenantAdmin).status == .forbidden)
            }
            #expect(await verifier.reads == 1, "the key set is read once and cached")
        }
    }

    @Test func claimsThatDoNotCheckOutAreRefused() async throws {
        try await LocalIdentityProvider.with { provider in
            let key = try await LocalIdentityProvider.es256Key(kid: "ec-1")
            provider.publish([key])
            let authenticator = try await AdminAuthenticator(hmacSecret: nil, oidc: try provider.verifier())
            let now = Date().timeIntervalSince1970
            let good = ProviderClaims(iss: provider.issuer)
            #expect(await authenticator.caller(bearer: try await token(key, good))?.role == .platformAdmin)
            var withinLeeway = good
            withinLeeway.exp = now - 30
            #expect(await authenticator.caller(bearer: try await token(key, withinLeeway)) != nil, "60 s of leeway")

            var cases: [(String, ProviderClaims)] = []
            var claims = good
            claims.aud = ["another-app"]; cases.append(("audience", claims))
            claims = good; claims.iss = provider.issuer + "/other"; cases.append(("issuer", claims))
            claims = good; claims.exp = now - 120; cases.append(("expired", claims))
            claims = good; claims.nbf = now + 120; cases.append(("not yet valid", claims))
            claims = good; claims.groups = ["everyone"]; cases.append(("no mapped group", claims))
            claims = good; claims.groups = ["acme-admins"]; cases.append(("a tenant role without a tenant", claims))
            claims = good; claims.groups = ["acme-admins"]; claims.sluice_tenant = "acme"; cases.append(("a tenant that is no id", claims))
            claims = good; claims.sub = ""; cases.append(("no subject", claims))
            for (name, claims) in cases {
                #expect(await authenticator.caller(bearer: try await token(key, claims)) == nil, "\(name)")
            }
            // Signed by a key the provider never published, under a published key's id.
            let impostor = try await LocalIdentityProvider.es256Key(kid: "ec-1")
            #expect(await authenticator.caller(bearer: try await token(impostor, good)) == nil)
            // HS256 with the public key's id (algorithm confusion), and an unsigned token.
            let hmac = JWTKeyCollection()
            await hmac.add(hmac: HMACKey(from: "a secret of at least thirty-two bytes!!"), digestAlgorithm: .sha256, kid: "ec-1")
            #expect(await authenticator.caller(bearer: try await hmac.sign(good, kid: "ec-1")) == nil)
            let unsigned = try await token(key, good).split(separator: ".").prefix(2).joined(separator: ".") + "."
            #expect(await authenticator.caller(bearer: unsigned) == nil)
        }
    }

    @Test func aRotationIsFollowedAndUnknownKeysCannotFloodTheProvider() async throws {
        try await LocalIdentityProvider.with { provider in
            let first = try await LocalIdentityProvider.es256Key(kid: "2026-11")
            provider.publish([first])
            let following = try provider.verifier(refreshInterval: .zero)
            let old = try await token(first, ProviderClaims(iss: provider.issuer))
            #expect(await following.caller(token: old) != nil)

            // The provider rotates: the new key signs, the old one is withdrawn.
            let second = try await LocalIdentityProvider.rs256Key(kid: "2026-12")
            provider.publish([second])
            #expect(await following.caller(token: try await token(second, ProviderClaims(iss: provider.issuer))) != nil,
                    "a token under the new key id re-reads the set")
            #expect(await following.caller(token: old) == nil, "the withdrawn key no longer verifies")

            // Made-up key ids: one read per refresh interval at most, however many tokens.
            let limited = try provider.verifier(refreshInterval: .seconds(30))
            let before = provider.keySetReads.load(ordering: .relaxed)
            for index in 0..<25 {
                let stranger = try await LocalIdentityProvider.es256Key(kid: "made-up-\(index)")
                #expect(await limited.caller(token: try await token(stranger, ProviderClaims(iss: provider.issuer))) == nil)
            }
            #expect(provider.keySetReads.load(ordering: .relaxed) - before == 1)
            #expect(await limited.reads == 1)
        }
    }
}
