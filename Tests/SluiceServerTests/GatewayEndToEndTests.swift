import Foundation
import Logging
import PostgresNIO
import SluiceLimiter
import SluiceRedis
import SluiceTenancy
import SluiceTestSupport
import Testing

/// Through real listeners on loopback: the gateway, mock model servers, Redis, PostgreSQL.
@Suite("Gateway end to end")
struct GatewayEndToEndTests {
    @Test func chatStreamingCompletionsEmbeddingsAndModels() async throws {
        try await GatewayHarness.run(keyLimits: Limits(requestsPerMinute: 1_000, tokensPerMinute: 1_000_000)) { gateway in
            let plain = try await gateway.chat(headers: [("x-request-id", "req-123")])
            #expect(plain.status == 200)
            #expect(plain.header("x-request-id") == "req-123")
            #expect(plain.header("x-ratelimit-limit-requests") == "1000")
            #expect(plain.header("x-ratelimit-remaining-requests") == "999")
            #expect(plain.header("x-ratelimit-limit-tokens") == "1000000")
            #expect(plain.header("x-ratelimit-reset-tokens") != nil)
            #expect((plain.json["usage"] as? [String: Any])?["completion_tokens"] as? Int == 8)

            // Streams: the usage chunk the gateway asked for is hidden unless the client asked too.
            let streamed = try await gateway.chat(stream: true)
            #expect(streamed.status == 200 && streamed.header("content-type") == "text/event-stream")
            #expect(streamed.body.contains("data: [DONE]") && !streamed.body.contains("\"usage\""))
            #expect(streamed.body.components(separatedBy: "\"content\":\"tok \"").count - 1 == 8)
            let withUsage = try await gateway.chat(stream: true, extra: #", "stream_options": {"include_usage": true}"#)
            #expect(withUsage.body.contains("\"completion_tokens\":8"))

            let completion = try await gateway.post("/v1/completions", body: #"{"model": "mock-model", "prompt": "hi", "max_tokens": 3}"#)
            #expect(completion.status == 200 && completion.body.contains("\"text\""))
            let embedding = try await gateway.post("/v1/embeddings", body: #"{"model": "mock-model", "input": "hi"}"#)
            #expect(embedding.status == 200 && embedding.body.contains("\"embedding\""))

            let models = try await RawHTTPClient.request(port: gateway.publicPort, method: "GET", path: "/v1/models",
                                                         headers: [("authorization", "Bearer \(gateway.key)")])
            let ids = (models.json["data"] as? [[String: Any]])?.compactMap { $0["id"] as? String } ?? []
            #expect(ids == ["dead-model", "dying-model", "hung-model", "mock-model", "paced-model", "slow-model"],
                    "forbidden-model must not be listed")

            // W3C traceparent reaches the model server (the mock echoes it as system_fingerprint).
            let trace = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
            let traced = try await gateway.chat(headers: [("traceparent", trace)])
            #expect(traced.json["system_fingerprint"] as? String == trace)
        }
    }

    @Test func badInputsGetTheDocumentedErrors() async throws {
        try await GatewayHarness.run { gateway in
            let cases: [(String, String, Int, String)] = [
                ("malformed JSON", #"{"model": "mock-model", "messages": [}"#, 400, "invalid_request_error"),
                ("not an object", "[1]", 400, "invalid_request_error"),
                ("no model", #"{"messages": []}"#, 400, "invalid_request_error"),
                ("model not a string", #"{"model": 7, "messages": []}"#, 400, "invalid_request_error"),
                ("stream not a boolean", #"{"model": "mock-model", "messages": [], "stream": "yes"}"#, 400, "invalid_request_error"),
                ("negative max_tokens", #"{"model": "mock-model", "messages": [], "max_tokens": -1}"#, 400, "invalid_request_error"),
                ("messages not an array", #"{"model": "mock-model", "messages": "hi"}"#, 400, "invalid_request_error"),
                ("unknown model", #"{"model": "no-such-model", "messages": []}"#, 404, "model_not_found"),
                ("model not allowed", #"{"model": "forbidden-model", "messages": []}"#, 403, "model_not_allowed"),
                ("body over the limit", #"{"model": "mock-model", "messages": [], "pad": ""# + String(repeating: "x", count: 70_000) + #""}"#,
                 413, "request_too_large"),
            ]
            for (name, body, status, code) in cases {
                let response = try await gateway.post("/v1/chat/completions", body: body)
                #expect(response.status == status, "\(name): \(response.status) \(response.body.prefix(200))")
                #expect(response.errorCode == code, "\(name): \(response.body.prefix(200))")
            }
            for (name, key) in [("missing", ""), ("garbled", "slk_garbage"), ("unknown", APIKey.generate().plaintext),
                                ("wrong scheme", "Basic abc")] {
                let response = try await RawHTTPClient.request(
                    port: gateway.publicPort, path: "/v1/chat/completions",
                    headers: key.isEmpty ? [] : [("authorization", key.hasPrefix("Basic") ? key : "Bearer \(key)")],
                    body: #"{"model": "mock-model", "messages": []}"#)
                #expect(response.status == 401 && response.errorCode == "invalid_api_key", "\(name) key: \(response.status)")
                #expect(!response.body.contains(gateway.key))
            }
            for (method, path) in [("GET", "/v1/nothing"), ("GET", "/v1/chat/completions"), ("DELETE", "/v1/models")] {
                let response = try await RawHTTPClient.request(port: gateway.publicPort, method: method, path: path,
                                                               headers: [("authorization", "Bearer \(gateway.key)")])
                #expect(response.status == 404 && response.errorCode == "not_found", "\(method) \(path): \(response.status)")
                #expect(response.header("x-request-id") != nil)
            }
        }
    }

    @Test func rateLimitsAnswer429WithRetryAfter() async throws {
        try await GatewayHarness.run(keyLimits: Limits(requestsPerMinute: 2)) { gateway in
            #expect(try await gateway.chat().status == 200)
            #expect(try await gateway.chat().status == 200)
            let limited = try await gateway.chat()
            #expect(limited.status == 429 && limited.errorCode == "rate_limit_exceeded")
            #expect(Int(limited.header("retry-after") ?? "") ?? 0 >= 1)
            #expect(limited.header("x-ratelimit-remaining-requests") == "0")
            #expect(limited.body.contains("key_requests_per_minute"))
        }
    }

    @Test func revokedKeysAreRefused() async throws {
        try await GatewayHarness.run { gateway in
            #expect(try await gateway.chat().status == 200)
            _ = try await gateway.store.revokeKey(gateway.keyID, actor: "test")
            let redis = try RedisClient(configuration: RedisConfiguration.patient(url: TestEnvironment.redisURL))
            await KeyResolver.publishInvalidation([gateway.keyID], redis: redis, logger: Logger(label: "t"))
            var refused = false
            for _ in 0..<200 where !refused {
                let response = try await gateway.chat()
                refused = response.status == 401 && response.body.contains("revoked")
                if !refused { try await Task.sleep(for: .milliseconds(10)) }
            }
            #expect(refused)
            redis.shutdown()
        }
    }

    /// Every failure settles and frees the key's only concurrency slot: the next request passes.
    @Test func backendTroubleAndDisconnectsSettleAndLeakNoSlot() async throws {
        try await GatewayHarness.run(keyLimits: Limits(maxConcurrentRequests: 1)) { gateway in
            // 502 when the connect fails; 503 once the health checks have ejected the backend
            // (which comes first depends on timing).
            let refused = try await gateway.chat(model: "dead-model")
            #expect((refused.status == 502 && refused.errorCode == "upstream_error")
                    || (refused.status == 503 && refused.errorCode == "upstream_unavailable"), "\(refused.status) \(refused.body)")
            // A request settles (and frees its slot) just after its answer, not before.
            #expect(try await slotFreed(gateway), "the refused request kept its concurrency slot")

            let hung = try await gateway.chat(model: "hung-model")
            #expect(hung.status == 504 && hung.errorCode == "upstream_timeout")
            #expect(try await slotFreed(gateway), "the timed-out request kept its concurrency slot")

            let dying = try await gateway.chat(model: "dying-model", stream: true)
            #expect(dying.status == 200)
            #expect(dying.body.contains("upstream_error") && !dying.body.contains("[DONE]"))
            #expect(try await slotFreed(gateway), "the broken stream kept its concurrency slot")

            // The client hangs up after the first bytes of a slow stream.
            let cut = try await gateway.chat(model: "slow-model", stream: true, hangUpAfterBytes: 300)
            #expect(cut.status == 200)
            #expect(try await slotFreed(gateway), "the disconnected stream kept its concurrency slot")
        }
    }

    /// Whether a request passes again (within 6 s) on a key whose only slot the last one held.
    private func slotFreed(_ gateway: GatewayHarness) async throws -> Bool {
        for _ in 0..<300 {
            if try await gateway.chat().status == 200 { return true }
            try await Task.sleep(for: .milliseconds(20))
        }
        return false
    }

    @Test func usageReachesTheLedger() async throws {
        try await GatewayHarness.run { gateway in
            let response = try await gateway.chat(headers: [("x-request-id", "ledger-\(UUID().uuidString)")])
            let requestID = try #require(response.header("x-request-id"))
            var found = false
            for _ in 0..<400 where !found {
                found = try await PostgresFixture.withClient { client, _ in
                    let rows = try await client.query(
                        "SELECT completion_tokens FROM usage_ledger WHERE client_request_id = \(requestID)", logger: Logger(label: "t"))
                    for try await tokens in rows.decode(Int.self) { return tokens == 8 }
                    return false
                }
                if !found { try await Task.sleep(for: .milliseconds(50)) }
            }
            #expect(found, "the metering worker did not ledger the request")
        }
    }

    /// With Redis unreachable and the `open` policy, requests (and a stream) are admitted without
    /// Redis; their usage goes straight to the ledger, and a graceful shutdown writes what is
    /// still pending.
    @Test func usageOfDegradedAdmissionsReachesTheLedger() async throws {
        let deadRedis = "redis://127.0.0.1:\(try await RedisServerProcess.freePort())/0"
        let requestIDs = (0..<4).map { _ in "degraded-\(UUID().uuidString)" }
        try await GatewayHarness.run(redisURL: deadRedis, failurePolicy: .open) { gateway in
            for (index, requestID) in requestIDs.enumerated() {
                // The last one streams: its usage comes from the stream's usage chunk.
                let response = try await gateway.chat(stream: index == 3, headers: [("x-request-id", requestID)])
                #expect(response.status == 200)
            }
            await gateway.triggerGracefulShutdown()  // returns once every service has stopped
        }
        let ledgered = try await PostgresFixture.withClient { client, _ in
            var tokens: [Int] = []
            for try await count in try await client.query(
                "SELECT completion_tokens FROM usage_ledger WHERE client_request_id = ANY(\(requestIDs))", logger: Logger(label: "t"))
                .decode(Int.self) {
                tokens.append(count)
            }
            return tokens
        }
        #expect(ledgered == [8, 8, 8, 8], "usage of requests admitted without Redis was lost")
    }

    /// A stream that outlives its lease keeps its concurrency slot: the gateway renews it.
    @Test func longStreamsKeepTheirSlotPastTheLease() async throws {
        // A 2 s lease, renewed every 667 ms: a loaded test machine can delay a renewal by a few
        // hundred ms (a 1 s lease once ran out under the full suite) without the lease running out.
        try await GatewayHarness.run(keyLimits: Limits(maxConcurrentRequests: 1), leaseSeconds: 2) { gateway in
            let (started, signal) = AsyncStream.makeStream(of: Void.self)
            async let stream = gateway.chat(model: "slow-model", stream: true, hangUpAfterBytes: 30_000,
                                            onFirstBytes: { signal.yield() })
            var iterator = started.makeAsyncIterator()
            await iterator.next()
            // Two and a half lease lengths later the slot must still be taken (leases are time itself).
            try await Task.sleep(for: .seconds(5))
            let second = try await gateway.chat()
            #expect(second.status == 429 && second.body.contains("key_max_concurrent_requests"))
            _ = try await stream
        }
    }

    @Test func sigtermLetsAnInFlightStreamFinish() async throws {
        try await GatewayHarness.run { gateway in
            let (started, signal) = AsyncStream.makeStream(of: Void.self)
            async let streamed = gateway.chat(model: "paced-model", stream: true, onFirstBytes: { signal.yield() })
            var iterator = started.makeAsyncIterator()
            await iterator.next()
            await gateway.triggerGracefulShutdown()  // returns once every service has stopped
            let response = try await streamed
            #expect(response.status == 200)
            #expect(response.body.hasSuffix("data: [DONE]\n\n"), "the stream was cut by the shutdown")
            #expect(response.body.components(separatedBy: "\"content\":\"tok \"").count - 1 == 20)
            // The listener is closed now.
            await #expect(throws: (any Error).self) { _ = try await gateway.chat() }
        }
    }

    @Test func operationsEndpoints() async throws {
        try await GatewayHarness.run { gateway in
            _ = try await gateway.chat()
            let health = try await RawHTTPClient.request(port: gateway.adminPort, method: "GET", path: "/healthz")
            #expect(health.status == 200)
            let ready = try await RawHTTPClient.request(port: gateway.adminPort, method: "GET", path: "/readyz")
            #expect(ready.status == 200 && ready.body.contains("\"ready\":true"))
            let metrics = try await RawHTTPClient.request(port: gateway.adminPort, method: "GET", path: "/metrics")
            #expect(metrics.status == 200)
            #expect(metrics.body.contains("sluice_requests_total{endpoint=\"/v1/chat/completions\",model=\"mock-model\",status=\"200\"}"))
            #expect(metrics.body.contains("sluice_limiter_degraded 0"))
            #expect(metrics.body.contains("sluice_usage_direct_dropped_total 0"))
            #expect(!metrics.body.contains(gateway.key))
        }
    }
}
