import NIOHTTP1
import SluiceDataPlane

/// What the public listener takes from a request's head before it reads any body: the route,
/// the credentials, the correlation headers and the framing. Everything here is bounded or
/// checked, since every field is the client's.
struct PublicRequestHead {
    enum Route: Equatable {
        case inference(InferenceEndpoint)
        case listModels
        case unknown
    }

    let route: Route
    let method: String
    let path: Substring
    let authorization: String?
    let clientRequestID: String?
    let traceparent: String?
    /// The configured forwarding header's values, comma-joined (believed only from trusted proxies).
    let forwardedFor: String?
    /// `Content-Length`, when declared (the decoder has refused malformed or conflicting ones).
    let declaredLength: Int?
    /// A body follows the head: a non-zero length or a transfer encoding.
    let declaresBody: Bool
    let keepAlive: Bool
    let version: HTTPVersion
    /// `Expect: 100-continue`: the client waits for a go-ahead before it sends the body.
    let expectsContinue: Bool

    init(_ head: HTTPRequestHead, forwardingHeader: String? = nil) {
        let path = head.uri.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false).first ?? ""
        self.path = path
        self.method = head.method.rawValue
        self.route = Self.route(head.method, path)
        self.authorization = head.headers.first(name: "authorization")
        self.clientRequestID = head.headers.first(name: "x-request-id").flatMap(Self.clientRequestID)
        self.traceparent = head.headers.first(name: "traceparent").flatMap(Self.traceparent)
        let forwarded = forwardingHeader.map { head.headers[$0] } ?? []
        self.forwardedFor = forwarded.isEmpty ? nil : forwarded.joined(separator: ",")
        let length = head.headers.first(name: "content-length")
        self.declaredLength = length.flatMap { Int($0) }
        self.declaresBody = length.map { $0 != "0" } ?? head.headers.contains(name: "transfer-encoding")
        self.keepAlive = head.isKeepAlive
        self.version = head.version
        self.expectsContinue = head.headers.first(name: "expect")?.lowercased() == "100-continue"
    }

    private static func route(_ method: HTTPMethod, _ path: Substring) -> Route {
        switch method {
        case .POST:
            return InferenceEndpoint(rawValue: String(path)).map(Route.inference) ?? .unknown
        case .GET:
            return path == "/v1/models" ? .listModels : .unknown
        default:
            return .unknown
        }
    }

    /// The client's `x-request-id`, for correlation only: visible ASCII, at most 128 bytes
    /// (longer ones are cut), anything else dropped; nil when nothing usable is left.
    static func clientRequestID(_ given: String) -> String? {
        let kept = given.utf8.lazy.filter { (0x21...0x7E).contains($0) }.prefix(128)
        return kept.isEmpty ? nil : String(decoding: Array(kept), as: UTF8.self)
    }

    /// W3C `traceparent`, forwarded when well-formed (version-traceid-parentid-flags).
    static func traceparent(_ value: String) -> String? {
        let parts = value.split(separator: "-")
        guard parts.count == 4, parts[0].count == 2, parts[1].count == 32, parts[2].count == 16, parts[3].count == 2,
              value.utf8.allSatisfy({ (0x30...0x39).contains($0) || (0x61...0x66).contains($0) || $0 == 0x2D }) else {
            return nil
        }
        return value
    }
}
