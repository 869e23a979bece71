import Foundation

/// A tenant's monthly statement: a line per model and price version with its tokens, unit prices
/// and cost. Costs are the ledger's sums (each request's cost rounded up to the micro-USD when it
/// was billed), so a line's cost can exceed tokens × unit price by under 1 µUSD per request; the
/// totals are the ledger's totals, exactly.
public struct Statement: Sendable, Equatable {
    public struct Line: Sendable, Equatable {
        public var model: String
        /// nil: billed before the catalogue was read (the configuration's price) or unpriced.
        public var price: ModelPrice?
        public var requests: Int64
        public var promptTokens: Int64
        public var cachedPromptTokens: Int64
        public var completionTokens: Int64
        public var costMicroUSD: Int64

        public init(model: String, price: ModelPrice?, requests: Int64, promptTokens: Int64, cachedPromptTokens: Int64,
                    completionTokens: Int64, costMicroUSD: Int64) {
            self.model = model
            self.price = price
            self.requests = requests
            self.promptTokens = promptTokens
            self.cachedPromptTokens = cachedPromptTokens
            self.completionTokens = completionTokens
            self.costMicroUSD = costMicroUSD
        }
    }

    public var tenantID: UUID
    /// YYYYMM (UTC).
    public var month: Int
    public var lines: [Line]
    /// The month is over (its rows can still arrive for a few seconds: metering lag).
    public var isFinal: Bool

    public init(tenantID: UUID, month: Int, lines: [Line], isFinal: Bool) {
        self.tenantID = tenantID
        self.month = month
        self.lines = lines
        self.isFinal = isFinal
    }

    public var total: Line {
        lines.reduce(into: Line(model: "total", price: nil, requests: 0, promptTokens: 0, cachedPromptTokens: 0,
                                completionTokens: 0, costMicroUSD: 0)) { total, line in
            total.requests += line.requests
            total.promptTokens += line.promptTokens
            total.cachedPromptTokens += line.cachedPromptTokens
            total.completionTokens += line.completionTokens
            total.costMicroUSD += line.costMicroUSD
        }
    }

    /// "2026-11"
    public var monthText: String { String(format: "%04d-%02d", month / 100, month % 100) }

    /// The statement as CSV (RFC 4180): a header, a row per line, and a `total` row.
    public var csv: String {
        var out = "model,price_id,effective_from,input_usd_per_million,cached_input_usd_per_million,output_usd_per_million,"
            + "requests,prompt_tokens,cached_prompt_tokens,completion_tokens,cost_micro_usd,cost_usd\r\n"
        for line in lines + [total] {
            let price = line.price
            let fields: [String] = [
                line.model, price?.id.map(String.init) ?? "", price.map { Self.timestamp($0.effectiveFrom) } ?? "",
                price.map { MicroUSD.usd($0.inputPerMillion) } ?? "", price.map { MicroUSD.usd($0.cachedInputPerMillion) } ?? "",
                price.map { MicroUSD.usd($0.outputPerMillion) } ?? "",
                String(line.requests), String(line.promptTokens), String(line.cachedPromptTokens), String(line.completionTokens),
                String(line.costMicroUSD), MicroUSD.usd(line.costMicroUSD),
            ]
            out += fields.map(CSV.field).joined(separator: ",") + "\r\n"
        }
        return out
    }

    static func timestamp(_ date: Date) -> String {
        date.formatted(.iso8601)
    }
}

/// CSV fields as RFC 4180 wants them, and safe to open in a spreadsheet: a field that could be
/// read as a formula (`=`, `+`, `-`, `@` first) is prefixed with `'`.
public enum CSV {
    public static func field(_ text: String) -> String {
        var text = text
        if let first = text.first, "=+-@".contains(first), Double(text) == nil { text = "'" + text }
        guard text.contains(where: { $0 == "," || $0 == "\"" || $0 == "\n" || $0 == "\r" }) else { return text }
        return "\"" + text.replacingOccurrences(of: "\"", with: "\"\"") + "\""
    }
}
