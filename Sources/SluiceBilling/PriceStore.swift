import Foundation
import Logging
import PostgresNIO

/// The price catalogue in PostgreSQL (`model_prices`). Versions are only added, never changed:
/// ledger rows name the version they were billed at.
public struct PriceStore: Sendable {
    /// How far ahead a new version must take effect: longer than a replica's refresh, so no
    /// replica bills a request at a price it has not read yet.
    public static let minimumLead: Duration = .seconds(60)

    public enum Failure: Error, Equatable {
        /// A version of this model already takes effect at that time.
        case duplicate
    }

    let client: PostgresClient
    let logger: Logger

    public init(client: PostgresClient, logger: Logger) {
        self.client = client
        self.logger = logger
    }

    /// Every version, or one model's, oldest first.
    public func list(model: String? = nil) async throws -> [ModelPrice] {
        let rows = try await client.query("""
            SELECT id, model, effective_from, input_micro_usd_per_million, cached_input_micro_usd_per_million,
                   output_micro_usd_per_million
            FROM model_prices WHERE \(model) :: text IS NULL OR model = \(model)
            ORDER BY model, effective_from
            """, logger: logger)
        var prices: [ModelPrice] = []
        for try await (id, model, from, input, cached, output) in rows.decode((Int64, String, Date, Int64, Int64, Int64).self) {
            prices.append(ModelPrice(id: id, model: model, effectiveFrom: from, inputPerMillion: input,
                                     cachedInputPerMillion: cached, outputPerMillion: output))
        }
        return prices
    }

    /// Adds a version; returns it with its id.
    public func add(_ price: ModelPrice, by actor: String) async throws -> ModelPrice {
        let rows = try await client.query("""
            INSERT INTO model_prices (model, effective_from, input_micro_usd_per_million, cached_input_micro_usd_per_million,
                                      output_micro_usd_per_million, created_by)
            VALUES (\(price.model), \(price.effectiveFrom), \(price.inputPerMillion), \(price.cachedInputPerMillion),
                    \(price.outputPerMillion), \(actor))
            ON CONFLICT (model, effective_from) DO NOTHING
            RETURNING id
            """, logger: logger)
        for try await id in rows.decode(Int64.self) {
            var added = price
            added.id = id
            return added
        }
        throw Failure.duplicate
    }

    /// The configuration's prices, for models the catalogue has no version of, in effect from
    /// the beginning of time. Replicas may run it concurrently: one version per model wins.
    public func seed(_ prices: [ModelPrice]) async throws {
        for price in prices {
            _ = try await client.query("""
                INSERT INTO model_prices (model, effective_from, input_micro_usd_per_million,
                                          cached_input_micro_usd_per_million, output_micro_usd_per_million, created_by)
                SELECT \(price.model), 'epoch', \(price.inputPerMillion), \(price.cachedInputPerMillion),
                       \(price.outputPerMillion), 'configuration'
                WHERE NOT EXISTS (SELECT 1 FROM model_prices WHERE model = \(price.model))
                ON CONFLICT (model, effective_from) DO NOTHING
                """, logger: logger)
        }
    }
}
