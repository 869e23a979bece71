import Foundation
import Hummingbird
import SluiceBilling

/// `/admin/v1/prices`: the price catalogue. Every admin role may read it (statements show unit
/// prices); only a platform admin adds a version. Versions are never edited: ledger rows name them.
extension AdminAPI {
    func listPrices(_ request: Request, _ context: AdminRequestContext) async throws -> PriceList {
        _ = try context.requireCaller()
        let model = request.uri.queryParameters.get("model").map { String($0) }
        if let model { try TextPattern.modelName.check(model, field: "model") }
        return PriceList(data: try await priceStore().list(model: model).map { PriceVersion($0) })
    }

    func addPrice(_ request: Request, _ context: AdminRequestContext) async throws -> EditedResponse<PriceVersion> {
        let caller = try context.requireCaller()
        try AdminPermission.managePlatform.check(caller, tenant: nil)
        let body = try await FieldReader.body(try await readBody(request, context), allowed: [
            "model", "effective_from", "input_micro_usd_per_million", "cached_input_micro_usd_per_million",
            "output_micro_usd_per_million",
        ])
        let model = try body.string("model", required: true, pattern: .modelName)!
        // Whole micro-USD per million tokens: up to 10,000 USD per token million.
        let range = 0...10_000_000_000
        guard let input = try body.integer("input_micro_usd_per_million", in: range) else {
            throw AdminError.invalid("input_micro_usd_per_million", "'input_micro_usd_per_million' is required")
        }
        guard let output = try body.integer("output_micro_usd_per_million", in: range) else {
            throw AdminError.invalid("output_micro_usd_per_million", "'output_micro_usd_per_million' is required")
        }
        let cached = try body.integer("cached_input_micro_usd_per_million", in: range) ?? input
        let earliest = Date().addingTimeInterval(TimeInterval(PriceStore.minimumLead.components.seconds))
        let from = try body.date("effective_from") ?? earliest
        guard from >= earliest.addingTimeInterval(-1) else {
            throw AdminError.invalid("effective_from", "'effective_from' must be at least \(PriceStore.minimumLead.components.seconds) seconds from now, so every replica has the price before it applies")
        }
        let price = ModelPrice(id: nil, model: model, effectiveFrom: from, inputPerMillion: Int64(input),
                               cachedInputPerMillion: Int64(cached), outputPerMillion: Int64(output))
        do {
            let added = try await priceStore().add(price, by: caller.subject)
            return EditedResponse(status: .created, response: PriceVersion(added))
        } catch PriceStore.Failure.duplicate {
            throw AdminError(.conflict, code: "conflict", message: "'\(model)' already has a price version taking effect at that time",
                             param: "effective_from")
        }
    }

    private func priceStore() throws -> PriceStore {
        guard let prices else { throw AdminError(.notFound, code: "not_found", message: "no price catalogue here") }
        return prices
    }
}

/// One price version as the API shows it: integers in micro-USD, and the same as exact USD text.
struct PriceVersion: ResponseEncodable {
    let id: Int64?
    let model: String
    let effectiveFrom: Date
    let inputMicroUSDPerMillion: Int64
    let cachedInputMicroUSDPerMillion: Int64
    let outputMicroUSDPerMillion: Int64

    init(_ price: ModelPrice) {
        id = price.id
        model = price.model
        effectiveFrom = price.effectiveFrom
        inputMicroUSDPerMillion = price.inputPerMillion
        cachedInputMicroUSDPerMillion = price.cachedInputPerMillion
        outputMicroUSDPerMillion = price.outputPerMillion
    }

    func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(id, forKey: .id)
        try container.encode(model, forKey: .model)
        try container.encode(effectiveFrom, forKey: .effectiveFrom)
        try container.encode(inputMicroUSDPerMillion, forKey: .inputMicro)
        try container.encode(cachedInputMicroUSDPerMillion, forKey: .cachedInputMicro)
        try container.encode(outputMicroUSDPerMillion, forKey: .outputMicro)
        try container.encode(MicroUSD.usd(inputMicroUSDPerMillion), forKey: .input)
        try container.encode(MicroUSD.usd(cachedInputMicroUSDPerMillion), forKey: .cachedInput)
        try container.encode(MicroUSD.usd(outputMicroUSDPerMillion), forKey: .output)
    }

    enum CodingKeys: String, CodingKey {
        case id, model
        case effectiveFrom = "effective_from"
        case inputMicro = "input_micro_usd_per_million"
        case cachedInputMicro = "cached_input_micro_usd_per_million"
        case outputMicro = "output_micro_usd_per_million"
        case input = "input_usd_per_million"
        case cachedInput = "cached_input_usd_per_million"
        case output = "output_usd_per_million"
    }
}

struct PriceList: ResponseEncodable {
    let data: [PriceVersion]
}
