import Foundation
import JWTKit
import Logging

/// Verifies admin tokens from an OpenID Connect provider: RS256 or ES256, signed by a key of
/// the provider's published set (JWKS, found through its discovery document). The set is read
/// on first use and again when a token names a key it lacks (a rotation), at most once per
/// `refreshInterval`, so a flood of made-up key ids cannot turn into a flood of fetches.
public actor OIDCVerifier {
    /// GET a URL: the status and body.
    public typealias Fetch = @Sendable (String) async throws -> (status: Int, body: String)

    private let settings: OIDCSettings
    private let fetch: Fetch
    private let logger: Logger
    private var keys = JWTKeyCollection()
    /// Key id → key type (`RSA` or `EC`) of the set last read.
    private var kinds: [String: String] = [:]
    private var lastRead: ContinuousClock.Instant?
    private var reading: Task<Void, Never>?
    public private(set) var reads = 0

    public init(settings: OIDCSettings, fetch: @escaping Fetch, logger: Logger) {
        self.settings = settings
        self.fetch = fetch
        self.logger = logger
    }

    /// The caller the token names, or nil when it does not verify.
    public func caller(token: String) async -> AdminCaller? {
        guard let header = Self.header(token), let kid = header.kid,
              let kind = ["RS256": "RSA", "ES256": "EC"][header.alg] else { return nil }
        if kinds[kid] == nil { await readKeysIfDue() }
        // The key must be of the kind the token's algorithm needs: no algorithm confusion.
        guard kinds[kid] == kind, let claims = try? await keys.verify(token, as: OIDCClaims.self) else { return nil }
        return settings.caller(claims, now: Date())
    }

    private func readKeysIfDue() async {
        if let reading { return await reading.value }
        if let lastRead, ContinuousClock.now - lastRead < settings.refreshInterval { return }
        let task = Task { await self.readKeys() }
        reading = task
        await task.value
        reading = nil
    }

    private func readKeys() async {
        lastRead = .now
        reads += 1
        do {
            let (collection, kinds) = try await Self.keySet(settings: settings, fetch: fetch)
            keys = collection
            self.kinds = kinds
            logger.info("identity provider keys read", metadata: ["issuer": "\(settings.issuer)", "keys": "\(kinds.count)"])
        } catch {
            // Keeps the set it had: a provider that is briefly down does not sign everyone out.
            logger.warning("identity provider keys could not be read",
                           metadata: ["issuer": "\(settings.issuer)", "error": "\(error)"])
        }
    }

    /// The discovery document's `jwks_uri`, then the set: its RSA and P-256 signing keys.
    static func keySet(settings: OIDCSettings, fetch: Fetch) async throws -> (JWTKeyCollection, [String: String]) {
        let discovery = try await fetch(settings.discoveryURL)
        guard discovery.status == 200, let document = json(discovery.body),
              document["issuer"] as? String == settings.issuer, let uri = document["jwks_uri"] as? String,
              uri.hasPrefix("https://") || settings.issuer.hasPrefix("http://") else {
            throw OIDCError.discovery("\(settings.discoveryURL) answered \(discovery.status) without this issuer's jwks_uri")
        }
        let set = try await fetch(uri)
        guard set.status == 200, let entries = json(set.body)?["keys"] as? [[String: Any]] else {
            throw OIDCError.discovery("\(uri) answered \(set.status) without a key set")
        }
        let collection = JWTKeyCollection()
        var kinds: [String: String] = [:]
        for entry in entries.prefix(100) {
            guard let kid = entry["kid"] as? String, let kty = entry["kty"] as? String,
                  kty == "RSA" || (kty == "EC" && entry["crv"] as? String == "P-256"),
                  (entry["use"] as? String ?? "sig") == "sig",
                  let data = try? JSONSerialization.data(withJSONObject: entry),
                  let jwk = try? JSONDecoder().decode(JWK.self, from: data),
                  (try? await collection.add(jwk: jwk)) != nil else { continue }
            kinds[kid] = kty
        }
        return (collection, kinds)
    }

    private static func json(_ text: String) -> [String: Any]? {
        (try? JSONSerialization.jsonObject(with: Data(text.utf8))) as? [String: Any]
    }

    /// The token's `alg` and `kid`, read before any key is chosen.
    static func header(_ token: String) -> (alg: String, kid: String?)? {
        guard let first = token.split(separator: ".", maxSplits: 1).first, first.utf8.count <= 2_048 else { return nil }
        var text = first.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        text += String(repeating: "=", count: (4 - text.utf8.count % 4) % 4)
        guard let data = Data(base64Encoded: text), let header = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any],
              let alg = header["alg"] as? String else { return nil }
        return (alg, header["kid"] as? String)
    }
}

enum OIDCError: Error, CustomStringConvertible {
    case discovery(String)

    var description: String {
        switch self {
        case .discovery(let reason): reason
        }
    }
}
