/// Redis key names. Every key of one tenant carries the hash tag `{t:<tenant>}` so a tenant's
/// keys share one Redis Cluster slot and one script can touch them all.
public struct LimiterKeys: Sendable {
    public let tenantID: String
    let tag: String

    public init(tenantID: String) {
        self.tenantID = tenantID
        self.tag = "sl:{t:\(tenantID)}"
    }

    func tenantRate(_ kind: RateLimitSpec.Kind) -> String { "\(tag):\(kind == .requests ? "rpm" : "tpm")" }
    func keyRate(_ keyID: String, _ kind: RateLimitSpec.Kind) -> String {
        "\(tag):k:\(keyID):\(kind == .requests ? "rpm" : "tpm")"
    }
    func modelRate(_ model: String, _ kind: RateLimitSpec.Kind) -> String {
        "\(tag):m:\(model):\(kind == .requests ? "rpm" : "tpm")"
    }
    var tenantInFlight: String { "\(tag):inflight" }
    func keyInFlight(_ keyID: String) -> String { "\(tag):k:\(keyID):inflight" }
    /// Spend this UTC month and day, per tenant, key and model (see lua/shared.lua).
    var spent: String { "\(tag):spent" }
    /// The deny-cache entry of a budget that is spent in full.
    func spentBudget(_ budget: BudgetSpec) -> String { "\(tag):spent:\(budget.period.rawValue):\(budget.field)" }
    /// The tenant's usage events, read by the metering workers: entries of settle.lua (a batch
    /// of encoded events each, see `UsageEventCoding`) and of sweep.lua (one event as fields).
    public var usageStream: String { "\(tag):usage:batched" }
    /// Where replicas older than the batched entries wrote one event per entry. A key of its own,
    /// so their metering workers, which read only this one and know only that shape, never meet a
    /// batched entry during a rolling upgrade; newer workers drain what is left in it.
    public var legacyUsageStream: String { "\(tag):usage" }
    /// The tenant's admitted, unsettled requests, each with the time it is billed at its
    /// reservation if its settle never comes (see admit.lua and sweep.lua).
    var pending: String { "\(tag):pending" }
}
