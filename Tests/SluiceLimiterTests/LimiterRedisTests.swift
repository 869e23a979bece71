import Foundation
import NIOCore
import SluiceRedis
import SluiceTestSupport
import Testing

@testable import SluiceLimiter

/// The scripts against the stack's real redis-server.
@Suite("Limiter scripts against a real redis-server")
struct LimiterRedisTests {
    @Test(arguments: RedisTarget.allCases) func aBurstOfTenTimesTheLimitFromFourReplicasAdmitsExactlyTheLimit(target: RedisTarget) async throws {
        let limit = 50  // one request per 1.2 s refills: the burst finishes long before
        let replicas = try (0..<4).map { _ in try LimiterFixture(target: target, poolSize: 1) }
        let tenant = replicas[0].tenant
        let admitted = try await withThrowingTaskGroup(of: Bool.self) { group in
            for index in 0..<(10 * limit) {
                let replica = replicas[index % replicas.count]
                group.addTask {
                    var request = replica.request(keyID: "burst", keyLimits: Limits(requestsPerMinute: limit))
                    request.tenantID = tenant
                    return await replica.limiter.admit(request).admission != nil
                }
            }
            return try await group.reduce(0) { $0 + ($1 ? 1 : 0) }
        }
        #expect(admitted == limit)
    }

    @Test func pacedTrafficAtTwiceTheRateAdmitsTheRate() async throws {
        // The long form (3 minutes) runs with SLUICE_LONG_TESTS=1; CI runs 20 seconds.
        let long = ProcessInfo.processInfo.environment["SLUICE_LONG_TESTS"] == "1"
        let duration: Duration = long ? .seconds(180) : .seconds(20)
        let perMinute = long ? 600 : 1200
        let fixture = try LimiterFixture()
        let limits = Limits(requestsPerMinute: perMinute)
        // Use up the burst first, so what follows measures the sustained rate alone.
        var drained = 0
        while await fixture.limiter.admit(fixture.request(keyID: "paced", keyLimits: limits)).admission != nil {
            drained += 1
        }
        #expect(drained >= perMinute)
        let gap = Duration.seconds(60) / (2 * perMinute)
        let clock = ContinuousClock()
        let start = clock.now
        var admitted = 0
        var sent = 0
        while clock.now - start < duration {
            try await clock.sleep(until: start + gap * sent)
            let decision = await fixture.limiter.admit(fixture.request(keyID: "paced", keyLimits: limits))
            if decision.admission != nil { admitted += 1 }
            sent += 1
        }
        let expected = Double(duration.components.seconds) * Double(perMinute) / 60
        print("paced limiter: admitted \(admitted) of \(sent) over \(duration) at \(perMinute)/min, expected \(expected)")
        #expect(abs(Double(admitted) - expected) <= expected * 0.01, "admitted \(admitted) of \(sent), expected \(expected)")
    }

