import Foundation
import HTTPTypes
import Logging
import PostgresNIO
import HummingbirdTesting
import SluiceAdminAPI
import SluiceBilling
import SluiceTenancy
import SluiceTestSupport
import Testing

/// Usage reports (hourly, paged, CSV) and monthly statements whose totals are the ledger's.
@Suite("Admin reports and statements")
struct AdminReportsTests {
    private static func date(_ text: String) -> Date { ISO8601DateFormatter().date(from: text)! }

    /// 600 ledger rows in March 2025 over two models, three price versions and some rows with no
    /// price, plus rows just outside the month: the statement's lines and total equal the ledger's
    /// sums exactly, as JSON and as CSV.
    @Test func aStatementsTotalsEqualTheLedgersSums() async throws {
        try await AdminHarness.run { harness in
            let tenant = try await harness.newTenant()
            let (ledgerSums, priceIDs) = try await PostgresFixture.withClient { client, _ in
                let prices = PriceStore(client: client, logger: Logger(label: "t"))
                let suffix = UUID().uuidString.prefix(8).lowercased()
                var versions: [ModelPrice] = []
                for (model, from, input) in [("a-\(suffix)", "2024-01-01T00:00:00Z", 150_000), ("a-\(suffix)", "2025-03-10T00:00:00Z", 120_000),
                                             ("b-\(suffix)", "2024-01-01T00:00:00Z", 3_000_000)] {
                    versions.append(try await prices.add(ModelPrice(id: nil, model: model, effectiveFrom: Self.date(from),
                                                                    inputPerMillion: Int64(input), cachedInputPerMillion: Int64(input / 4),
                                                                    outputPerMillion: Int64(input * 4)), by: "test"))
                }
                var rng = SplitMix64(state: 20_250_301)
                var rows: [UsageEntry] = []
                let start = Self.date("2025-03-01T00:00:00Z")
                for index in 0..<600 {
                    let version = index % 7 == 0 ? nil : versions[Int.random(in: 0..<3, using: &rng)]
                    let prompt = Int.random(in: 1...5_000, using: &rng), completion = Int.random(in: 0...2_000, using: &rng)
                    let cached = Int.random(in: 0...prompt, using: &rng)
                    let cost = version?.cost(prompt: prompt, cachedPrompt: cached, completion: completion) ?? 0
                    // Index 0 and 1 land just outside March (the last µs of February, the first of April).
                    let at = index == 0 ? start.addingTimeInterval(-0.001)
                        : index == 1 ? Self.date("2025-04-01T00:00:00Z") : start.addingTimeInterval(Double.random(in: 0..<(31 * 86_400), using: &rng))
                    rows.append(UsageEntry(requestID: UUID().uuidString, tenantID: tenant.id, keyID: "k", model: version?.model ?? "a-\(suffix)",
                                           promptTokens: prompt, completionTokens: completion, costMicroUSD: Int(cost), at: at,
                                           priceID: version?.id, cachedPromptTokens: cached))
                }
                try await UsageLedger(client: client, logger: Logger(label: "t")).insert(rows)
                var sums: [Int64] = []
                for try await row in try await client.query("""
                    SELECT count(*)::bigint, sum(prompt_tokens)::bigint, sum(cached_prompt_tokens)::bigint,
                           sum(completion_tokens)::bigint, sum(cost_micro_usd)::bigint
                    FROM usage_ledger WHERE tenant_id = \(tenant.id) AND at >= '2025-03-01' AND at < '2025-04-01'
                    """, logger: Logger(label: "t")).decode((Int64, Int64, Int64, Int64, Int64).self) {
                    sums = [row.0, row.1, row.2, row.3, row.4]
                }
                return (sums, versions.compactMap(\.id))
            }
            #expect(ledgerSums[0] == 598)

            let token = try await harness.token(.tenantViewer, tenant: tenant.id)
            let response = try await harness.call(.get, "/admin/v1/tenants/\(tenant.id)/statements/2025-03", token: token)
            #expect(response.status == .ok)
            let total = try #require(response.json["total"] as? [String: Any])
            let totals = ["requests", "prompt_tokens", "cached_prompt_tokens", "completion_tokens", "cost_micro_usd"]
                .map { (total[$0] as? NSNumber)?.int64Value ?? -1 }
            #expect(totals == ledgerSums)
            let lines = response.json["lines"] as? [[String: Any]] ?? []
            #expect(lines.count == 4, "model a at two versions and unpriced, model b at one")
            let lineCost = lines.reduce(Int64(0)) { $0 + ((($1["cost_micro_usd"]) as? NSNumber)?.int64Value ?? 0) }
            #expect(lineCost == ledgerSums[4])
            #expect(Set(lines.compactMap { ($0["price_id"] as? NSNumber)?.int64Value }) == Set(priceIDs))
            #expect(response.json["final"] as? Bool == true && response.json["month"] as? String == "2025-03")

            let csv = try await harness.call(.get, "/admin/v1/tenants/\(tenant.id)/statements/2025-03", token: token,
                                             headers: [.accept: "text/csv"])
            #expect(csv.headers[.contentType] == "text/csv; charset=utf-8")
            let records = csv.text.split(separator: "\r\n").map { $0.split(separator: ",", omittingEmptySubsequences: false) }
            #expect(records.count == 1 + 4 + 1)
            let last = try #require(records.last)
            #expect(last.first == "total" && last[6...10].map { Int64($0) ?? -1 } == ledgerSums)

            for bad in ["2025-3", "2025-13", "25-03", "2025-03-01", "abcd-ef"] {
                let refused = try await harness.call(.get, "/admin/v1/tenants/\(tenant.id)/statements/\(bad)", token: token)
                #expect(refused.status == .badRequest, "\(bad)")
            }
            let foreign = try await harness.newTenant()
            #expect(try await harness.call(.get, "/admin/v1/tenants/\(foreign.id)/statements/2025-03", token: token).status == .notFound)
        }
    }

