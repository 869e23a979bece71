import Foundation
import Logging
import NIOCore
import PostgresNIO
import SluiceLimiter
import SluiceRedis
import SluiceServer
import SluiceTenancy
import SluiceTestSupport
import Testing

/// The gateway as a hostile client meets it: every test here plays an attacker (or a broken
/// backend) against the real listeners, Redis and PostgreSQL.
@Suite("Gateway hardening")
struct GatewayHardeningTests {
    /// Ledger rows of a tenant, as (client request id, server request id, prompt, completion,
    /// source, clamped), once at least `count` have arrived (the metering worker is asynchronous).
    struct LedgerRow: Sendable, Equatable {
        var clientRequestID: String?
        var requestID: String
        var prompt: Int
        var completion: Int
        var source: String
        var clamped: Bool
        var cached = 0
    }

    static func ledger(tenant: UUID, atLeast count: Int, within limit: Duration = .seconds(10)) async throws -> [LedgerRow] {
        var rows: [LedgerRow] = []
        let deadline = ContinuousClock.now + limit
        while true {
            rows = try await PostgresFixture.withClient { client, _ in
                var rows: [LedgerRow] = []
                let query: PostgresQuery = """
                    SELECT client_request_id, request_id, prompt_tokens, completion_tokens, usage_source, usage_clamped,
                           cached_prompt_tokens
                    FROM usage_ledger WHERE tenant_id = \(tenant) ORDER BY at
                    """
                for try await (client, request, prompt, completion, source, clamped, cached) in try await client.query(query, logger: Logger(label: "t"))
                    .decode((String?, String, Int, Int, String, Bool, Int).self) {
                    rows.append(LedgerRow(clientRequestID: client, requestID: request, prompt: prompt, completion: completion,
                                          source: source, clamped: clamped, cached: cached))
                }
                return rows
            }
            if rows.count >= count || ContinuousClock.now >= deadline { return rows }
            try await Task.sleep(for: .milliseconds(50))
        }
    }

    // MARK: 1. request ids

    @Test func aRepeatedRequestIDIsNeitherAFreePassNorAFreeMeal() async throws {
        try await GatewayHarness.run(keyLimits: Limits(requestsPerMinute: 5)) { gateway in
            var statuses: [Int] = []
            let started = ContinuousClock.now
            for _ in 0..<30 {
                let response = try await gateway.chat(headers: [("x-request-id", "same")])
                #expect(response.header("x-request-id") == "same", "the client's id is echoed for correlation")
                statuses.append(response.status)
            }
            // The burst of 5, plus one per 12 s of refill if a loaded machine took that long.
            let refill = Int((ContinuousClock.now - started).components.seconds / 12)
            let admitted = statuses.filter { $0 == 200 }.count
            #expect((5...(5 + refill)).contains(admitted), "\(admitted) admitted")
            #expect(statuses.filter { $0 == 429 }.count == 30 - admitted)
            let rows = try await Self.ledger(tenant: gateway.tenant.id, atLeast: admitted)
            #expect(rows.count == admitted, "every admitted request is billed once")
            #expect(rows.allSatisfy { $0.clientRequestID == "same" && $0.completion == 8 })
            #expect(Set(rows.map(\.requestID)).count == admitted, "server ids are unique")

            // Another tenant sending the same id is billed too.
            let other = try await gateway.store.createTenant(name: "other", limits: Limits(), modelLimits: [:], actor: "test")
            let (_, otherKey) = try await gateway.store.createKey(
                tenantID: other.id, name: "other", limits: Limits(), models: ["mock-model"], expiresAt: nil,
                hasher: KeyHasher(pepper: "gateway-test-pepper"), actor: "test")
            #expect(try await gateway.chat(key: otherKey, headers: [("x-request-id", "same")]).status == 200)
            let otherRows = try await Self.ledger(tenant: other.id, atLeast: 1)
            #expect(otherRows.count == 1 && otherRows.first?.clientRequestID == "same")
        }
    }

