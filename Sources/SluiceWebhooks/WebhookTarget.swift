import Foundation

/// An endpoint URL, checked: http(s), a host, no credentials, at most 2,048 bytes; and unless
/// private networks are allowed, no loopback, private, link-local or unspecified address literal
/// and no `localhost` (a tenant must not make the gateway call its own admin port or a cloud
/// metadata service). A name that resolves to such an address is not caught here.
public struct WebhookTarget: Sendable, Equatable {
    public let origin: String
    /// Path and query, "/" at least.
    public let pathAndQuery: String

    public enum Refusal: Error, Equatable {
        case malformed
        case privateAddress
    }

    public init(_ text: String, allowPrivateNetworks: Bool) throws(Refusal) {
        guard text.utf8.count <= 2_048, let url = URLComponents(string: text), let scheme = url.scheme?.lowercased(),
              scheme == "http" || scheme == "https", let host = url.host, !host.isEmpty, url.user == nil, url.password == nil,
              url.fragment == nil
        else { throw .malformed }
        if !allowPrivateNetworks && Self.isPrivate(host) { throw .privateAddress }
        let port = url.port.map { ":\($0)" } ?? ""
        let bracketed = host.contains(":") ? "[\(host)]" : host
        origin = "\(scheme)://\(bracketed)\(port)"
        let path = url.percentEncodedPath.isEmpty ? "/" : url.percentEncodedPath
        pathAndQuery = path + (url.percentEncodedQuery.map { "?\($0)" } ?? "")
    }

    static func isPrivate(_ host: String) -> Bool {
        let name = host.lowercased().trimmingCharacters(in: CharacterSet(charactersIn: "[]."))
        if name == "localhost" || name.hasSuffix(".localhost") { return true }
        let parts = name.split(separator: ".", omittingEmptySubsequences: false).compactMap { UInt8($0) }
        if parts.count == 4 {
            switch (parts[0], parts[1]) {
            case (0, _), (10, _), (127, _), (169, 254), (192, 168): return true
            case (172, let second) where (16...31).contains(second): return true
            case (100, let second) where (64...127).contains(second): return true  // carrier-grade NAT
            default: return false
            }
        }
        if name.contains(":") {  // IPv6 literal
            return name == "::" || name == "::1" || name.hasPrefix("fe80") || name.hasPrefix("fc") || name.hasPrefix("fd")
                || name.hasPrefix("::ffff:")
        }
        // A bare number or hex is an IPv4 address to many resolvers (http://2130706433/).
        return name.allSatisfy { $0.isHexDigit || $0 == "x" } && !name.isEmpty && name.first?.isNumber == true
    }
}
