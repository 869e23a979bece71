import Foundation
import Logging
import NIOCore
import PostgresNIO
import SluiceLimiter
import SluiceTenancy
import SluiceTestSupport
import SluiceUpstream
import Synchronization
import Testing

@testable import SluiceBilling

/// The exporters against local servers that check Stripe's and OpenMeter's request shapes, with
/// a 500, an event taken but answered with a 500 (so it is delivered twice), a hung request and a
/// restart in the middle of the retries, and rows that reach the ledger late: what the billing
/// system counts equals the ledger's sums exactly.
@Suite("Billing exports")
struct BillingExportTests {
    enum System: String, CaseIterable, Sendable { case stripe, openMeter }

    @Test(arguments: System.allCases)
    func theTotalsReceivedEqualTheLedgers(system: System) async throws {
        try await PostgresFixture.withClient { client, store in
            let logger = Logger(label: "export-test")
            var withCustomer = try await store.createTenant(name: "export a", limits: .init(), modelLimits: [:], actor: "test")
            let customer = "cus_\(UUID().uuidString.prefix(12).replacingOccurrences(of: "-", with: ""))"
            withCustomer = try await store.updateTenant(withCustomer.id, name: nil, limits: nil, modelLimits: nil,
                                                        stripeCustomerID: .some(customer), actor: "test")
            let without = try await store.createTenant(name: "export b", limits: .init(), modelLimits: [:], actor: "test")
            let tenants = [withCustomer.id, without.id]
            var databaseNow = Date()
            for try await now in try await client.query("SELECT now()", logger: logger).decode(Date.self) { databaseNow = now }
            let start = databaseNow
            let ledger = UsageLedger(client: client, logger: logger)
            @Sendable func insert(_ count: Int, minutesAgo: ClosedRange<Int>) async throws {
                var rows: [UsageEntry] = []
                for index in 0..<count {
                    rows.append(UsageEntry(requestID: UUID().uuidString, tenantID: tenants[index % 2], keyID: "k",
                                           model: index % 3 == 0 ? "m1" : "m2", promptTokens: 10 + index, completionTokens: index,
                                           costMicroUSD: 100 + index * 7,
                                           at: Date().addingTimeInterval(-Double(Int.random(in: minutesAgo) * 60))))
                }
                try await ledger.insert(rows)
            }
            try await insert(60, minutesAgo: 2...6)

            let mock = MockLedger()
            mock.state.withLock { $0.faults = [.fail, .takeThenFail, .hang] }
            let secret = "sk_test_\(UUID().uuidString.prefix(8))"
            let name = "\(system.rawValue)-test-\(UUID().uuidString.prefix(8))"
            let router = system == .stripe ? MockBillingSystems.stripe(mock, secretKey: secret, eventName: "tokens")
                : MockBillingSystems.openMeter(mock, token: secret)
            try await MockBillingSystems.serve(router) { port in
                var timeouts = UpstreamTimeouts()
                timeouts.firstByte = .milliseconds(300)
                let http = try UpstreamClient(timeouts: timeouts, logger: logger)
                defer { http.shutdown() }
                let url = "http://127.0.0.1:\(port)"
                let sink: any BillingSink = system == .stripe
                    ? try StripeMeterSink(client: http, baseURL: url, secretKey: secret, eventName: "tokens", value: .costMicroUSD, name: name)
                    : try OpenMeterSink(client: http, baseURL: url, token: secret, eventType: "sluice.usage", source: "sluice-test", name: name)
                func exporter() -> BillingExporter {
                    BillingExporter(sink: sink, client: client, settleMargin: .zero, startAt: start, logger: logger)
                }
                // A failed attempt, then a "restart": a new exporter takes the same pending window and
                // retries until every event is delivered (Stripe's requests go 8 at a time, so all
                // three faults may hit the first attempt; OpenMeter's batch meets one per attempt).
                let first = exporter()
                await #expect(throws: (any Error).self) { try await first.pass() }
                let restarted = exporter()
                var caughtUp = false
                for _ in 0..<20 where !caughtUp { caughtUp = (try? await restarted.pass()) ?? false }
                #expect(caughtUp)
                // Rows that reach the ledger late, for minutes already exported.
                try await insert(30, minutesAgo: 2...6)
                caughtUp = false
                for _ in 0..<20 where !caughtUp { caughtUp = (try? await restarted.pass()) ?? false }
            }

            let received = mock.state.withLock { $0 }
            #expect(received.malformed.isEmpty, "\(received.malformed)")
            #expect(received.duplicates >= 1, "the event taken before the 500 was sent again")
            var ledgerCost: [UUID: Int64] = [:]
            for try await (tenant, cost) in try await client.query("""
                SELECT tenant_id, sum(cost_micro_usd)::bigint FROM usage_ledger WHERE tenant_id = ANY(\(tenants)) GROUP BY 1
                """, logger: logger).decode((UUID, Int64).self) {
                ledgerCost[tenant] = cost
            }
            switch system {
            case .stripe:
                let total = received.events.values.filter { $0["customer"] == customer }.reduce(Int64(0)) { $0 + (Int64($1["value"] ?? "") ?? 0) }
                #expect(total == ledgerCost[withCustomer.id], "Stripe counts exactly the ledger's cost")
                #expect(!received.events.values.contains { $0["customer"] == nil }, "a tenant without a customer is not sent")
            case .openMeter:
                for tenant in tenants {
                    let subject = tenant.uuidString.lowercased()
                    let total = received.events.values.filter { $0["subject"] == subject }.reduce(Int64(0)) { $0 + (Int64($1["cost"] ?? "") ?? 0) }
                    #expect(total == ledgerCost[tenant], "OpenMeter counts exactly the ledger's cost for \(subject)")
                }
            }
        }
    }

    @Test func formEncodingEscapesWhatStripeNeedsEscaped() {
        #expect(StripeMeterSink.form([("payload[value]", "12"), ("event_name", "a b&c=d")])
            == "payload%5Bvalue%5D=12&event_name=a%20b%26c%3Dd")
    }
}
