import SluiceTestSupport
import Testing

/// The public listener's HTTP/1.1 behaviour on the wire (raw sockets, a whole replica):
/// keep-alive, pipelining, HTTP/1.0, `Expect: 100-continue`, clients that break off.
@Suite("Public listener")
struct PublicListenerTests {
    static let chatBody = #"{"model": "mock-model", "messages": [{"role": "user", "content": "hello"}]}"#

    private func responses(in text: String) -> [Substring] {
        text.split(separator: "HTTP/1.", omittingEmptySubsequences: true)
    }

    @Test func pipelinedRequestsAreAnsweredInOrderOnOneConnection() async throws {
        try await GatewayHarness.run { gateway in
            let connection = try await RawConnection.open(port: gateway.publicPort)
            let auth = "authorization: Bearer \(gateway.key)\r\n"
            let chat = "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\n\(auth)content-type: application/json\r\n"
                + "content-length: \(Self.chatBody.utf8.count)\r\n\r\n\(Self.chatBody)"
            // Three requests in one write: a chat, an unknown path, the model list.
            try await connection.send(chat + "GET /v1/nothing HTTP/1.1\r\nhost: x\r\n\(auth)\r\n"
                                      + "GET /v1/models HTTP/1.1\r\nhost: x\r\n\(auth)\r\n")
            #expect(await connection.wait(timeout: .seconds(10)) { text, _ in text.contains("\"object\":\"list\"") })
            let answers = responses(in: connection.received)
            #expect(answers.count == 3)
            #expect(answers.first?.hasPrefix("1 200") == true && answers.first?.contains("chat.completion") == true)
            #expect(answers.dropFirst().first?.hasPrefix("1 404") == true)
            #expect(answers.last?.hasPrefix("1 200") == true)
            #expect(!connection.isClosed, "an unknown path without a body keeps the connection")
        }
    }

    @Test func expectContinueGetsAGoAheadOnlyOnceTheKeyPassed() async throws {
        try await GatewayHarness.run { gateway in
            let head = { (key: String) in
                "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer \(key)\r\ncontent-type: application/json\r\n"
                    + "expect: 100-continue\r\ncontent-length: \(Self.chatBody.utf8.count)\r\n\r\n"
            }
            let accepted = try await RawConnection.open(port: gateway.publicPort)
            try await accepted.send(head(gateway.key))
            #expect(await accepted.wait(timeout: .seconds(5)) { text, _ in text.contains("100 Continue") })
            try await accepted.send(Self.chatBody)
            #expect(await accepted.wait(timeout: .seconds(10)) { text, _ in text.contains("chat.completion") })
            #expect(responses(in: accepted.received).last?.hasPrefix("1 200") == true)

            let refused = try await RawConnection.open(port: gateway.publicPort)
            try await refused.send(head("slk_bogus"))
            #expect(await refused.waitForClose(timeout: .seconds(5)))
            #expect(refused.received.hasPrefix("HTTP/1.1 401"), "no go-ahead for a body that would be refused")
            #expect(!refused.received.contains("100 Continue"))
        }
    }

    @Test func http10ClientsGetTheirConnectionSemantics() async throws {
        try await GatewayHarness.run { gateway in
            let request = "GET /v1/models HTTP/1.0\r\nauthorization: Bearer \(gateway.key)\r\n"
            let plain = try await RawConnection.open(port: gateway.publicPort)
            try await plain.send(request + "\r\n")
            #expect(await plain.waitForClose(timeout: .seconds(5)), "HTTP/1.0 without keep-alive: closed after the answer")
            #expect(plain.received.hasPrefix("HTTP/1.0 200"))

            let kept = try await RawConnection.open(port: gateway.publicPort)
            try await kept.send(request + "connection: keep-alive\r\n\r\n")
            #expect(await kept.wait(timeout: .seconds(5)) { text, _ in text.contains("\"object\":\"list\"") })
            #expect(kept.received.lowercased().contains("connection: keep-alive"))
            #expect(!kept.isClosed)
        }
    }

    @Test func aClientThatBreaksOffMidBodyGetsOneAnswerAtMost() async throws {
        try await GatewayHarness.run { gateway in
            for _ in 0..<5 {
                let connection = try await RawConnection.open(port: gateway.publicPort)
                try await connection.send("POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer \(gateway.key)\r\n"
                                          + "content-type: application/json\r\ncontent-length: 200\r\n\r\n{\"model\":")
                try await connection.closeOutput()
                #expect(await connection.waitForClose(timeout: .seconds(5)))
                #expect(responses(in: connection.received).count <= 1, "\(connection.received)")
            }
            // The replica is still serving.
            #expect(try await gateway.chat().status == 200)
        }
    }
}
