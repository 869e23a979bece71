import Foundation
import NIOHTTP1
import SluiceDataPlane

/// What the public listener takes from a request's head before it reads any body: the route,
/// the credentials, the correlation headers and the framing. Everything here is bounded or
/// checked, since every field is the client's.
struct PublicRequestHead {
    enum Route: Equatable {
        case inference(InferenceEndpoint)
        case listModels
        /// `GET /v1/realtime`: a WebSocket handshake (see `webSocket`).
        case realtime
        case unknown
    }

    /// What a WebSocket handshake carries, when the head is a valid one (RFC 6455 §4.2.1).
    struct WebSocketHandshake {
        let key: String
        let subprotocols: [String]
        let model: String?
        let openAIBeta: String?
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
    /// Set for a well-formed WebSocket handshake on the Realtime route.
    let webSocket: WebSocketHandshake?

    init(_ head: HTTPRequestHead, forwardingHeader: String? = nil) {
        let path = head.uri.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false).first ?? ""
        self.path = path
        self.method = head.method.rawValue
        self.route = Self.route(head.method, path)
        self.authorization = head.headers.first(name: "authorization")
        self.clientRequestID = head.headers.first(name: "x-request-id").flatMap(RequestID.clientGiven)
        self.traceparent = head.headers.first(name: "traceparent").flatMap(Self.traceparent)
        let forwarded = forwardingHeader.map { head.headers[$0] } ?? []
        self.forwardedFor = forwarded.isEmpty ? nil : forwarded.joined(separator: ",")
        let length = head.headers.first(name: "content-length")
        self.declaredLength = length.flatMap { Int($0) }
        self.declaresBody = length.map { $0 != "0" } ?? head.headers.contains(name: "transfer-encoding")
        self.keepAlive = head.isKeepAlive
        self.version = head.version
        self.expectsContinue = head.headers.first(name: "expect")?.lowercased() == "100-continue"
        self.webSocket = route == .realtime ? Self.webSocketHandshake(head) : nil
    }

    /// The handshake's fields, or nil when it is not one: GET, `Upgrade: websocket`, version 13,
    /// a 16-byte base64 key. Subprotocols are bounded (at most 8, each up to 256 bytes).
    static func webSocketHandshake(_ head: HTTPRequestHead) -> WebSocketHandshake? {
        guard head.method == .GET, head.version == .http1_1,
              head.headers[canonicalForm: "upgrade"].contains(where: { $0.lowercased() == "websocket" }),
              head.headers[canonicalForm: "connection"].contains(where: { $0.lowercased() == "upgrade" }),
              head.headers.first(name: "sec-websocket-version") == "13",
              let key = head.headers.first(name: "sec-websocket-key"), key.utf8.count == 24,
              Data(base64Encoded: key)?.count == 16 else { return nil }
        let offered = head.headers[canonicalForm: "sec-websocket-protocol"].map(String.init)
        guard offered.count <= 8, offered.allSatisfy({ $0.utf8.count <= 256 }) else { return nil }
        let query = head.uri.split(separator: "?", maxSplits: 1).dropFirst().first ?? ""
        let model = query.split(separator: "&").lazy.compactMap { pair -> String? in
            let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            guard parts.count == 2, parts[0] == "model", parts[1].utf8.count <= 512 else { return nil }
            return String(parts[1]).replacingOccurrences(of: "+", with: " ").removingPercentEncoding
        }.first
        return WebSocketHandshake(key: key, subprotocols: offered, model: model,
                                  openAIBeta: head.headers.first(name: "openai-beta").map { String($0.prefix(256)) })
    }

    private static func route(_ method: HTTPMethod, _ path: Substring) -> Route {
        switch method {
        case .POST:
            return InferenceEndpoint(rawValue: String(path)).map(Route.inference) ?? .unknown
        case .GET:
            return path == "/v1/models" ? .listModels : path == "/v1/realtime" ? .realtime : .unknown
        default:
            return .unknown
        }
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
