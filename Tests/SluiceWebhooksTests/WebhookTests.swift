import Foundation
import Logging
import PostgresNIO
import SluiceLimiter
import SluiceTenancy
import SluiceTestSupport
import Testing

@testable import SluiceWebhooks

@Suite("Webhooks", .serialized)  // the periodic checks take one advisory lock
struct WebhookTests {
    /// The Standard Webhooks example (secret, id, timestamp, body) signs to its published value.
    @Test func signaturesFollowStandardWebhooks() {
        let signature = WebhookSigning.signature(
            secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", id: "msg_p5jXN8AQM9LWM0D4loKWxJek", timestamp: 1_614_265_330,
            body: #"{"test": 2432232314}"#)
        #expect(signature == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=")
        #expect(WebhookSigning.signature(secret: "not-a-secret", id: "m", timestamp: 1, body: "") == nil)
        let secret = WebhookSigning.newSecret()
        #expect(secret.hasPrefix("whsec_") && WebhookSigning.key(of: secret) != nil)
    }

    @Test func secretsAreSealedAtRest() throws {
        let sealer = WebhookSecretSealer(pepper: "pepper-one")
        let sealed = try sealer.seal("whsec_abc")
        #expect(!String(decoding: sealed, as: UTF8.self).contains("whsec_abc"))
        #expect(try sealer.open(sealed) == "whsec_abc")
        #expect(throws: (any Error).self) { try WebhookSecretSealer(pepper: "pepper-two").open(sealed) }
    }

    /// A tenant must not point the gateway at its own network.
    @Test func privateAndMalformedTargetsAreRefused() throws {
        for url in ["http://127.0.0.1:8081/admin", "http://localhost/x", "http://10.1.2.3/", "http://169.254.169.254/latest/meta-data",
                    "http://192.168.0.10/", "http://172.20.0.1/", "http://[::1]:80/", "http://[fd00::1]/", "http://2130706433/",
                    "http://0x7f000001/", "http://100.64.0.1/", "http://0.0.0.0/"] {
            #expect(throws: WebhookTarget.Refusal.privateAddress, "\(url)") { _ = try WebhookTarget(url, allowPrivateNetworks: false) }
        }
        for url in ["ftp://example.com/", "http://user:pw@example.com/", "https:///path", "not a url", "https://e.com/#frag"] {
            #expect(throws: WebhookTarget.Refusal.malformed, "\(url)") { _ = try WebhookTarget(url, allowPrivateNetworks: false) }
        }
        let target = try WebhookTarget("https://hooks.example.com:8443/in/sluice?token=a%20b", allowPrivateNetworks: false)
        #expect(target.origin == "https://hooks.example.com:8443" && target.pathAndQuery == "/in/sluice?token=a%20b")
        #expect(try WebhookTarget("https://example.com", allowPrivateNetworks: false).pathAndQuery == "/")
        #expect(try WebhookTarget("http://127.0.0.1:9/", allowPrivateNetworks: true).origin == "http://127.0.0.1:9")
    }

    /// Budget thresholds, expiring keys and daily usage are found by looking, each written once,
    /// with a delivery for each endpoint whose filter takes it.
    @Test func periodicEventsAreWrittenOnceEach() async throws {
        try await PostgresFixture.withClient { client, store in
            let logger = Logger(label: "webhook-test")
            let tenant = try await store.createTenant(name: "hooks", limits: Limits(monthlyBudgetUSD: 0.001), modelLimits: [:],
                                                      actor: "test")
            let webhooks = WebhookStore(client: client, logger: logger)
            let sealed = try WebhookSecretSealer(pepper: "p").seal(WebhookSigning.newSecret())
            let all = try await webhooks.create(tenantID: tenant.id, url: "https://example.com/all", events: [], sealedSecret: sealed, actor: "t")
            _ = try await webhooks.create(tenantID: tenant.id, url: "https://example.com/keys", events: ["key.created"],
                                          sealedSecret: sealed, actor: "t")
            _ = try await store.createKey(tenantID: tenant.id, name: "soon", limits: .init(), models: nil,
                                          expiresAt: Date().addingTimeInterval(3 * 86_400), hasher: KeyHasher(pepper: "p"), actor: "t")
            let ledger = UsageLedger(client: client, logger: logger)
            // 850 of 1000 µUSD this month: 50 % and 80 %, not 100 %.
            try await ledger.insert([UsageEntry(requestID: UUID().uuidString, tenantID: tenant.id, keyID: "k", model: "m",
                                                promptTokens: 1, completionTokens: 1, costMicroUSD: 850, at: Date())])
            let now = Date()
            let scheduler = WebhookScheduler(client: client, ledger: ledger, logger: logger)
            try await scheduler.pass(now: now)
            try await scheduler.pass(now: now)

            var events: [String] = []
            for try await (type, payload) in try await client.query("""
                SELECT type, payload::text FROM webhook_events WHERE tenant_id = \(tenant.id) ORDER BY type, payload::text
                """, logger: logger).decode((String, String).self) {
                let data = (try JSONSerialization.jsonObject(with: Data(payload.utf8)) as? [String: Any])?["data"] as? [String: String] ?? [:]
                events.append(type == "budget.threshold" ? "\(type) \(data["threshold_percent"] ?? "")" : type)
            }
            let today = SpendPeriod.today
            let pastTenMinutes = now.timeIntervalSince1970 - Double(SpendPeriod.start(ofDay: today)) >= 600
            // Yesterday had no usage for this new tenant, so no usage.daily.
            #expect(events == ["budget.threshold 50", "budget.threshold 80", "key.created", "key.expiring"], "\(events) \(pastTenMinutes)")
            var deliveries: [String: Int] = [:]
            for try await (url, count) in try await client.query("""
                SELECT w.url, count(*)::int8 FROM webhook_deliveries d JOIN webhook_endpoints w ON w.id = d.endpoint_id
                WHERE w.tenant_id = \(tenant.id) GROUP BY 1
                """, logger: logger).decode((String, Int).self) {
                deliveries[url] = count
            }
            #expect(deliveries == [all.url: 4, "https://example.com/keys": 1])
        }
    }

    /// Yesterday's usage goes out once the day has been over for ten minutes, once.
    @Test func dailyUsageIsSentOnceForYesterday() async throws {
        try await PostgresFixture.withClient { client, store in
            let logger = Logger(label: "webhook-test")
            let tenant = try await store.createTenant(name: "daily", limits: .init(), modelLimits: [:], actor: "test")
            let todayStart = Date(timeIntervalSince1970: TimeInterval(SpendPeriod.start(ofDay: SpendPeriod.today)))
            let ledger = UsageLedger(client: client, logger: logger)
            try await ledger.insert((0..<3).map { index in
                UsageEntry(requestID: UUID().uuidString, tenantID: tenant.id, keyID: "k", model: "m", promptTokens: 10,
                           completionTokens: index, costMicroUSD: 100, at: todayStart.addingTimeInterval(-3_600 * Double(index + 1)))
            })
            // The day may have been done by an earlier run on this database: forget that.
            let yesterday = todayStart.addingTimeInterval(-86_400).formatted(.iso8601.year().month().day())
            _ = try await client.query("DELETE FROM webhook_marks WHERE name = \("usage.daily:\(yesterday)")", logger: logger)
            let scheduler = WebhookScheduler(client: client, ledger: ledger, logger: logger)
            try await scheduler.pass(now: todayStart.addingTimeInterval(300))   // too early: rows may still arrive
            try await scheduler.pass(now: todayStart.addingTimeInterval(660))
            try await scheduler.pass(now: todayStart.addingTimeInterval(720))
            var payloads: [[String: String]] = []
            for try await payload in try await client.query("""
                SELECT payload::text FROM webhook_events WHERE tenant_id = \(tenant.id) AND type = 'usage.daily'
                """, logger: logger).decode(String.self) {
                payloads.append((try JSONSerialization.jsonObject(with: Data(payload.utf8)) as? [String: Any])?["data"] as? [String: String] ?? [:])
            }
            #expect(payloads.count == 1)
            #expect(payloads.first?["requests"] == "3" && payloads.first?["cost_micro_usd"] == "300" && payloads.first?["completion_tokens"] == "3")
        }
    }
}