    @Test(arguments: RedisTarget.allCases) func tokenReservationsAndRefunds(target: RedisTarget) async throws {
        let fixture = try LimiterFixture(target: target)
        let limits = Limits(tokensPerMinute: 3000)

        // 150 requests reserving 20 prompt + 30 max tokens: 3000 / 50 = 60 fit.
        func burst(_ count: Int) async -> [Admission] {
            await withTaskGroup(of: Admission?.self) { group in
                for _ in 0..<count {
                    group.addTask { await fixture.limiter.admit(fixture.request(reserve: 50, keyLimits: limits)).admission }
                }
                return await group.reduce(into: []) { if let admission = $1 { $0.append(admission) } }
            }
        }
        let first = await burst(150)
        #expect(first.count <= 60)
        #expect(first.count >= 59)  // 50 tokens/s refill: at most one more may fit during the burst

        // Really using 25 each refunds 25 each: 60 × 25 = 1500 tokens = 30 more requests, plus
        // one per second the settles take (50 tokens/s refill).
        let settling = ContinuousClock.now
        for admission in first {
            #expect(try await fixture.limiter.settle(admission, usage: Usage(promptTokens: 20, completionTokens: 5)) ==
                .settled(refunded: 25))
        }
        let refill = Int((ContinuousClock.now - settling).components.seconds)
        let second = await burst(60)
        #expect((29...(32 + refill)).contains(second.count), "refunds admitted \(second.count)")
    }

    @Test(arguments: RedisTarget.allCases) func refundAndDebtArithmeticShowsInTheHeaders(target: RedisTarget) async throws {
        let fixture = try LimiterFixture(target: target)
        let limits = Limits(tokensPerMinute: 6000)  // 100 tokens per second refill
        // The refill since `start`, rounded up: what a slow machine may add to the remaining count.
        func refill(since start: ContinuousClock.Instant) -> Int {
            let elapsed = ContinuousClock.now - start
            return Int(elapsed.components.seconds) * 100 + Int(elapsed.components.attoseconds / 10_000_000_000_000_000) + 1
        }
        let started = ContinuousClock.now
        let first = try #require(await fixture.limiter.admit(fixture.request(reserve: 1000, keyLimits: limits)).admission)
        #expect(first.headers.tokens?.limit == 6000)
        #expect(first.headers.tokens?.remaining == 5000)

        // Used 400 of 1000: 600 come back.
        #expect(try await fixture.limiter.settle(first, usage: Usage(promptTokens: 100, completionTokens: 300)) ==
            .settled(refunded: 600))
        let second = try #require(await fixture.limiter.admit(fixture.request(reserve: 1000, keyLimits: limits)).admission)
        // 6000 − 400 − 1000, plus the refill while the test runs.
        let secondBound = 4600 + refill(since: started)
        #expect((4600...secondBound).contains(second.headers.tokens?.remaining ?? -1))

        // Used 3000 of 1000: 2000 of debt.
        #expect(try await fixture.limiter.settle(second, usage: Usage(promptTokens: 1000, completionTokens: 2000)) ==
            .settled(refunded: -2000))
        let third = try #require(await fixture.limiter.admit(fixture.request(reserve: 100, keyLimits: limits)).admission)
        #expect((2500...(2500 + refill(since: started))).contains(third.headers.tokens?.remaining ?? -1))
    }

    /// Request ids are the server's, but a repeated id must still never be a free pass: each
    /// admit counts, and settling twice books once.
    @Test(arguments: RedisTarget.allCases) func aRepeatedRequestIDIsAdmittedAsANewRequestAndSettledOnce(target: RedisTarget) async throws {
        let fixture = try LimiterFixture(target: target)
        let limits = Limits(requestsPerMinute: 10, tokensPerMinute: 1000)
        let request = fixture.request("same-id", reserve: 100, keyLimits: limits)
        let first = try #require(await fixture.limiter.admit(request).admission)
        let again = try #require(await fixture.limiter.admit(request).admission)
        #expect(first.headers.requests?.remaining == 9)
        #expect(again.headers.requests?.remaining == 8, "a repeated id is counted like any request")

        let usage = Usage(promptTokens: 10, completionTokens: 20, costMicroUSD: 700)
        try await fixture.store.seedEmpty(tenantID: fixture.tenant)  // spend is counted once seeded
        #expect(try await fixture.limiter.settle(first, usage: usage) != .alreadySettled)
        #expect(try await fixture.limiter.settle(first, usage: usage) == .alreadySettled)
        let spend = try await fixture.client.send("HGET", "sl:{t:\(fixture.tenant)}:spent", "m|t")
        #expect(spend.int == 700)
        let events = try await fixture.client.send("XLEN", LimiterKeys(tenantID: fixture.tenant).usageStream)
        #expect(events.int == 1)
    }

    /// A request whose settle never comes (its replica died after answering) is billed at its
    /// reservation once its deadline passes, exactly once: a late settle books nothing more.
    @Test(arguments: RedisTarget.allCases) func anUnsettledRequestIsBilledAtItsReservationOnce(target: RedisTarget) async throws {
        var configuration = LimiterConfiguration()
        configuration.timings.reservationTTL = .seconds(1)
        let fixture = try LimiterFixture(target: target, configuration: configuration)
        var request = fixture.request(reserve: 10, keyLimits: Limits(tokensPerMinute: 100))
        request.promptEstimate = 4
        request.reservedCostMicroUSD = 7
        try await fixture.store.seedEmpty(tenantID: fixture.tenant)  // spend is counted once seeded
        let beforeAdmit = ContinuousClock.now
        let admission = try #require(await fixture.limiter.admit(request).admission)
        let admitted = ContinuousClock.now  // the script ran before this: its deadline is earlier than admitted + 1 s
        let stream = LimiterKeys(tenantID: fixture.tenant).usageStream
        let early = try await fixture.limiter.sweep(tenantID: fixture.tenant)
        if ContinuousClock.now - beforeAdmit < .seconds(1) {  // (a loaded machine may take longer)
            #expect(early == 0, "billed before its deadline")
        }
        // The deadline is time itself: wait it out.
        try await Task.sleep(until: admitted + .milliseconds(1_010))
        #expect(try await fixture.limiter.sweep(tenantID: fixture.tenant) + early == 1)
        #expect(try await fixture.limiter.sweep(tenantID: fixture.tenant) == 0)
        #expect(try await fixture.limiter.settle(admission, usage: Usage(promptTokens: 5, completionTokens: 5, costMicroUSD: 3)) ==
            .alreadySettled)
        let events = try #require(try await fixture.client.send("XRANGE", stream, "-", "+").array)
        #expect(events.count == 1)
        let fields = events.first?.array?.last?.array?.compactMap(\.string) ?? []
        let event = Dictionary(uniqueKeysWithValues: stride(from: 0, to: fields.count - 1, by: 2).map { (fields[$0], fields[$0 + 1]) })
        #expect(event["prompt_tokens"] == "4" && event["completion_tokens"] == "6" && event["cost_micro_usd"] == "7")
        #expect(event["usage_source"] == "estimated" && event["status"] == "lease_expired" && event["key_id"] == "k1")
        // Its reservation was counted at admission; billing it at its reservation changes nothing.
        let spend = try await fixture.client.send("HMGET", "sl:{t:\(fixture.tenant)}:spent", "m|t", "m|k:k1", "m|m:m1")
        #expect(spend.array?.map { $0.int } == [7, 7, 7])
    }

    /// An admission whose answer never went out (admit timed out, though the script may have
    /// run) is withdrawn: the reservation comes back, nothing is streamed or spent, and the sweep
    /// finds nothing to bill.
    @Test(arguments: RedisTarget.allCases) func aVoidWithdrawsAnAdmissionWithoutBilling(target: RedisTarget) async throws {
        var configuration = LimiterConfiguration()
        configuration.timings.reservationTTL = .milliseconds(300)
        let fixture = try LimiterFixture(target: target, configuration: configuration)
        let limits = Limits(tokensPerMinute: 1_000)
        let admission = try #require(await fixture.limiter.admit(fixture.request(reserve: 100, keyLimits: limits)).admission)
        let store = RedisLimiterStore(client: fixture.client, timings: configuration.timings)
        let void = SettleRequest(admission: admission, usage: Usage(promptTokens: 0, completionTokens: 0), void: true)
        #expect(try await store.settle(tenantID: fixture.tenant, [void]) == [.settled(refunded: 100)])
        #expect(try await store.settle(tenantID: fixture.tenant, [void]) == [.alreadySettled])
        let keys = LimiterKeys(tenantID: fixture.tenant)
        #expect(try await fixture.client.send("EXISTS", keys.usageStream).int == 0)
        let probe = try #require(await fixture.limiter.admit(fixture.request(reserve: 1, keyLimits: limits)).admission)
        #expect((998...1_000).contains(probe.headers.tokens?.remaining ?? -1), "the reservation came back")
        let probed = ContinuousClock.now  // both deadlines are earlier than probed + 300 ms
        try await Task.sleep(until: probed + .milliseconds(310))
        let swept = try await fixture.limiter.sweep(tenantID: fixture.tenant)
        #expect(swept == 1, "only the probe, never settled here, is billed")
    }

    /// Settles of one tenant that arrive together share script calls, and each is booked.
    @Test(arguments: RedisTarget.allCases) func concurrentSettlesAreBatched(target: RedisTarget) async throws {
        let fixture = try LimiterFixture(target: target)
        let limits = Limits(tokensPerMinute: 1_000_000)
        var admissions: [Admission] = []
        for _ in 0..<200 {
            admissions.append(try #require(await fixture.limiter.admit(fixture.request(reserve: 100, keyLimits: limits)).admission))
        }
        func settleCalls() async throws -> Int {
            // On a cluster, from the master of the tenant's slot.
            let info = try await fixture.client.send(RedisCommand("INFO", ["commandstats"], routingKey: "sl:{t:\(fixture.tenant)}"))
                .string ?? ""
            let line = info.split(separator: "\r\n").first { $0.hasPrefix("cmdstat_evalsha:") } ?? ""
            return Int(line.split(separator: "=")[1].split(separator: ",")[0]) ?? 0
        }
        let before = try await settleCalls()
        let outcomes = await withTaskGroup(of: SettleOutcome?.self) { group in
            for admission in admissions {
                group.addTask { try? await fixture.limiter.settle(admission, usage: Usage(promptTokens: 10, completionTokens: 40)) }
            }
            return await group.reduce(into: []) { $0.append($1) }
        }
        let calls = try await settleCalls() - before
        #expect(outcomes.allSatisfy { $0 == .settled(refunded: 50) })
        #expect(calls < 200, "\(calls) calls for 200 settles: nothing was batched")
        // One stream entry per settle call, one encoded event per request in it.
        let entries = try #require(try await fixture.client.send("XRANGE", LimiterKeys(tenantID: fixture.tenant).usageStream, "-", "+").array)
        let events = entries.flatMap { entry in
            let fields = entry.array?.last?.array?.compactMap(\.string) ?? []
            return stride(from: 0, to: fields.count - 1, by: 2).filter { fields[$0] == UsageEventCoding.field }
                .compactMap { UsageEventCoding.decode(fields[$0 + 1]) }
        }
        #expect(entries.count <= calls && entries.count < 200)
        #expect(events.count == 200)
        #expect(Set(events.compactMap { $0["request_id"] }) == Set(admissions.map(\.requestID)))
        #expect(events.allSatisfy { $0["prompt_tokens"] == "10" && $0["completion_tokens"] == "40" })
        // Every reservation was refunded in full but for the 50 tokens each used.
        let probe = try #require(await fixture.limiter.admit(fixture.request(reserve: 1, keyLimits: limits)).admission)
        #expect((989_990...1_000_000).contains(probe.headers.tokens?.remaining ?? -1), "\(probe.headers)")
    }

    @Test(arguments: RedisTarget.allCases) func concurrencySlotsReturnWhenTheLeaseExpires(target: RedisTarget) async throws {
        var configuration = LimiterConfiguration()
        configuration.timings.lease = .seconds(2)
        let fixture = try LimiterFixture(target: target, configuration: configuration)
        let limits = Limits(maxConcurrentRequests: 2)
        #expect(await fixture.limiter.admit(fixture.request(keyLimits: limits)).admission != nil)
        let held = try #require(await fixture.limiter.admit(fixture.request(keyLimits: limits)).admission)
        let denial = try #require(await fixture.limiter.admit(fixture.request(keyLimits: limits)).denial)
        #expect(denial.limit == "key_max_concurrent_requests")
        #expect(denial.retryAfter <= .seconds(2))

        // Settling one frees one slot at once.
        _ = try await fixture.limiter.settle(held, usage: Usage(promptTokens: 0, completionTokens: 0))
        #expect(await fixture.limiter.admit(fixture.request(keyLimits: limits)).admission != nil)

        // Nobody settles the others (a replica died): the leases run out by themselves.
        var freed = false
        for _ in 0..<100 where !freed {
            try await Task.sleep(for: .milliseconds(50))
            freed = await fixture.limiter.admit(fixture.request(keyLimits: limits)).admission != nil
        }
        #expect(freed)
    }

    @Test(arguments: RedisTarget.allCases) func aSpentBudgetDeniesWithInsufficientQuotaUntilNextMonth(target: RedisTarget) async throws {
        let fixture = try LimiterFixture(target: target)
        let limits = Limits(monthlyBudgetUSD: 0.001)  // 1000 micro-USD
        let admission = try #require(await fixture.limiter.admit(fixture.request(tenantLimits: limits)).admission)
        _ = try await fixture.limiter.settle(admission, usage: Usage(promptTokens: 1, completionTokens: 1, costMicroUSD: 1500))
        let denial = try #require(await fixture.limiter.admit(fixture.request(tenantLimits: limits)).denial)
        #expect(denial.reason == .budgetExhausted)
        #expect(denial.limit == "tenant_monthly_budget_usd")
        #expect(denial.budget?.spentMicroUSD == 1500 && denial.budget?.limitMicroUSD == 1000)
        #expect(denial.retryAfter > .zero && denial.retryAfter <= .seconds(31 * 86_400))
        // A raised budget takes effect (after the deny cache's short hold).
        let raised = Limits(monthlyBudgetUSD: 1)
        let next = await fixture.limiter.admit(fixture.request(tenantLimits: raised))
        #expect(next.denial?.fromCache == true || next.admission != nil)
    }

    @Test func aReservationLargerThanTheBurstNeverFitsAndCostsNoIO() async throws {
        // A client pointed at a closed port: the answer must come without Redis.
        let port = try await RedisServerProcess.freePort()
        let client = try RedisClient(configuration: RedisConfiguration.patient(port: port))
        let limiter = Limiter(client: client)
        let decision = await limiter.admit(AdmitRequest(requestID: "r", tenantID: "t", keyID: "k", model: "m",
                                                        tokensToReserve: 5000, keyLimits: Limits(tokensPerMinute: 3000)))
        #expect(decision == .neverFits(limit: "key_tokens_per_minute", tokens: 5000, burst: 3000))
        #expect(!limiter.isDegraded)
    }

    @Test(arguments: RedisTarget.allCases) func requestDenialsAreCachedUntilTheirRetryAfter(target: RedisTarget) async throws {
        let fixture = try LimiterFixture(target: target)
        let limits = Limits(requestsPerMinute: 1)
        #expect(await fixture.limiter.admit(fixture.request(keyLimits: limits)).admission != nil)
        let fromRedis = try #require(await fixture.limiter.admit(fixture.request(keyLimits: limits)).denial)
        #expect(!fromRedis.fromCache && fromRedis.limit == "key_requests_per_minute")
        #expect(fromRedis.retryAfter > .seconds(59) && fromRedis.retryAfter <= .seconds(60))
        let cached = try #require(await fixture.limiter.admit(fixture.request(keyLimits: limits)).denial)
        #expect(cached.fromCache && cached.retryAfter <= fromRedis.retryAfter)
        // Another key of the same tenant is not affected.
        #expect(await fixture.limiter.admit(fixture.request(keyID: "k2", keyLimits: limits)).admission != nil)
    }

    @Test(arguments: RedisTarget.allCases) func everyKeyTheScriptsWriteHasATTL(target: RedisTarget) async throws {
        let fixture = try LimiterFixture(target: target)
        let limits = Limits(requestsPerMinute: 100, tokensPerMinute: 10_000, maxConcurrentRequests: 5, monthlyBudgetUSD: 10)
        for index in 0..<20 {
            let decision = await fixture.limiter.admit(fixture.request(reserve: 100, tenantLimits: limits, keyLimits: limits, modelLimits: limits))
            if let admission = decision.admission, index % 2 == 0 {
                _ = try await fixture.limiter.settle(admission, usage: Usage(promptTokens: 50, completionTokens: 10, costMicroUSD: 5))
            }
        }
        let keys = try await fixture.keys()
        #expect(keys.count >= 8)
        for key in keys {
            // -1 is a key without a TTL; -2 a key that expired since the SCAN listed it (a refunded
            // token key lives well under a second, and SCAN over a large database takes longer).
            let ttl = try await fixture.client.send("PTTL", key).int ?? -1
            #expect(ttl > 0 || ttl == -2, "\(key) has no TTL")
        }
    }
}

