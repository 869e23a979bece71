import Foundation
import Hummingbird
import SluiceTenancy

extension Tenant: ResponseEncodable {}
extension KeyRecord: ResponseEncodable {}
extension AuditEntry: ResponseEncodable {}

/// A page of a list: `{"data": [...], "has_more": bool, "next_after": cursor|null}`.
/// Built from `limit + 1` rows, so `has_more` needs no count query.
struct Page<Item: Encodable & Sendable>: ResponseEncodable {
    let data: [Item]
    let hasMore: Bool
    let nextAfter: String?

    init(items: [Item], limit: Int, cursor: (Item) -> String) {
        data = Array(items.prefix(limit))
        hasMore = items.count > limit
        nextAfter = hasMore ? data.last.map(cursor) : nil
    }

    func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(data, forKey: .data)
        try container.encode(hasMore, forKey: .hasMore)
        try container.encode(nextAfter, forKey: .nextAfter)
    }

    enum CodingKeys: String, CodingKey {
        case data
        case hasMore = "has_more"
        case nextAfter = "next_after"
    }
}

/// A new key: the record plus `key`, the plaintext shown this once.
struct CreatedKey: ResponseEncodable {
    let record: KeyRecord
    let key: String

    func encode(to encoder: any Encoder) throws {
        try record.encode(to: encoder)
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(key, forKey: .key)
    }

    enum CodingKeys: String, CodingKey { case key }
}
