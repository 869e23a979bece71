import Crypto

/// The API key format: `slk_<key id>_<secret><checksum>`.
///
/// - `slk_` lets secret scanners recognise a leaked Sluice key.
/// - the key id (12 base62 characters) is public: it names the key in logs, URLs and caches.
/// - the secret (32 base62 characters, about 190 random bits) is shown once, stored only as
///   HMAC-SHA256 with the server pepper.
/// - the checksum (6 base62 characters of SHA-256 over everything before it) rejects a
///   mistyped or truncated key with no I/O.
public struct APIKey: Sendable, Equatable {
    public static let prefix = "slk_"
    static let keyIDLength = 12
    static let secretLength = 32
    static let checksumLength = 6

    public let keyID: String
    /// Never log this; `description` hides it.
    public let secret: String

    /// Parses and checks a presented key; nil for anything malformed (no I/O is done).
    public init?(parsing text: some StringProtocol) {
        let utf8 = Array(text.utf8)
        let expected = Self.prefix.utf8.count + Self.keyIDLength + 1 + Self.secretLength + Self.checksumLength
        guard utf8.count == expected, text.hasPrefix(Self.prefix) else { return nil }
        let idStart = Self.prefix.utf8.count
        let idEnd = idStart + Self.keyIDLength
        guard utf8[idEnd] == UInt8(ascii: "_") else { return nil }
        let id = utf8[idStart..<idEnd]
        let secret = utf8[(idEnd + 1)..<(idEnd + 1 + Self.secretLength)]
        let checksum = utf8[(idEnd + 1 + Self.secretLength)...]
        guard id.allSatisfy(Base62.isDigit), secret.allSatisfy(Base62.isDigit), checksum.allSatisfy(Base62.isDigit) else {
            return nil
        }
        let body = Array(utf8[0..<(idEnd + 1 + Self.secretLength)])
        guard Array(checksum) == Self.checksum(of: body) else { return nil }
        self.keyID = String(decoding: id, as: UTF8.self)
        self.secret = String(decoding: secret, as: UTF8.self)
    }

    /// A new key with a fresh random id and secret.
    public static func generate() -> APIKey {
        var generator = SystemRandomNumberGenerator()
        return APIKey(keyID: Base62.random(count: keyIDLength, using: &generator),
                      secret: Base62.random(count: secretLength, using: &generator))
    }

    init(keyID: String, secret: String) {
        self.keyID = keyID
        self.secret = secret
    }

    /// The full key, as shown to its owner exactly once.
    public var plaintext: String {
        let body = Self.prefix + keyID + "_" + secret
        return body + String(decoding: Self.checksum(of: Array(body.utf8)), as: UTF8.self)
    }

    /// A public key id is well-formed (used to validate ids in admin URLs).
    public static func isValidKeyID(_ text: some StringProtocol) -> Bool {
        text.utf8.count == keyIDLength && text.utf8.allSatisfy(Base62.isDigit)
    }

    private static func checksum(of body: [UInt8]) -> [UInt8] {
        let digest = Array(SHA256.hash(data: body))
        var value = UInt64(digest[0]) << 24 | UInt64(digest[1]) << 16 | UInt64(digest[2]) << 8 | UInt64(digest[3])
        var digits = [UInt8](repeating: 0, count: checksumLength)
        for index in (0..<checksumLength).reversed() {
            digits[index] = Base62.alphabet[Int(value % 62)]
            value /= 62
        }
        return digits
    }
}

extension APIKey: CustomStringConvertible {
    public var description: String { "\(Self.prefix)\(keyID)_…" }
}

enum Base62 {
    static let alphabet = Array("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz".utf8)

    static func isDigit(_ byte: UInt8) -> Bool {
        (48...57).contains(byte) || (65...90).contains(byte) || (97...122).contains(byte)
    }

    static func random(count: Int, using generator: inout some RandomNumberGenerator) -> String {
        String(decoding: (0..<count).map { _ in alphabet[Int.random(in: 0..<62, using: &generator)] }, as: UTF8.self)
    }
}

/// HMAC-SHA256 of key secrets with the server pepper; verification in constant time.
public struct KeyHasher: Sendable {
    private let pepper: SymmetricKey

    public init(pepper: String) {
        self.pepper = SymmetricKey(data: Array(pepper.utf8))
    }

    public func hash(_ secret: String) -> [UInt8] {
        Array(HMAC<SHA256>.authenticationCode(for: Array(secret.utf8), using: pepper))
    }

    /// Constant-time comparison (swift-crypto's MAC check).
    public func matches(_ secret: String, storedHash: [UInt8]) -> Bool {
        HMAC<SHA256>.isValidAuthenticationCode(storedHash, authenticating: Array(secret.utf8), using: pepper)
    }
}
