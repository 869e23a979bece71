import Foundation
import HTTPTypes
import Hummingbird
import NIOCore
import SluiceBilling
import SluiceTenancy

/// Usage reports and monthly statements, as JSON or (with `Accept: text/csv`) CSV.
extension AdminAPI {
    func usage(_ request: Request, _ context: AdminRequestContext) async throws -> Response {
        let tenant = try tenantID(context)
        try AdminPermission.read.check(try context.requireCaller(), tenant: tenant)
        let query = request.uri.queryParameters
        let groupText = query.get("group_by") ?? "model"
        guard let grouping = UsageGrouping(rawValue: groupText) else {
            throw AdminError.invalid("group_by", "'group_by' must be model, day, hour, key or day_model")
        }
        let to = try query.get("to").map { try time($0, "to") } ?? Date()
        let from = try query.get("from").map { try time($0, "from") } ?? to.addingTimeInterval(-30 * 86_400)
        guard from < to else { throw AdminError.invalid("from", "'from' must be before 'to'") }
        let (limit, after) = try pagination(request, defaultLimit: 10_000, maximum: 10_000)
        _ = try await found { try await store.tenant(tenant) }
        let rows = try await store.usage(tenantID: tenant, from: from, to: to, groupBy: grouping, limit: limit + 1, after: after)
        let page = Array(rows.prefix(limit))
        let next = rows.count > limit ? page.last?.group : nil
        if wantsCSV(request) {
            var csv = "group,requests,prompt_tokens,completion_tokens,cost_micro_usd,cost_usd\r\n"
            for row in page {
                csv += [row.group, String(row.requests), String(row.promptTokens), String(row.completionTokens),
                        String(row.costMicroUSD), MicroUSD.usd(row.costMicroUSD)].map(CSV.field).joined(separator: ",") + "\r\n"
            }
            var headers: HTTPFields = [.contentType: "text/csv; charset=utf-8"]
            if let next { headers[Self.nextAfterHeader] = next }
            return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(string: csv)))
        }
        return try UsageReport(data: page, from: from, to: to, groupBy: grouping.rawValue, hasMore: next != nil, nextAfter: next)
            .response(from: request, context: context)
    }

    /// `GET /admin/v1/tenants/{id}/statements/{YYYY-MM}`
    func statement(_ request: Request, _ context: AdminRequestContext) async throws -> Response {
        let tenant = try tenantID(context)
        try AdminPermission.read.check(try context.requireCaller(), tenant: tenant)
        guard let text = context.parameters.get("month"), let month = Self.month(text) else {
            throw AdminError.invalid("month", "the month must be written YYYY-MM, e.g. 2026-11")
        }
        guard let statements else { throw AdminError(.notFound, code: "not_found", message: "no statements here") }
        _ = try await found { try await store.tenant(tenant) }
        let statement = try await statements.statement(tenantID: tenant, month: month)
        if wantsCSV(request) {
            return Response(status: .ok, headers: [.contentType: "text/csv; charset=utf-8"],
                            body: .init(byteBuffer: ByteBuffer(string: statement.csv)))
        }
        return try StatementResponse(statement).response(from: request, context: context)
    }

    /// The header that carries the next page's cursor on a CSV page.
    static let nextAfterHeader = HTTPField.Name("sluice-next-after")!

    private func wantsCSV(_ request: Request) -> Bool {
        request.headers[values: .accept].contains { $0.lowercased().contains("text/csv") }
    }

    /// "2026-11" as 202611, for years 2000 to 2999.
    static func month(_ text: String) -> Int? {
        let parts = text.split(separator: "-", omittingEmptySubsequences: false)
        guard text.utf8.count == 7, parts.count == 2, parts[0].count == 4, parts[1].count == 2,
              let year = Int(parts[0]), let month = Int(parts[1]), (2000...2999).contains(year), (1...12).contains(month)
        else { return nil }
        return year * 100 + month
    }
}

struct UsageReport: ResponseEncodable {
    let data: [UsageRow]
    let from: Date
    let to: Date
    let groupBy: String
    let hasMore: Bool
    let nextAfter: String?

    func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(data, forKey: .data)
        try container.encode(from, forKey: .from)
        try container.encode(to, forKey: .to)
        try container.encode(groupBy, forKey: .groupBy)
        try container.encode(hasMore, forKey: .hasMore)
        try container.encode(nextAfter, forKey: .nextAfter)
    }

    enum CodingKeys: String, CodingKey {
        case data, from, to
        case groupBy = "group_by"
        case hasMore = "has_more"
        case nextAfter = "next_after"
    }
}

/// A statement as JSON: money as integer micro-USD and as exact USD text.
struct StatementResponse: ResponseEncodable {
    let statement: Statement

    init(_ statement: Statement) {
        self.statement = statement
    }

    struct LineBody: Encodable {
        let line: Statement.Line

        func encode(to encoder: any Encoder) throws {
            var container = encoder.container(keyedBy: CodingKeys.self)
            try container.encode(line.model, forKey: .model)
            try container.encode(line.price?.id, forKey: .priceID)
            try container.encode(line.price?.effectiveFrom, forKey: .effectiveFrom)
            try container.encode(line.price?.inputPerMillion, forKey: .input)
            try container.encode(line.price?.cachedInputPerMillion, forKey: .cachedInput)
            try container.encode(line.price?.outputPerMillion, forKey: .output)
            try container.encode(line.requests, forKey: .requests)
            try container.encode(line.promptTokens, forKey: .prompt)
            try container.encode(line.cachedPromptTokens, forKey: .cachedPrompt)
            try container.encode(line.completionTokens, forKey: .completion)
            try container.encode(line.costMicroUSD, forKey: .cost)
            try container.encode(MicroUSD.usd(line.costMicroUSD), forKey: .costUSD)
        }

        enum CodingKeys: String, CodingKey {
            case model, requests
            case priceID = "price_id"
            case effectiveFrom = "effective_from"
            case input = "input_micro_usd_per_million"
            case cachedInput = "cached_input_micro_usd_per_million"
            case output = "output_micro_usd_per_million"
            case prompt = "prompt_tokens"
            case cachedPrompt = "cached_prompt_tokens"
            case completion = "completion_tokens"
            case cost = "cost_micro_usd"
            case costUSD = "cost_usd"
        }
    }

    func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(statement.tenantID.uuidString.lowercased(), forKey: .tenantID)
        try container.encode(statement.monthText, forKey: .month)
        try container.encode(statement.isFinal, forKey: .final)
        try container.encode(statement.lines.map(LineBody.init), forKey: .lines)
        try container.encode(LineBody(line: statement.total), forKey: .total)
    }

    enum CodingKeys: String, CodingKey {
        case month, lines, total, final
        case tenantID = "tenant_id"
    }
}
