import Foundation
import Testing

@testable import SluiceBilling

@Suite("Prices and money")
struct PriceTests {
    private func price(_ id: Int64, _ model: String = "m", from: TimeInterval, input: Int64 = 1_000_000,
                       cached: Int64 = 250_000, output: Int64 = 3_000_000) -> ModelPrice {
        ModelPrice(id: id, model: model, effectiveFrom: Date(timeIntervalSince1970: from), inputPerMillion: input,
                   cachedInputPerMillion: cached, outputPerMillion: output)
    }

    @Test func costIsExactIntegerArithmeticRoundedUpToTheMicroDollar() {
        let p = price(1, from: 0)  // 1 USD / M in, 0.25 cached, 3 out
        #expect(p.cost(prompt: 1_000_000, completion: 0) == 1_000_000)
        #expect(p.cost(prompt: 1, completion: 0) == 1)          // 1 µUSD exactly
        #expect(p.cost(prompt: 0, completion: 1) == 3)
        #expect(p.cost(prompt: 3, cachedPrompt: 1, completion: 0) == 3)  // 2 + 0.25 → 3 (rounded up)
        #expect(p.cost(prompt: 4, cachedPrompt: 4, completion: 0) == 1)  // 4 × 0.25
        #expect(p.cost(prompt: 2, cachedPrompt: 9, completion: 0) == 1)  // cached cannot exceed the prompt
        #expect(p.cost(prompt: -5, completion: -5) == 0)
        // Sums that overflow 64 bits midway are still exact, then clamped.
        let dear = price(2, from: 0, input: 10_000_000_000, output: 10_000_000_000)
        #expect(dear.cost(prompt: 1_000_000_000, completion: 1_000_000_000) == 20_000_000_000_000)
        // 0.1 + 0.2 in floating point is not 0.3; in micro-USD it is.
        let cents = price(3, from: 0, input: 100_000, output: 200_000)
        #expect(cents.cost(prompt: 1_000_000, completion: 1_000_000) == 300_000)
    }

    @Test func theVersionInEffectAtTheRequestsTimeIsChosen() {
        let catalogue = PriceCatalogue([price(3, from: 2_000), price(1, from: 0), price(2, from: 1_000), price(9, "other", from: 0)])
        func id(at time: TimeInterval, _ model: String = "m") -> Int64? {
            catalogue.price(for: model, at: Date(timeIntervalSince1970: time))?.id
        }
        #expect(id(at: 0) == 1 && id(at: 999.999) == 1)
        #expect(id(at: 1_000) == 2 && id(at: 1_999) == 2)
        #expect(id(at: 2_000) == 3 && id(at: 1e9) == 3)
        #expect(id(at: 5, "other") == 9)
        #expect(id(at: 5, "unpriced") == nil)
        let future = PriceCatalogue([price(4, from: 10_000)])
        #expect(future.price(for: "m", at: Date(timeIntervalSince1970: 9_999)) == nil)
    }

    @Test func microDollarsPrintAsExactDecimals() {
        #expect(MicroUSD.usd(0) == "0.000000")
        #expect(MicroUSD.usd(1) == "0.000001")
        #expect(MicroUSD.usd(12_000_450) == "12.000450")
        #expect(MicroUSD.usd(-1_500_000) == "-1.500000")
        #expect(MicroUSD.usd(Int64.min) == "-9223372036854.775808")
        #expect(MicroUSD.fromUSD(0.1) == 100_000 && MicroUSD.fromUSD(1e8) == 100_000_000_000_000)
    }
}
