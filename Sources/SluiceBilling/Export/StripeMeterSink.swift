import Foundation
import SluiceUpstream

/// Stripe Billing meter events (`POST /v1/billing/meter_events`, form-encoded, secret key auth):
/// one event per tenant, model and minute, for tenants with a Stripe customer. The event's
/// `identifier` (Stripe de-duplicates on it) doubles as the `Idempotency-Key`, so a retry of a
/// delivery whose answer was lost has the effect of one.
public struct StripeMeterSink: BillingSink {
    public enum Value: String, Sendable {
        /// The cost in micro-USD (price the meter at 0.000001 USD per unit): the ledger's money.
        case costMicroUSD = "cost_micro_usd"
        /// Prompt plus completion tokens.
        case tokens
    }

    public let name: String
    public let batchSize = 8  // concurrent single-event requests
    let http: BillingHTTP
    let secretKey: String
    let eventName: String
    let value: Value

    public init(client: UpstreamClient, baseURL: String, secretKey: String, eventName: String, value: Value,
                name: String = "stripe") throws {
        self.name = name
        self.http = BillingHTTP(client: client, endpoint: try Backend(url: baseURL))
        self.secretKey = secretKey
        self.eventName = eventName
        self.value = value
    }

    public func accepts(_ aggregate: UsageAggregate) -> Bool { aggregate.stripeCustomerID != nil }

    public func deliver(_ batch: [UsageAggregate], window: ExportWindow) async -> [DeliveryOutcome] {
        await withTaskGroup(of: (Int, DeliveryOutcome).self) { group in
            for (index, aggregate) in batch.enumerated() {
                group.addTask { (index, await send(aggregate, window: window)) }
            }
            var outcomes = [DeliveryOutcome](repeating: .retry("not sent"), count: batch.count)
            for await (index, outcome) in group { outcomes[index] = outcome }
            return outcomes
        }
    }

    private func send(_ aggregate: UsageAggregate, window: ExportWindow) async -> DeliveryOutcome {
        let identifier = aggregate.eventID(exporter: name, window: window)
        let amount = value == .tokens ? aggregate.promptTokens + aggregate.completionTokens : aggregate.costMicroUSD
        let form = Self.form([
            ("event_name", eventName), ("payload[stripe_customer_id]", aggregate.stripeCustomerID ?? ""),
            ("payload[value]", String(amount)), ("identifier", identifier),
            ("timestamp", String(Int64(aggregate.minute.timeIntervalSince1970))),
        ])
        let result = await http.post(path: "/v1/billing/meter_events", headers: [
            ("authorization", "Bearer \(secretKey)"), ("content-type", "application/x-www-form-urlencoded"),
            ("idempotency-key", identifier),
        ], body: form)
        // An identifier Stripe already has: the event is there.
        if case .success(let answer) = result, answer.status == 400,
           answer.body.contains("duplicate") || answer.body.contains("already exists") {
            return .delivered
        }
        return BillingHTTP.outcome(result)
    }

    /// application/x-www-form-urlencoded, as Stripe reads it (brackets in names are escaped too).
    static func form(_ fields: [(String, String)]) -> String {
        fields.map { "\(escape($0.0))=\(escape($0.1))" }.joined(separator: "&")
    }

    private static let unreserved = CharacterSet(charactersIn: "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")

    static func escape(_ text: String) -> String {
        text.addingPercentEncoding(withAllowedCharacters: unreserved) ?? ""
    }
}
