import SluiceLimiter
import SluiceTestSupport
import Testing

/// `/readyz` as a load balancer reads it, and what SIGTERM does to it and to the listener.
@Suite("Readiness and drain")
struct ReadinessAndDrainTests {
    private func readiness(_ gateway: GatewayHarness) async throws -> RawHTTPClient.Response {
        try await RawHTTPClient.request(port: gateway.adminPort, method: "GET", path: "/readyz")
    }

    @Test(arguments: [RedisFailurePolicy.open, .local, .closed])
    func withRedisDownReadinessFollowsTheFailurePolicy(policy: RedisFailurePolicy) async throws {
        let nothingListening = try await RedisServerProcess.freePort()
        try await GatewayHarness.run(redisURL: "redis://127.0.0.1:\(nothingListening)/0", failurePolicy: policy) { gateway in
            let ready = try await readiness(gateway)
            #expect(ready.json["degraded"] as? Bool == true, "\(ready.body)")
            #expect(ready.json["failure_policy"] as? String == policy.rawValue)
            if policy == .closed {
                #expect(ready.status == 503, "closed: every request would be refused, so no traffic")
            } else {
                #expect(ready.status == 200, "\(policy): serving degraded is still serving")
                #expect(try await gateway.chat().status == 200)
            }
        }
    }

    @Test func aHealthyReplicaIsReadyAndNotDegraded() async throws {
        try await GatewayHarness.run { gateway in
            let ready = try await readiness(gateway)
            #expect(ready.status == 200)
            #expect(ready.json["degraded"] as? Bool == false && ready.json["draining"] as? Bool == false, "\(ready.body)")
        }
    }

    @Test func sigtermTurnsReadinessOffAtOnceServesThroughTheDelayThenCloses() async throws {
        // A delay long enough that the checks inside it fit on a loaded machine.
        let delay = Duration.seconds(4)
        try await GatewayHarness.run(drainDelay: delay) { gateway in
            #expect(try await readiness(gateway).status == 200)
            let signalled = ContinuousClock.now
            await gateway.beginGracefulShutdown()
            // Readiness goes off at once (well inside the delay)...
            var notReady = false
            while !notReady, ContinuousClock.now - signalled < .seconds(1) {
                let ready = try await readiness(gateway)
                notReady = ready.status == 503 && ready.json["draining"] as? Bool == true
                if !notReady { try await Task.sleep(for: .milliseconds(10)) }
            }
            #expect(notReady, "readiness must turn 503 as soon as the drain begins")
            // ...while new connections are still served, until the delay is over.
            #expect(try await gateway.chat().status == 200)
            #expect(ContinuousClock.now - signalled < delay, "the checks above must run inside the delay")
            // Then the listener closes.
            var refused = false
            while !refused, ContinuousClock.now - signalled < .seconds(10) {
                do {
                    _ = try await gateway.chat()
                    try await Task.sleep(for: .milliseconds(50))
                } catch {
                    refused = true
                }
            }
            #expect(refused, "the listener must close after the drain delay")
            #expect(ContinuousClock.now - signalled >= delay, "closed before the drain delay was over")
        }
    }

    @Test func inFlightRequestsAreCountedForTheAutoscaler() async throws {
        try await GatewayHarness.run { gateway in
            func inFlight() async throws -> Double? {
                let text = try await RawHTTPClient.request(port: gateway.adminPort, method: "GET", path: "/metrics").body
                return text.split(separator: "\n").first { $0.hasPrefix("sluice_requests_in_flight ") }
                    .flatMap { Double($0.split(separator: " ")[1]) }
            }
            #expect(try await inFlight() == 0)
            let (started, signal) = AsyncStream.makeStream(of: Void.self)
            async let streamed = gateway.chat(model: "paced-model", stream: true, onFirstBytes: { signal.yield() })
            var iterator = started.makeAsyncIterator()
            await iterator.next()
            #expect(try await inFlight() == 1, "a stream being answered is in flight")
            #expect(try await streamed.status == 200)
            var settled = false
            for _ in 0..<100 where !settled {
                settled = try await inFlight() == 0
                if !settled { await Task.yield() }
            }
            #expect(settled, "the count must come back to 0 once the answer is complete")
        }
    }
}