    /// Hourly groups in order, paged with `limit` and `after`, as JSON and as CSV.
    @Test func usageByHourPagesThroughLongRanges() async throws {
        try await AdminHarness.run { harness in
            let tenant = try await harness.newTenant()
            try await PostgresFixture.withClient { client, _ in
                let base = Self.date("2025-05-01T00:00:00Z")
                let rows = (0..<50).map { index in
                    UsageEntry(requestID: UUID().uuidString, tenantID: tenant.id, keyID: "k", model: "m", promptTokens: 1,
                               completionTokens: index, costMicroUSD: 10, at: base.addingTimeInterval(Double(index % 5) * 3_600 + 60))
                }
                try await UsageLedger(client: client, logger: Logger(label: "t")).insert(rows)
            }
            let token = try await harness.token(.platformAdmin)
            let uri = "/admin/v1/tenants/\(tenant.id)/usage?group_by=hour&from=2025-05-01&to=2025-05-02&limit=2"
            let first = try await harness.call(.get, uri, token: token)
            let groups = (first.json["data"] as? [[String: Any]] ?? []).compactMap { $0["group"] as? String }
            #expect(groups == ["2025-05-01T00", "2025-05-01T01"])
            #expect(first.json["has_more"] as? Bool == true && first.json["next_after"] as? String == "2025-05-01T01")
            let rest = try await harness.call(.get, uri.replacingOccurrences(of: "limit=2", with: "limit=10") + "&after=2025-05-01T01",
                                              token: token)
            let tail = rest.json["data"] as? [[String: Any]] ?? []
            #expect(tail.compactMap { $0["group"] as? String } == ["2025-05-01T02", "2025-05-01T03", "2025-05-01T04"])
            #expect(tail.allSatisfy { ($0["cost_micro_usd"] as? Int) == 100 && ($0["requests"] as? Int) == 10 })
            #expect(rest.json["has_more"] as? Bool == false)

            let csv = try await harness.call(.get, uri, token: token, headers: [.accept: "text/csv"])
            #expect(csv.text.hasPrefix("group,requests,prompt_tokens,completion_tokens,cost_micro_usd,cost_usd\r\n2025-05-01T00,10,10,"))
            #expect(csv.headers[.init("sluice-next-after")!] == "2025-05-01T01")
            let badLimit = try await harness.call(.get, uri.replacingOccurrences(of: "limit=2", with: "limit=10001"), token: token)
            #expect(badLimit.status == .badRequest && badLimit.errorParam == "limit")
        }
    }

