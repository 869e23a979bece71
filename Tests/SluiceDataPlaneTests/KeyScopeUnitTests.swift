import Foundation
import NIOCore
import SluiceDataPlane
import SluiceNet
import Testing

/// The pure parts of scoped keys: networks, the client's address behind proxies, the output cap.
@Suite("Key scope, without I/O")
struct KeyScopeUnitTests {
    @Test func networksParseStrictlyAndMatchByPrefix() {
        #expect(IPNetwork("10.0.0.0/8")!.contains(IPAddress("10.255.1.2")!))
        #expect(!IPNetwork("10.0.0.0/8")!.contains(IPAddress("11.0.0.1")!))
        #expect(IPNetwork("192.168.1.128/25")!.contains(IPAddress("192.168.1.200")!))
        #expect(!IPNetwork("192.168.1.128/25")!.contains(IPAddress("192.168.1.127")!))
        #expect(IPNetwork("2001:db8::/32")!.contains(IPAddress("2001:db8:ffff::1")!))
        #expect(!IPNetwork("2001:db8::/32")!.contains(IPAddress("2001:db9::1")!))
        #expect(IPNetwork("0.0.0.0/0")!.contains(IPAddress("8.8.8.8")!))
        #expect(!IPNetwork("0.0.0.0/0")!.contains(IPAddress("::1")!), "families never match each other")
        // An IPv4-mapped peer of a dual-stack listener is its IPv4 address.
        #expect(IPNetwork("127.0.0.0/8")!.contains(IPAddress("::ffff:127.0.0.1")!))
        #expect(IPNetwork("203.0.113.7")?.prefixLength == 32)
        for bad in ["10.0.0.1/8", "10.0.0.0/33", "10.0.0.0/-1", "10.0.0.0/", "10.0.0.0/8/8", "::1/129", "example.com",
                    "10.0.0", "1.2.3.4 ", "10.0.0.0/٨", ""] {
            #expect(IPNetwork(bad) == nil, "\(bad)")
        }
    }

    @Test func aForwardingHeaderCountsOnlyFromTrustedProxiesAndOnlyUpToTheFirstUntrustedHop() throws {
        let proxy = try SocketAddress(ipAddress: "10.0.0.2", port: 4000)
        let outsider = try SocketAddress(ipAddress: "198.51.100.20", port: 4000)
        let policy = ClientAddressPolicy(header: "x-forwarded-for", trustedProxies: [IPNetwork("10.0.0.0/8")!])
        func client(_ peer: SocketAddress, _ header: String?) -> String? {
            policy.clientAddress(ClientOrigin(peer: peer, forwardedFor: header))?.description
        }
        #expect(client(outsider, "203.0.113.1") == "198.51.100.20", "an untrusted peer's header is ignored")
        #expect(client(proxy, nil) == "10.0.0.2")
        #expect(client(proxy, "203.0.113.1") == "203.0.113.1")
        #expect(client(proxy, "1.1.1.1, 203.0.113.1") == "203.0.113.1", "the client's own entries are left of the proxy's")
        #expect(client(proxy, "203.0.113.1, 10.0.0.9") == "203.0.113.1", "trusted hops are skipped")
        #expect(client(proxy, "10.0.0.8, 10.0.0.9") == "10.0.0.8", "all trusted: the leftmost")
        #expect(client(proxy, "203.0.113.1, garbage") == nil, "a malformed hop tells nothing")
        #expect(client(proxy, " 2001:db8::5 ") == "2001:db8::5")
        let untrusting = ClientAddressPolicy(header: nil, trustedProxies: [IPNetwork("10.0.0.0/8")!])
        #expect(untrusting.clientAddress(ClientOrigin(peer: proxy, forwardedFor: "203.0.113.1"))?.description == "10.0.0.2")
    }

    private func parse(_ json: String, _ endpoint: InferenceEndpoint = .chatCompletions, cap: Int?) throws(OpenAIError) -> InferenceRequestBody {
        try InferenceRequestBody.parse(ByteBuffer(string: json), endpoint: endpoint, outputCap: cap)
    }

    @Test func theOutputCapRefusesEitherFieldAboveItAndIsFilledInWhenBothAreLeftOut() throws {
        let messages = #""messages": [{"role": "user", "content": "hi"}]"#
        for body in [#"{"model": "m", \#(messages), "max_tokens": 11}"#, #"{"model": "m", \#(messages), "max_completion_tokens": 11}"#,
                     #"{"model": "m", \#(messages), "max_completion_tokens": 1, "max_tokens": 11}"#] {
            #expect(throws: OpenAIError.self, "\(body)") { try parse(body, cap: 10) }
        }
        let within = try parse(#"{"model": "m", \#(messages), "max_completion_tokens": 4, "max_tokens": 9}"#, cap: 10)
        #expect(within.maxOutputTokens == 9, "the larger of the two is reserved")
        #expect(String(buffer: within.upstreamBody).contains(#""max_tokens": 9"#), "sent as given")

        // Left out: sent with the cap, and streams also get include_usage; the body stays JSON.
        for stream in [false, true] {
            let body = try parse(#"{"model": "m", \#(messages), "stream": \#(stream)}"#, cap: 10)
            #expect(body.maxOutputTokens == 10)
            let sent = try JSONSerialization.jsonObject(with: Data(String(buffer: body.upstreamBody).utf8)) as? [String: Any]
            #expect(sent?["max_tokens"] as? Int == 10)
            #expect((sent?["stream_options"] as? [String: Any])?["include_usage"] as? Bool == (stream ? true : nil))
        }
        let embedding = try parse(#"{"model": "m", "input": "x"}"#, .embeddings, cap: 10)
        #expect(!String(buffer: embedding.upstreamBody).contains("max_tokens"), "embeddings have no output")
        let uncapped = try parse(#"{"model": "m", \#(messages)}"#, cap: nil)
        #expect(uncapped.maxOutputTokens == nil && !String(buffer: uncapped.upstreamBody).contains("max_tokens"))
    }
}