    @Test func hostileRequestIDsAreCutAndCleaned() async throws {
        try await GatewayHarness.run { gateway in
            let long = String(repeating: "a", count: 5_000)
            let response = try await gateway.chat(headers: [("x-request-id", long)])
            #expect(response.status == 200 && response.header("x-request-id") == String(repeating: "a", count: 128))
            let spaced = try await gateway.chat(headers: [("x-request-id", "a b\tc")])
            #expect(spaced.header("x-request-id") == "abc")
            let none = try await gateway.chat()
            #expect(UUID(uuidString: none.header("x-request-id") ?? "") != nil, "a server id when the client sent none")
        }
    }

    // MARK: 2. metric labels

    @Test func clientStringsNeverBecomeMetricLabels() async throws {
        try await GatewayHarness.run(keyLimits: Limits(requestsPerMinute: 100_000)) { gateway in
            _ = try await gateway.chat()
            let hostile = [#"a\"b"#, #"new\nline"#, #"back\\slash"#, String(repeating: "x", count: 10_000), "{}=,\\\"}"]
            // Series of the request path (Redis command timings come and go with background work).
            let series = { (text: String) in
                text.split(separator: "\n").filter { !$0.hasPrefix("#") && !$0.hasPrefix("sluice_redis_") }.count
            }
            let sendHostileNames = { (range: Range<Int>) in
                for index in range {
                    let name = "\(hostile[index % hostile.count])-\(index)"
                    let escaped = String(data: try JSONSerialization.data(withJSONObject: [name], options: .fragmentsAllowed),
                                         encoding: .utf8)!
                    let body = #"{"model": \#(escaped.dropFirst().dropLast()), "messages": []}"#
                    let response = try await gateway.post("/v1/chat/completions", body: body)
                    #expect([400, 404].contains(response.status))
                }
            }
            let before = try await metricsText(gateway)
            try await sendHostileNames(0..<150)
            let middle = try await metricsText(gateway)
            try await sendHostileNames(150..<300)
            let after = try await metricsText(gateway)
            // The first names add a few series (the `other` model's counters and histograms); 150
            // more names add none: series never follow what clients send.
            #expect(series(middle) - series(before) <= 80, "\(series(middle) - series(before)) new series")
            #expect(series(after) == series(middle), "\(series(after) - series(middle)) series from 150 more names")
            #expect(!after.contains("new\\nline") && !after.contains("xxxxxxxxxx"))
            #expect(after.contains(#"model="other",status="404""#))
            if let verdict = await PromtoolCheck.metrics(after) { #expect(verdict.passed, "\(verdict.output)") }
        }
    }

    private func metricsText(_ gateway: GatewayHarness) async throws -> String {
        try await RawHTTPClient.request(port: gateway.adminPort, method: "GET", path: "/metrics").body
    }

    // MARK: 3. decided from the headers

    @Test func anOversizedBodyIsRefusedFromItsHeadersAndTheConnectionCloses() async throws {
        try await GatewayHarness.run { gateway in
            let connection = try await RawConnection.open(port: gateway.publicPort)
            try await connection.send("POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer \(gateway.key)\r\n"
                                      + "content-type: application/json\r\ncontent-length: \(64 * 1024 * 1024)\r\n\r\n")
            let closed = await connection.waitForClose(timeout: .seconds(5))
            #expect(closed, "the connection must close after the 413, not wait for 64 MiB")
            #expect(connection.received.hasPrefix("HTTP/1.1 413"))
            #expect(connection.received.contains("request_too_large"))
        }
    }

    @Test func anUnauthenticatedCallerIsRefusedBeforeItsBody() async throws {
        try await GatewayHarness.run { gateway in
            let connection = try await RawConnection.open(port: gateway.publicPort)
            // A body that fits, but is never sent: the key is refused without waiting for it.
            try await connection.send("POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer slk_bogus\r\n"
                                      + "content-type: application/json\r\ncontent-length: 1000\r\n\r\n")
            #expect(await connection.waitForClose(timeout: .seconds(5)))
            #expect(connection.received.hasPrefix("HTTP/1.1 401"))
            #expect(connection.received.contains("invalid_api_key"))
        }
    }

    // MARK: 4. slow clients

    static let tightLimits: ListenerLimits = {
        var limits = ListenerLimits()
        limits.headerTimeout = .milliseconds(600)
        limits.bodyTimeout = .milliseconds(600)
        limits.idleTimeout = .milliseconds(800)
        return limits
    }()

    @Test func aClientTricklingItsHeaderIsCutOff() async throws {
        try await GatewayHarness.run(listenerLimits: Self.tightLimits) { gateway in
            let connection = try await RawConnection.open(port: gateway.publicPort)
            let request = "GET /v1/models HTTP/1.1\r\nhost: x\r\nauthorization: Bearer \(gateway.key)\r\n\r\n"
            let started = ContinuousClock.now
            var sent = 0
            for byte in request {
                do { try await connection.send(String(byte)) } catch { break }  // closed under us
                sent += 1
                if await connection.waitForClose(timeout: .milliseconds(100)) { break }
            }
            let closed = await connection.waitForClose(timeout: .seconds(2))
            #expect(closed)
            #expect(sent < request.count, "the whole header went through")
            #expect(!connection.received.contains("200 OK"))
            #expect(ContinuousClock.now - started < .seconds(3))
        }
    }

    @Test func aStalledBodyIsCutOff() async throws {
        try await GatewayHarness.run(listenerLimits: Self.tightLimits) { gateway in
            let connection = try await RawConnection.open(port: gateway.publicPort)
            try await connection.send("POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer \(gateway.key)\r\n"
                                      + "content-type: application/json\r\ncontent-length: 100\r\n\r\n{\"model\":")
            #expect(await connection.waitForClose(timeout: .seconds(3)), "a body that never completes must not hold the connection")
        }
    }

    @Test func anIdleKeepAliveConnectionIsClosed() async throws {
        try await GatewayHarness.run(listenerLimits: Self.tightLimits) { gateway in
            let connection = try await RawConnection.open(port: gateway.publicPort)
            // The idle clock starts after the answer, which is after this: a bound that holds
            // however late this test sees the answer on a loaded machine.
            let sent = ContinuousClock.now
            try await connection.send("GET /v1/models HTTP/1.1\r\nhost: x\r\nauthorization: Bearer \(gateway.key)\r\n\r\n")
            #expect(await connection.wait(timeout: .seconds(3)) { text, _ in text.contains("\"data\"") })
            #expect(!connection.isClosed, "keep-alive: the answer does not close the connection")
            #expect(await connection.waitForClose(timeout: .seconds(5)))
            #expect(ContinuousClock.now - sent >= .milliseconds(800), "closed before the idle timeout")
        }
    }

    @Test func connectionsPastTheCapAreRefusedWithoutHarmingTheOthers() async throws {
        var limits = ListenerLimits()  // default timeouts: only the cap is under test here
        limits.maxConnections = 3
        try await GatewayHarness.run(listenerLimits: limits) { gateway in
            var open: [RawConnection] = []
            for _ in 0..<3 {
                // Answered once, so the server has surely taken (and counted) this connection
                // before the next one arrives: accepted connections become active in any order.
                let connection = try await RawConnection.open(port: gateway.publicPort)
                try await connection.send("GET /v1/models HTTP/1.1\r\nhost: x\r\nauthorization: Bearer \(gateway.key)\r\n\r\n")
                #expect(await connection.wait(timeout: .seconds(5)) { text, _ in text.contains("\"data\"") })
                open.append(connection)
            }
            // The first is mid-request: its headers are in, its body not yet.
            let body = #"{"model": "mock-model", "messages": []}"#
            try await open[0].send("POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer \(gateway.key)\r\n"
                                   + "content-type: application/json\r\ncontent-length: \(body.utf8.count)\r\n\r\n")
            let refused = try await RawConnection.open(port: gateway.publicPort)
            #expect(await refused.waitForClose(timeout: .seconds(2)), "the fourth connection was not refused")
            #expect(refused.received.isEmpty)
            try await open[0].send(body)
            #expect(await open[0].wait(timeout: .seconds(5)) { text, _ in text.contains("\"choices\"") })
            #expect(open[0].received.components(separatedBy: "HTTP/1.1 200").count == 3, "both answers are 200s")

            // A slot frees when a connection ends.
            open[1].close()
            var admitted = false
            for _ in 0..<50 where !admitted {
                let next = try await RawConnection.open(port: gateway.publicPort)
                admitted = !(await next.waitForClose(timeout: .milliseconds(100)))
                next.close()
            }
            #expect(admitted)
            for connection in open { connection.close() }
        }
    }

    // MARK: 6. a stream whose client left before the body

    @Test func aStreamWhoseClientLeftBeforeTheBodyFreesItsSlot() async throws {
        try await GatewayHarness.run(keyLimits: Limits(maxConcurrentRequests: 1),
                                     models: ["mock-model", "latent-model"]) { gateway in
            let body = #"{"model": "latent-model", "messages": [{"role": "user", "content": "hi"}], "stream": true}"#
            let connection = try await RawConnection.open(port: gateway.publicPort)
            try await connection.send("POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer \(gateway.key)\r\n"
                                      + "content-type: application/json\r\ncontent-length: \(body.utf8.count)\r\n\r\n\(body)")
            // Gone once admitted (its concurrency slot is taken), before the backend's first byte (300 ms).
            let redis = try RedisClient(configuration: RedisConfiguration.patient(url: TestEnvironment.redisURL))
            defer { redis.shutdown() }
            let inFlight = "sl:{t:\(gateway.tenant.id.uuidString.lowercased())}:k:\(gateway.keyID):inflight"
            var polls = 0
            while try await redis.send("ZCARD", inFlight).int != 1, polls < 500 {
                polls += 1
                try await Task.sleep(for: .milliseconds(2))
            }
            #expect(polls < 500, "the stream was never admitted")
            connection.close()
            // The lease is 120 s: a slot freed by the gateway itself, not by the lease, is back in seconds.
            var admitted = false
            for _ in 0..<250 where !admitted {
                admitted = try await gateway.chat().status == 200
                if !admitted { try await Task.sleep(for: .milliseconds(50)) }
            }
            #expect(admitted, "the abandoned stream kept its concurrency slot")
        }
    }

    // MARK: 7. usage the backend does not report

    @Test func unreportedOrAbsurdUsageIsBilledAtLeastTheEstimate() async throws {
        try await GatewayHarness.run(models: ["silent-model", "absurd-model", "dying-model"]) { gateway in
            #expect(try await gateway.chat(model: "silent-model", headers: [("x-request-id", "silent")]).status == 200)
            #expect(try await gateway.chat(model: "silent-model", stream: true, headers: [("x-request-id", "silent-stream")]).status == 200)
            #expect(try await gateway.chat(model: "absurd-model", headers: [("x-request-id", "absurd")]).status == 200)
            #expect(try await gateway.chat(model: "dying-model", stream: true, headers: [("x-request-id", "dying")]).status == 200)
            let rows = try await Self.ledger(tenant: gateway.tenant.id, atLeast: 4)
            func row(_ id: String) -> LedgerRow? { rows.first { $0.clientRequestID == id } }
            let silent = try #require(row("silent"))
            #expect(silent.source == "estimated" && silent.prompt > 0 && silent.completion >= 8, "\(silent)")
            let silentStream = try #require(row("silent-stream"))
            #expect(silentStream.source == "estimated" && silentStream.prompt > 0 && silentStream.completion == 8, "\(silentStream)")
            let absurd = try #require(row("absurd"))
            #expect(absurd.clamped && absurd.source == "estimated" && absurd.prompt > 0 && absurd.completion == 1_000_000_000,
                    "\(absurd)")
            let dying = try #require(row("dying"))
            #expect(dying.source == "estimated" && dying.prompt > 0 && dying.completion == 3, "\(dying)")
        }
    }
}
