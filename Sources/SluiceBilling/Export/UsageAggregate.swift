import Crypto
import Foundation

/// The ledger rows of one tenant and model in one minute, among the rows one export window
/// took: what an exporter sends as one event.
public struct UsageAggregate: Sendable, Equatable {
    public var tenantID: UUID
    public var stripeCustomerID: String?
    public var model: String
    /// The minute the usage happened in (its start).
    public var minute: Date
    public var requests: Int64
    public var promptTokens: Int64
    public var completionTokens: Int64
    public var costMicroUSD: Int64

    public init(tenantID: UUID, stripeCustomerID: String?, model: String, minute: Date, requests: Int64, promptTokens: Int64,
                completionTokens: Int64, costMicroUSD: Int64) {
        self.tenantID = tenantID
        self.stripeCustomerID = stripeCustomerID
        self.model = model
        self.minute = minute
        self.requests = requests
        self.promptTokens = promptTokens
        self.completionTokens = completionTokens
        self.costMicroUSD = costMicroUSD
    }

    /// The event's id: the same for the same aggregate of the same window, whoever sends it and
    /// however often, so the billing system's de-duplication makes a re-send harmless. Rows that
    /// reach the ledger late fall into a later window and go as another event (values add up).
    public func eventID(exporter: String, window: ExportWindow) -> String {
        let key = "\(exporter)|\(tenantID.uuidString.lowercased())|\(model)|\(Int64(minute.timeIntervalSince1970))|"
            + "\(Int64((window.start.timeIntervalSince1970 * 1_000_000).rounded()))"
        return "sluice_" + SHA256.hash(data: Data(key.utf8)).prefix(20).map { String(format: "%02x", $0) }.joined()
    }
}

/// Ledger rows by the time they were recorded, [start, end): what one pass exports. A window is
/// fixed (in PostgreSQL) before its events are sent, so a pass that dies is repeated exactly.
public struct ExportWindow: Sendable, Equatable {
    public var start: Date
    public var end: Date

    public init(start: Date, end: Date) {
        self.start = start
        self.end = end
    }
}

/// What a billing system answered to a delivery.
public enum DeliveryOutcome: Sendable, Equatable {
    /// Taken (or already had it: a duplicate of an earlier delivery).
    case delivered
    /// Worth retrying later: 429, 5xx, a timeout, no connection.
    case retry(String)
    /// Refused for good (a 4xx): recorded in `billing_export_failures`, and the rest proceeds.
    case refused(status: Int, reason: String)
}

/// A billing system that takes usage events.
public protocol BillingSink: Sendable {
    /// The exporter's name: its cursor, its metrics label, part of every event id.
    var name: String { get }
    /// At most this many aggregates per `deliver` call.
    var batchSize: Int { get }
    /// Whether this aggregate goes to this system at all (e.g. the tenant has a Stripe customer).
    func accepts(_ aggregate: UsageAggregate) -> Bool
    /// Sends a batch; an outcome per aggregate, in order.
    func deliver(_ batch: [UsageAggregate], window: ExportWindow) async -> [DeliveryOutcome]
}
