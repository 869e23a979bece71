import Foundation
import Logging
import PostgresNIO
import SluiceBilling
import SluiceLimiter
import SluiceTenancy
import SluiceTestSupport
import Testing

/// Prices from the database's catalogue, budgets with their reservations, through the gateway.
@Suite("Billing through the gateway")
struct BillingEndToEndTests {
    /// A model priced at 1 µUSD per input token and 2 per output token, a key with a monthly
    /// budget of 200 µUSD: each request reserves its prompt estimate plus max_tokens (50) at that
    /// price; the ledger rows name the version and cost exactly their tokens' price; once the
    /// budget cannot take another reservation, a 429 `insufficient_quota` says which budget, what
    /// is spent and the cap.
    @Test func requestsAreBilledAtTheVersionInEffectAndStopAtTheBudget() async throws {
        let model = "priced-\(UUID().uuidString.prefix(8).lowercased())"
        let price = try await PostgresFixture.withClient { client, _ in
            try await PriceStore(client: client, logger: Logger(label: "t")).add(
                ModelPrice(id: nil, model: model, effectiveFrom: Date().addingTimeInterval(-3_600), inputPerMillion: 1_000_000,
                           cachedInputPerMillion: 1_000_000, outputPerMillion: 2_000_000), by: "test")
        }
        let priceID = try #require(price.id)
        try await GatewayHarness.run(keyLimits: Limits(monthlyBudgetUSD: 0.0002), models: [model], extraModels: [model]) { gateway in
            try await gateway.waitForPrices()
            var statuses: [Int] = []
            var refusal: [String: Any] = [:]
            for _ in 0..<6 {
                let response = try await gateway.chat(model: model, extra: #", "max_tokens": 50"#)
                statuses.append(response.status)
                if response.status == 429 { refusal = response.json; break }
            }
            // Each reserves about 110 µUSD (prompt estimate + 100 for 50 output tokens) and costs
            // about 20: the first leaves room for the second, and so on until the cap is near.
            #expect(statuses.first == 200 && statuses.last == 429, "\(statuses)")
            let error = refusal["error"] as? [String: Any] ?? [:]
            #expect(error["code"] as? String == "insufficient_quota")
            let message = error["message"] as? String ?? ""
            #expect(message.contains("key_monthly_budget_usd") && message.contains("of 0.000200 USD"), "\(message)")

            let admitted = statuses.filter { $0 == 200 }.count
            var rows: [(Int64?, Int, Int, Int)] = []
            // A request the backend failed (a timeout on a loaded machine) books a row of nothing:
            // only rows that cost something are answers.
            for _ in 0..<400 where rows.filter({ $0.3 > 0 }).count < admitted {
                rows = try await PostgresFixture.withClient { client, _ in
                    var found: [(Int64?, Int, Int, Int)] = []
                    for try await row in try await client.query(
                        "SELECT price_id, prompt_tokens, completion_tokens, cost_micro_usd FROM usage_ledger WHERE tenant_id = \(gateway.tenant.id) AND model = \(model)",
                        logger: Logger(label: "t")).decode((Int64?, Int, Int, Int).self) {
                        found.append(row)
                    }
                    return found
                }
                if rows.filter({ $0.3 > 0 }).count < admitted { try await Task.sleep(for: .milliseconds(50)) }
            }
            #expect(rows.filter { $0.3 > 0 }.count == admitted, "\(statuses) \(rows)")
            #expect(rows.filter { $0.3 == 0 }.allSatisfy { $0.1 == 0 && $0.2 == 0 }, "\(rows)")
            for (rowPrice, prompt, completion, cost) in rows where cost > 0 {
                #expect(rowPrice == priceID)
                #expect(cost == prompt + 2 * completion, "1 µUSD per input token, 2 per output token")
            }
            let spent = rows.reduce(0) { $0 + $1.3 }
            #expect(spent <= 200, "settled spend stays within the budget")
        }
    }
}

extension GatewayHarness {
    /// Waits until the replica has read the database's price catalogue (its /readyz says so).
    func waitForPrices() async throws {
        for _ in 0..<200 {
            let response = try await RawHTTPClient.request(port: adminPort, method: "GET", path: "/readyz")
            if ((response.json["checks"] as? [String: Any])?["prices"] as? String)?.hasPrefix("ok") == true { return }
            try await Task.sleep(for: .milliseconds(25))
        }
        Issue.record("the price catalogue was never read")
    }
}
