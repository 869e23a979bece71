import NIOCore
import SluiceRedis
import SluiceTestSupport
import Testing

@testable import SluiceLimiter

@Suite("Circuit breaker")
struct CircuitBreakerTests {
    @Test func tripsAfterTheThresholdProbesOnceThenCloses() {
        var breaker = CircuitBreakerStateMachine(failureThreshold: 3, openInterval: .seconds(1))
        let t0 = ContinuousClock.now
        let trips = (0..<3).map { _ in breaker.recordFailure(now: t0) }
        #expect(trips == [false, false, true])
        var allowed: [Bool] = []
        allowed.append(breaker.allowsCall(now: t0 + .milliseconds(999)))
        allowed.append(breaker.allowsCall(now: t0 + .seconds(1)))  // the probe
        allowed.append(breaker.allowsCall(now: t0 + .seconds(1)))  // only one
        _ = breaker.recordFailure(now: t0 + .seconds(1))           // the probe failed
        allowed.append(breaker.allowsCall(now: t0 + .milliseconds(1500)))
        allowed.append(breaker.allowsCall(now: t0 + .seconds(2)))  // the next probe
        #expect(allowed == [false, true, false, false, true])
        let closed = breaker.recordSuccess()
        #expect(closed)
        let afterwards = breaker.allowsCall(now: t0 + .seconds(2))
        #expect(afterwards)
    }

    @Test func aSuccessResetsTheCount() {
        var breaker = CircuitBreakerStateMachine(failureThreshold: 2, openInterval: .seconds(1))
        let now = ContinuousClock.now
        _ = breaker.recordFailure(now: now)
        _ = breaker.recordSuccess()
        let tripped = breaker.recordFailure(now: now)
        #expect(!tripped && !breaker.isOpen)
    }
}

@Suite("Failure policies when Redis is unreachable")
struct FailurePolicyTests {
    private func deadRedisLimiter(_ policy: RedisFailurePolicy, replicas: Int = 1) async throws -> Limiter {
        let port = try await RedisServerProcess.freePort()  // nothing listens there
        var configuration = LimiterConfiguration(failurePolicy: policy)
        configuration.expectedReplicas = replicas
        return Limiter(client: try RedisClient(configuration: RedisConfiguration(port: port)), configuration: configuration)
    }

    private func request(_ limits: Limits = Limits(requestsPerMinute: 60)) -> AdmitRequest {
        AdmitRequest(requestID: "r\(Int.random(in: 0..<1_000_000))", tenantID: "t", keyID: "k", model: "m",
                     tokensToReserve: 10, keyLimits: limits)
    }

    @Test func closedRefusesFast() async throws {
        let limiter = try await deadRedisLimiter(.closed)
        for _ in 0..<5 { #expect(await limiter.admit(request()) == .unavailable) }
        #expect(limiter.isDegraded)
    }

    @Test func openAdmitsWithoutLimitsAndSettleSkips() async throws {
        let limiter = try await deadRedisLimiter(.open)
        for _ in 0..<5 {
            let admission = try #require(await limiter.admit(request()).admission)
            #expect(admission.degraded)
            #expect(try await limiter.settle(admission, usage: Usage(promptTokens: 1, completionTokens: 1)) == .skipped)
        }
    }

    @Test func localEnforcesThisReplicasShare() async throws {
        let limiter = try await deadRedisLimiter(.local, replicas: 4)
        var admitted = 0
        for _ in 0..<100 where await limiter.admit(request(Limits(requestsPerMinute: 40))).admission != nil {
            admitted += 1
        }
        #expect(admitted == 10)  // 40 per minute over 4 replicas, burst 10
        // Local concurrency: max 8 over 4 replicas = 2 here, returned by settle.
        let concurrency = Limits(maxConcurrentRequests: 8)
        let first = try #require(await limiter.admit(request(concurrency)).admission)
        #expect(await limiter.admit(request(concurrency)).admission != nil)
        #expect(await limiter.admit(request(concurrency)).denial?.limit == "key_max_concurrent_requests")
        _ = try await limiter.settle(first, usage: Usage(promptTokens: 0, completionTokens: 0))
        #expect(await limiter.admit(request(concurrency)).admission != nil)
    }

    @Test func pausedRedisCostsOneTimeoutPerIntervalThenRecovers() async throws {
        let server = try await RedisServerProcess()
        defer { server.stop() }
        var redis = try RedisConfiguration(url: server.url)
        redis.commandTimeout = .milliseconds(150)
        var configuration = LimiterConfiguration(failurePolicy: .closed)
        configuration.breakerFailureThreshold = 2
        configuration.breakerOpenInterval = .milliseconds(300)
        let limiter = Limiter(client: try RedisClient(configuration: redis), configuration: configuration)
        // The first call connects and loads the scripts; on a loaded CI machine that can take
        // longer than the short timeout this test needs, so wait for a healthy limiter first.
        #expect(try await admitsWithin(limiter, attempts: 250))

        server.pause()
        #expect(await limiter.admit(request()) == .unavailable)
        #expect(await limiter.admit(request()) == .unavailable)
        #expect(limiter.isDegraded)
        // Open breaker: answered without waiting for Redis (a hang guard, not a timing target).
        let clock = ContinuousClock()
        let started = clock.now
        for _ in 0..<100 { #expect(await limiter.admit(request()) == .unavailable) }
        #expect(clock.now - started < .seconds(2))

        server.resume()
        #expect(try await admitsWithin(limiter, attempts: 200))
        #expect(!limiter.isDegraded)
    }

    /// Polls until the limiter admits (an open breaker lets one probe through per interval).
    private func admitsWithin(_ limiter: Limiter, attempts: Int) async throws -> Bool {
        for _ in 0..<attempts {
            if await limiter.admit(request()).admission != nil { return true }
            try await Task.sleep(for: .milliseconds(20))
        }
        return false
    }
}
