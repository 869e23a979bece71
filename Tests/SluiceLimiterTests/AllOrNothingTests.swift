import Foundation
import NIOCore
import SluiceRedis
import SluiceTestSupport
import Testing

@testable import SluiceLimiter

/// A denial writes nothing: over randomised multi-limit cases, every key of the tenant is
/// byte-for-byte the same (`DUMP`) after a denied admit as before it.
@Suite("Admit is all-or-nothing")
struct AllOrNothingTests {
    private static func randomLimits(_ rng: inout SplitMix64) -> Limits {
        var limits = Limits()
        if Bool.random(using: &rng) { limits.requestsPerMinute = Int.random(in: 1...4, using: &rng) }
        if Bool.random(using: &rng) { limits.tokensPerMinute = Int.random(in: 50...400, using: &rng) }
        if Bool.random(using: &rng) { limits.maxConcurrentRequests = Int.random(in: 1...3, using: &rng) }
        return limits
    }

    @Test(arguments: RedisTarget.allCases) func deniedAdmitsChangeNoKey(target: RedisTarget) async throws {
        let seed = UInt64(ProcessInfo.processInfo.environment["SLUICE_TEST_SEED"] ?? "") ?? 20261126
        var rng = SplitMix64(state: seed)
        // Not a timing test: a loaded machine (the failover suites run alongside) must not fail it.
        var configuration = try RedisConfiguration.patient(url: target.url)
        configuration.commandTimeout = .seconds(5)
        let client = try RedisClient(configuration: configuration)
        let store = RedisLimiterStore(client: client, timings: LimiterTimings())
        var denials = 0

        for _ in 0..<1_000 {
            let tenant = "aon" + UUID().uuidString.prefix(12).lowercased()
            let keys = LimiterKeys(tenantID: tenant)
            var tenantLimits = Self.randomLimits(&rng)
            if Int.random(in: 0..<4, using: &rng) == 0 { tenantLimits.monthlyBudgetUSD = 0.000001 }
            if Int.random(in: 0..<4, using: &rng) == 0 { tenantLimits.dailyBudgetUSD = 0.000002 }
            let keyLimits = Self.randomLimits(&rng)
            let modelLimits = Self.randomLimits(&rng)
            func request() -> AdmitRequest {
                AdmitRequest(requestID: UUID().uuidString, tenantID: tenant, keyID: "k", model: "m",
                             tokensToReserve: Int.random(in: 1...60, using: &rng), reservedCostMicroUSD: 1,
                             tenantLimits: tenantLimits,
                             keyLimits: keyLimits, modelLimits: modelLimits)
            }
            // Some history: admits, some settled (with usage above or below the reservation).
            for _ in 0..<Int.random(in: 0...5, using: &rng) {
                let prior = request()
                if case .admitted(let admission) = try await store.admit(prior, plan: LimitPlan(for: prior, keys: keys)),
                   Bool.random(using: &rng) {
                    let used = Int.random(in: 0...80, using: &rng)
                    _ = try await store.settle(tenantID: admission.tenantID, [SettleRequest(admission: admission, usage: Usage(promptTokens: used, completionTokens: 0, costMicroUSD: 2))])
                }
            }
            let probe = request()
            let plan = LimitPlan(for: probe, keys: keys)
            if plan.neverFits(reserving: probe.tokensToReserve) != nil { continue }
            // Seeding spend (once a period) is not the denial's doing: done before the snapshot.
            try await store.seedEmpty(tenantID: tenant)
            let touched = try await stable(Set(plan.rates.map(\.key) + plan.concurrency.map(\.key) + [
                keys.spent, keys.usageStream, keys.pending,
            ]), client)
            let before = try await dump(touched, client)
            guard case .denied = try await store.admit(probe, plan: plan) else { continue }
            denials += 1
            let after = try await dump(touched, client)
            #expect(before == after, "a denied admit changed a key (tenant \(tenant), seed \(seed))")
        }
        #expect(denials > 100, "too few denials (\(denials)) to say anything")
        client.shutdown()
    }

    /// The keys worth comparing: a key with under 5 s to live is left out, since it may expire
    /// between the two snapshots on its own (a refunded token key lives only until its bucket is
    /// full again), and an expiry is not a write.
    private func stable(_ keys: Set<String>, _ client: RedisClient) async throws -> Set<String> {
        var kept: Set<String> = []
        for key in keys {
            let ttl = try await client.send("PTTL", key).int ?? -2
            if ttl < 0 || ttl >= 5_000 { kept.insert(key) }
        }
        return kept
    }

    /// The keys' serialized values (nil for an absent key).
    private func dump(_ keys: Set<String>, _ client: RedisClient) async throws -> [String: RESPValue] {
        var values: [String: RESPValue] = [:]
        for key in keys { values[key] = try await client.send("DUMP", key) }
        return values
    }

    /// A batch decides as the same admits one call each would: over randomised limits, tenant A
    /// gets 12 requests one per call, tenant B the same 12 in one call. Every limit here refills
    /// one unit per 150 ms or slower (at most 400 per minute) and each arrival time moves in whole
    /// units from the first admit, so the milliseconds between A's calls change no decision.
    @Test(arguments: RedisTarget.allCases) func aBatchDecidesAsOneCallPerAdmitWould(target: RedisTarget) async throws {
        let seed = UInt64(ProcessInfo.processInfo.environment["SLUICE_TEST_SEED"] ?? "") ?? 20261127
        var rng = SplitMix64(state: seed)
        // Not a timing test: a loaded machine (the failover suites run alongside) must not fail it.
        var configuration = try RedisConfiguration.patient(url: target.url)
        configuration.commandTimeout = .seconds(5)
        let client = try RedisClient(configuration: configuration)
        let store = RedisLimiterStore(client: client, timings: LimiterTimings())
        var admitted = 0, denied = 0
        for _ in 0..<60 {
            let tenantLimits = Self.randomLimits(&rng), keyLimits = Self.randomLimits(&rng)
            let reservations = (0..<12).map { _ in Int.random(in: 1...60, using: &rng) }
            let keyIDs = (0..<12).map { _ in Bool.random(using: &rng) ? "k1" : "k2" }
            func requests(_ tenant: String) -> [AdmitItem] {
                zip(reservations, keyIDs).map { tokens, keyID in
                    let request = AdmitRequest(requestID: UUID().uuidString, tenantID: tenant, keyID: keyID, model: "m",
                                               tokensToReserve: tokens, tenantLimits: tenantLimits, keyLimits: keyLimits,
                                               modelLimits: Limits())
                    return AdmitItem(request: request, plan: LimitPlan(for: request, keys: LimiterKeys(tenantID: tenant)))
                }
            }
            let one = "one" + UUID().uuidString.prefix(12).lowercased(), batch = "bat" + UUID().uuidString.prefix(12).lowercased()
            var alone: [String] = []
            for item in requests(one) { alone.append(Self.summary(try await store.admit(item.request, plan: item.plan))) }
            let together = try await store.decide(tenantID: batch, requests(batch)).map(Self.summary)
            #expect(alone == together, "seed \(seed)")
            admitted += together.filter { $0 == "admitted" }.count
            denied += together.filter { $0 != "admitted" }.count
        }
        #expect(admitted > 100 && denied > 100, "admitted \(admitted), denied \(denied): too one-sided to say anything")
        client.shutdown()
    }

    private static func summary(_ decision: AdmitDecision) -> String {
        switch decision {
        case .admitted: "admitted"
        case .denied(let denial): "denied \(denial.limit)"
        case .neverFits(let limit, _, _): "never fits \(limit)"
        case .unavailable: "unavailable"
        }
    }
}
