import Foundation
import Logging
import PostgresNIO
import SluiceLimiter

/// Monthly statements, summed from the ledger by model and price version.
public struct StatementStore: Sendable {
    let client: PostgresClient
    let logger: Logger

    public init(client: PostgresClient, logger: Logger) {
        self.client = client
        self.logger = logger
    }

    /// The statement of a UTC month (YYYYMM).
    public func statement(tenantID: UUID, month: Int, now: Date = Date()) async throws -> Statement {
        let start = Date(timeIntervalSince1970: TimeInterval(SpendPeriod.start(ofMonth: month)))
        let end = Date(timeIntervalSince1970: TimeInterval(SpendPeriod.end(ofMonth: month)))
        let rows = try await client.query("""
            SELECT l.model, l.price_id, p.model, p.effective_from, p.input_micro_usd_per_million,
                   p.cached_input_micro_usd_per_million, p.output_micro_usd_per_million,
                   count(*)::bigint, sum(l.prompt_tokens)::bigint, sum(l.cached_prompt_tokens)::bigint,
                   sum(l.completion_tokens)::bigint, sum(l.cost_micro_usd)::bigint
            FROM usage_ledger l LEFT JOIN model_prices p ON p.id = l.price_id
            WHERE l.tenant_id = \(tenantID) AND l.at >= \(start) AND l.at < \(end)
            GROUP BY 1, 2, 3, 4, 5, 6, 7
            ORDER BY l.model COLLATE "C", 4 NULLS FIRST, 2
            """, logger: logger)
        var lines: [Statement.Line] = []
        for try await row in rows.decode((String, Int64?, String?, Date?, Int64?, Int64?, Int64?, Int64, Int64, Int64, Int64, Int64).self) {
            let (model, priceID, priceModel, from, input, cached, output, requests, prompt, cachedPrompt, completion, cost) = row
            var price: ModelPrice?
            if let priceID, let priceModel, let from, let input, let cached, let output {
                price = ModelPrice(id: priceID, model: priceModel, effectiveFrom: from, inputPerMillion: input,
                                   cachedInputPerMillion: cached, outputPerMillion: output)
            }
            lines.append(Statement.Line(model: model, price: price, requests: requests, promptTokens: prompt,
                                        cachedPromptTokens: cachedPrompt, completionTokens: completion, costMicroUSD: cost))
        }
        return Statement(tenantID: tenantID, month: month, lines: lines, isFinal: now >= end)
    }
}
