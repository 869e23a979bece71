import Foundation

/// One version of a model's price, per million tokens in whole micro-USD: money is integers
/// everywhere it is added up.
public struct ModelPrice: Sendable, Equatable, Hashable {
    /// The version's id, recorded on every ledger row billed at it (nil: the configuration's
    /// price, before the catalogue was read).
    public var id: Int64?
    public var model: String
    /// The price applies to requests from this time until the next version's.
    public var effectiveFrom: Date
    public var inputPerMillion: Int64
    public var cachedInputPerMillion: Int64
    public var outputPerMillion: Int64

    public init(id: Int64?, model: String, effectiveFrom: Date, inputPerMillion: Int64, cachedInputPerMillion: Int64,
                outputPerMillion: Int64) {
        self.id = id
        self.model = model
        self.effectiveFrom = effectiveFrom
        self.inputPerMillion = inputPerMillion
        self.cachedInputPerMillion = cachedInputPerMillion
        self.outputPerMillion = outputPerMillion
    }

    /// The cost of one request in micro-USD, rounded up to the whole micro-USD (a request is
    /// never billed less than its tokens cost). Cached prompt tokens, part of the prompt, are
    /// billed at the cached rate. Exact: 128-bit integers, no floating point.
    public func cost(prompt: Int, cachedPrompt: Int = 0, completion: Int) -> Int64 {
        let prompt = max(0, prompt)
        let cached = min(max(0, cachedPrompt), prompt)
        let total = Int128(prompt - cached) * Int128(inputPerMillion) + Int128(cached) * Int128(cachedInputPerMillion)
            + Int128(max(0, completion)) * Int128(outputPerMillion)
        let (quotient, remainder) = total.quotientAndRemainder(dividingBy: 1_000_000)
        return Int64(clamping: remainder > 0 ? quotient + 1 : quotient)
    }
}

/// Money as text: micro-USD as an exact decimal number of USD ("12.000450"), never through a
/// floating-point number.
public enum MicroUSD {
    public static func usd(_ micro: Int64) -> String {
        let sign = micro < 0 ? "-" : ""
        let magnitude = micro.magnitude
        let fraction = String(magnitude % 1_000_000)
        return "\(sign)\(magnitude / 1_000_000).\(String(repeating: "0", count: 6 - fraction.count))\(fraction)"
    }

    /// A USD amount from configuration (a YAML number) as whole micro-USD, rounded to the nearest.
    public static func fromUSD(_ usd: Double) -> Int64 {
        Int64((usd * 1_000_000).rounded())
    }
}
