import Crypto
import Foundation

/// Standard Webhooks signing: `whsec_` secrets (base64 of random bytes), and the
/// `webhook-signature` header `v1,<base64 HMAC-SHA256(secret, "<id>.<timestamp>.<body>")>`.
public enum WebhookSigning {
    public static func newSecret() -> String {
        var generator = SystemRandomNumberGenerator()
        let bytes = (0..<24).map { _ in UInt8.random(in: .min ... .max, using: &generator) }
        return "whsec_" + Data(bytes).base64EncodedString()
    }

    /// The secret's key bytes; nil when it is not a `whsec_` secret.
    static func key(of secret: String) -> SymmetricKey? {
        guard secret.hasPrefix("whsec_"), let bytes = Data(base64Encoded: String(secret.dropFirst(6))), !bytes.isEmpty else {
            return nil
        }
        return SymmetricKey(data: bytes)
    }

    public static func signature(secret: String, id: String, timestamp: Int64, body: String) -> String? {
        guard let key = key(of: secret) else { return nil }
        let mac = HMAC<SHA256>.authenticationCode(for: Data("\(id).\(timestamp).\(body)".utf8), using: key)
        return "v1," + Data(mac).base64EncodedString()
    }
}

/// Endpoint secrets at rest: sealed with AES-GCM under a key derived from the server pepper, so
/// a database dump alone does not let anyone sign as the gateway. Shown once, at creation.
public struct WebhookSecretSealer: Sendable {
    private let key: SymmetricKey

    public init(pepper: String) {
        key = HKDF<SHA256>.deriveKey(inputKeyMaterial: SymmetricKey(data: Data(pepper.utf8)), salt: Data("sluice".utf8),
                                     info: Data("webhook endpoint secrets".utf8), outputByteCount: 32)
    }

    public func seal(_ secret: String) throws -> Data {
        try AES.GCM.seal(Data(secret.utf8), using: key).combined ?? Data()
    }

    public func open(_ sealed: Data) throws -> String {
        String(decoding: try AES.GCM.open(try AES.GCM.SealedBox(combined: sealed), using: key), as: UTF8.self)
    }
}
