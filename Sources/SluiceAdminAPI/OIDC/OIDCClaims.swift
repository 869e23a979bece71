import Foundation
import JWTKit

/// An identity provider's token claims, read loosely: the registered ones, plus every claim
/// that is a string or a list of strings (the roles and tenant claims are named in settings).
/// Checked by `OIDCSettings.caller`, with the configured leeway, not here.
struct OIDCClaims: JWTPayload {
    var issuer: String?
    var subject: String?
    var audiences: [String] = []
    var expires: Double?
    var notBefore: Double?
    var strings: [String: [String]] = [:]

    private struct Name: CodingKey {
        let stringValue: String
        init(stringValue: String) { self.stringValue = stringValue }
        var intValue: Int? { nil }
        init?(intValue: Int) { nil }
    }

    init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: Name.self)
        for key in container.allKeys.prefix(200) {
            if let text = try? container.decode(String.self, forKey: key) {
                strings[key.stringValue] = [text]
            } else if let list = try? container.decode([String].self, forKey: key) {
                strings[key.stringValue] = Array(list.prefix(1_000))
            }
        }
        issuer = strings["iss"]?.first
        subject = strings["sub"]?.first
        audiences = strings["aud"] ?? []
        expires = try? container.decode(Double.self, forKey: Name(stringValue: "exp"))
        notBefore = try? container.decode(Double.self, forKey: Name(stringValue: "nbf"))
    }

    func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: Name.self)
        for (name, values) in strings { try container.encode(values, forKey: Name(stringValue: name)) }
    }

    func verify(using algorithm: some JWTAlgorithm) async throws {}
}
