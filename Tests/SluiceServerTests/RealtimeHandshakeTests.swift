import NIOHTTP1
import Testing

@testable import SluiceServer

/// Which heads are WebSocket handshakes the Realtime route takes (everything else gets a 400).
@Suite("Realtime handshakes")
struct RealtimeHandshakeTests {
    private func head(_ uri: String = "/v1/realtime?model=gpt%2Drt&x=1", _ fields: [(String, String)] = [],
                      dropping: String? = nil) -> PublicRequestHead {
        var headers = HTTPHeaders([("upgrade", "websocket"), ("connection", "keep-alive, Upgrade"), ("sec-websocket-version", "13"),
                                   ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="), ("host", "x")])
        if let dropping { headers.remove(name: dropping) }
        for (name, value) in fields { headers.replaceOrAdd(name: name, value: value) }
        return PublicRequestHead(HTTPRequestHead(version: .http1_1, method: .GET, uri: uri, headers: headers))
    }

    @Test func aWellFormedHandshakeNamesItsModelAndSubprotocols() {
        let request = head(fields: [("sec-websocket-protocol", "realtime, openai-insecure-api-key.k"), ("openai-beta", "realtime=v1")])
        #expect(request.route == .realtime)
        #expect(request.webSocket?.model == "gpt-rt")
        #expect(request.webSocket?.subprotocols == ["realtime", "openai-insecure-api-key.k"])
        #expect(request.webSocket?.openAIBeta == "realtime=v1")
    }

    private func head(fields: [(String, String)]) -> PublicRequestHead { head("/v1/realtime?model=gpt%2Drt&x=1", fields) }

    @Test func malformedOrHostileHandshakesAreNotUpgraded() {
        #expect(head(dropping: "upgrade").webSocket == nil)
        #expect(head(dropping: "sec-websocket-key").webSocket == nil)
        #expect(head(fields: [("sec-websocket-version", "8")]).webSocket == nil)
        #expect(head(fields: [("sec-websocket-key", "short")]).webSocket == nil)
        #expect(head(fields: [("sec-websocket-protocol", Array(repeating: "p", count: 9).joined(separator: ","))]).webSocket == nil)
        #expect(head(fields: [("sec-websocket-protocol", String(repeating: "x", count: 300))]).webSocket == nil)
        #expect(head("/v1/realtime?model=" + String(repeating: "m", count: 600)).webSocket?.model == nil, "an overlong model is dropped")
        #expect(head("/v1/realtimeX").route == .unknown)
    }
}