@Suite("Lease renewal")
struct LeaseRenewalTests {
    @Test(arguments: RedisTarget.allCases) func aRenewedLeaseOutlivesItsLengthAndFreesOnceRenewalStops(target: RedisTarget) async throws {
        var configuration = LimiterConfiguration()
        let lease = Duration.milliseconds(1_500)
        configuration.timings.lease = lease
        let fixture = try LimiterFixture(target: target, configuration: configuration)
        let limits = Limits(maxConcurrentRequests: 1)
        let held = try #require(await fixture.limiter.admit(fixture.request(keyLimits: limits)).admission)
        #expect(held.holdsConcurrencySlots)
        // Renew for three lease lengths: the slot stays taken (leases run on Redis's clock;
        // there is no event to wait for but time itself).
        let clock = ContinuousClock()
        let start = clock.now
        var previous = start
        var checked = 0
        while clock.now - start < lease * 3 {
            // A loaded machine may stall past the lease between two renewals; the lease is then
            // rightly gone and nothing after it proves anything.
            guard clock.now - previous < lease - .milliseconds(300) else { break }
            await fixture.limiter.renew(held)
            previous = clock.now
            let denial = await fixture.limiter.admit(fixture.request(keyLimits: limits)).denial?.limit
            if clock.now - previous < lease - .milliseconds(300) {
                #expect(denial == "key_max_concurrent_requests", "renewed \(clock.now - start) after the admission")
                checked += 1
            }
            try await Task.sleep(for: fixture.limiter.renewalInterval)
        }
        #expect(checked >= 1)
        // Renewal stopped (the replica died): the lease runs out by itself.
        var freed = false
        for _ in 0..<100 where !freed {
            try await Task.sleep(for: .milliseconds(50))
            freed = await fixture.limiter.admit(fixture.request(keyLimits: limits)).admission != nil
        }
        #expect(freed)
    }
}
