import Foundation
import SluiceUpstream

/// OpenMeter: CloudEvents in JSON batches (`POST /api/v1/events`, `application/cloudevents-batch+json`,
/// bearer token), `subject` the tenant, `id` unique per event (OpenMeter de-duplicates on id and
/// source).
public struct OpenMeterSink: BillingSink {
    public let name: String
    public let batchSize = 100
    let http: BillingHTTP
    let token: String
    let eventType: String
    let source: String

    public init(client: UpstreamClient, baseURL: String, token: String, eventType: String, source: String,
                name: String = "openmeter") throws {
        self.name = name
        self.http = BillingHTTP(client: client, endpoint: try Backend(url: baseURL))
        self.token = token
        self.eventType = eventType
        self.source = source
    }

    public func accepts(_ aggregate: UsageAggregate) -> Bool { true }

    struct CloudEvent: Encodable {
        let specversion = "1.0"
        let id: String
        let source: String
        let type: String
        let subject: String
        let time: String
        let datacontenttype = "application/json"
        let data: [String: ValueField]

        enum ValueField: Encodable {
            case text(String), number(Int64)
            func encode(to encoder: any Encoder) throws {
                var container = encoder.singleValueContainer()
                switch self {
                case .text(let text): try container.encode(text)
                case .number(let number): try container.encode(number)
                }
            }
        }
    }

    public func deliver(_ batch: [UsageAggregate], window: ExportWindow) async -> [DeliveryOutcome] {
        let events = batch.map { aggregate in
            CloudEvent(id: aggregate.eventID(exporter: name, window: window), source: source, type: eventType,
                       subject: aggregate.tenantID.uuidString.lowercased(), time: aggregate.minute.formatted(.iso8601),
                       data: ["model": .text(aggregate.model), "requests": .number(aggregate.requests),
                              "prompt_tokens": .number(aggregate.promptTokens),
                              "completion_tokens": .number(aggregate.completionTokens),
                              "total_tokens": .number(aggregate.promptTokens + aggregate.completionTokens),
                              "cost_micro_usd": .number(aggregate.costMicroUSD)])
        }
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys
        guard let body = try? encoder.encode(events) else {
            return batch.map { _ in .refused(status: 0, reason: "the events could not be encoded") }
        }
        let result = await http.post(path: "/api/v1/events", headers: [
            ("authorization", "Bearer \(token)"), ("content-type", "application/cloudevents-batch+json"),
        ], body: String(decoding: body, as: UTF8.self))
        let outcome = BillingHTTP.outcome(result)
        return batch.map { _ in outcome }
    }
}
