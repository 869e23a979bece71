import Foundation

/// Every price version of every model, ordered by when each takes effect: the price of a
/// request is the latest version that took effect at or before its time. Pure; `PriceBook`
/// holds the current one.
public struct PriceCatalogue: Sendable, Equatable {
    private var versions: [String: [ModelPrice]] = [:]

    public init(_ prices: [ModelPrice]) {
        for price in prices { versions[price.model, default: []].append(price) }
        for model in versions.keys { versions[model]?.sort { $0.effectiveFrom < $1.effectiveFrom } }
    }

    /// The price in effect for `model` at `time`; nil when it has none (the model is free).
    public func price(for model: String, at time: Date) -> ModelPrice? {
        guard let list = versions[model] else { return nil }
        // Versions are few per model: a binary search for the last one not after `time`.
        var low = 0, high = list.count
        while low < high {
            let middle = (low + high) / 2
            if list[middle].effectiveFrom <= time { low = middle + 1 } else { high = middle }
        }
        return low == 0 ? nil : list[low - 1]
    }

    public var all: [ModelPrice] { versions.values.flatMap { $0 } }
}