    /// Webhook endpoints: no private targets, known event types only, the secret shown once.
    @Test func webhookInputIsChecked() async throws {
        try await AdminHarness.run { harness in
            let tenant = try await harness.newTenant()
            let token = try await harness.token(.tenantAdmin, tenant: tenant.id)
            let uri = "/admin/v1/tenants/\(tenant.id)/webhooks"
            for (body, param) in [
                (#"{"url": "http://127.0.0.1:8081/admin/v1/tenants"}"#, "url"),
                (#"{"url": "http://169.254.169.254/latest/meta-data"}"#, "url"),
                (#"{"url": "gopher://example.com/"}"#, "url"),
                (#"{"url": "https://example.com/\#(String(repeating: "a", count: 2_100))"}"#, "url"),
                (#"{"url": "https://example.com/", "events": ["key.created", "key.exploded"]}"#, "events"),
                (#"{"url": "https://example.com/", "secret": "whsec_mine"}"#, "secret"),
            ] {
                let response = try await harness.call(.post, uri, token: token, json: body)
                #expect(response.status == .badRequest && response.errorParam == param, "\(body): \(response.text)")
            }
            let created = try await harness.call(.post, uri, token: token, json: #"{"url": "https://hooks.example.com/in"}"#)
            #expect(created.status == .created && (created.json["secret"] as? String)?.hasPrefix("whsec_") == true)
            let listed = try await harness.call(.get, uri, token: token)
            #expect(listed.status == .ok && !listed.text.contains("whsec_"))
            let id = created.json["id"] as? String ?? ""
            let patched = try await harness.call(.patch, "/admin/v1/webhooks/\(id)", token: token, json: #"{"enabled": "no"}"#)
            #expect(patched.status == .badRequest && patched.errorParam == "enabled")
            #expect(try await harness.call(.get, "/admin/v1/webhooks/not-a-uuid/deliveries", token: token).status == .notFound)
            // At most 20 endpoints per tenant (one exists).
            for _ in 0..<19 { _ = try await harness.call(.post, uri, token: token, json: #"{"url": "https://hooks.example.com/in"}"#) }
            let over = try await harness.call(.post, uri, token: token, json: #"{"url": "https://hooks.example.com/in"}"#)
            #expect(over.status == .badRequest, "\(over.text)")
        }
    }

    /// The audit log says who changed what, newest first, paged, and never shows a secret.
    @Test func theAuditLogIsReadableAndHoldsNoSecret() async throws {
        try await AdminHarness.run { harness in
            let admin = try await harness.token(.platformAdmin)
            let created = try await harness.call(.post, "/admin/v1/tenants", token: admin, json: #"{"name": "audited"}"#)
            let tenant = created.json["id"] as? String ?? ""
            _ = try await harness.call(.patch, "/admin/v1/tenants/\(tenant)", token: admin, json: #"{"limits": {"requests_per_minute": 5}}"#)
            let key = try await harness.call(.post, "/admin/v1/tenants/\(tenant)/keys", token: admin, json: #"{"name": "k"}"#)
            let keyID = key.json["id"] as? String ?? ""
            let secret = key.json["key"] as? String ?? "missing"
            _ = try await harness.call(.post, "/admin/v1/keys/\(keyID)/revoke", token: admin)

            let viewer = try await harness.token(.tenantViewer, tenant: UUID(uuidString: tenant))
            let page = try await harness.call(.get, "/admin/v1/tenants/\(tenant)/audit?limit=2", token: viewer)
            #expect(page.status == .ok && !page.text.contains(secret))
            let first = (page.json["data"] as? [[String: Any]] ?? []).compactMap { $0["action"] as? String }
            #expect(first == ["key.revoke", "key.create"])
            #expect(page.json["has_more"] as? Bool == true)
            let next = page.json["next_after"] as? String ?? ""
            let rest = try await harness.call(.get, "/admin/v1/tenants/\(tenant)/audit?after=\(next)", token: viewer)
            let older = (rest.json["data"] as? [[String: Any]] ?? []).compactMap { $0["action"] as? String }
            #expect(older == ["tenant.update", "tenant.create"])
            #expect((rest.json["data"] as? [[String: Any]])?.allSatisfy { $0["actor"] as? String == harness.subject } == true)
            let bad = try await harness.call(.get, "/admin/v1/tenants/\(tenant)/audit?after=-3", token: viewer)
            #expect(bad.status == .badRequest && bad.errorParam == "after")
            let other = try await harness.newTenant()
            #expect(try await harness.call(.get, "/admin/v1/tenants/\(other.id)/audit", token: viewer).status == .notFound)
        }
    }
}
