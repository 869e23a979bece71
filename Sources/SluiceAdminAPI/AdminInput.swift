import Foundation
import SluiceLimiter
import SluiceNet
import SluiceTenancy

/// A JSON value as sent, so validation can name the exact field and what is wrong with it
/// (`JSONDecoder` would silently ignore unknown fields and coerce nothing we can report).
enum JSONValue: Decodable, Equatable {
    case null, bool(Bool), number(Double), string(String), array([JSONValue]), object([String: JSONValue])

    init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if container.decodeNil() { self = .null }
        else if let value = try? container.decode(Bool.self) { self = .bool(value) }
        else if let value = try? container.decode(Double.self) { self = .number(value) }
        else if let value = try? container.decode(String.self) { self = .string(value) }
        else if let value = try? container.decode([JSONValue].self) { self = .array(value) }
        else { self = .object(try container.decode([String: JSONValue].self)) }
    }

    var kind: String {
        switch self {
        case .null: "null"
        case .bool: "a boolean"
        case .number: "a number"
        case .string: "a string"
        case .array: "an array"
        case .object: "an object"
        }
    }
}

/// Reads the fields of one JSON object, refusing unknown fields and wrong types with a 400
/// that names the field (`limits.requests_per_minute`).
struct FieldReader {
    let fields: [String: JSONValue]
    let path: String

    /// Parses a request body that must be one JSON object.
    static func body(_ data: Data, allowed: Set<String>) throws -> FieldReader {
        guard !data.isEmpty else { throw AdminError.invalid("body", "the body must be a JSON object") }
        guard let value = try? JSONDecoder().decode(JSONValue.self, from: data) else {
            throw AdminError.invalid("body", "the body is not valid JSON")
        }
        guard case .object(let fields) = value else {
            throw AdminError.invalid("body", "the body must be a JSON object, not \(value.kind)")
        }
        let reader = FieldReader(fields: fields, path: "")
        try reader.rejectUnknown(allowed)
        return reader
    }

    func name(_ field: String) -> String { path.isEmpty ? field : "\(path).\(field)" }

    func rejectUnknown(_ allowed: Set<String>) throws {
        if let unknown = fields.keys.sorted().first(where: { !allowed.contains($0) }) {
            throw AdminError.invalid(name(unknown), "unknown field '\(name(unknown))'")
        }
    }

    /// A present, non-null field.
    func has(_ field: String) -> Bool {
        if let value = fields[field], value != .null { return true }
        return false
    }

    func string(_ field: String, required: Bool = false, pattern: TextPattern) throws -> String? {
        guard let value = fields[field], value != .null else {
            if required { throw AdminError.invalid(name(field), "'\(name(field))' is required") }
            return nil
        }
        guard case .string(let text) = value else {
            throw AdminError.invalid(name(field), "'\(name(field))' must be a string, not \(value.kind)")
        }
        try pattern.check(text, field: name(field))
        return text
    }

    func integer(_ field: String, in range: ClosedRange<Int>) throws -> Int? {
        guard let value = fields[field], value != .null else { return nil }
        guard case .number(let number) = value, number.rounded() == number, number.magnitude < 1e15 else {
            throw AdminError.invalid(name(field), "'\(name(field))' must be an integer, not \(value.kind)")
        }
        let integer = Int(number)
        guard range.contains(integer) else {
            throw AdminError.invalid(name(field), "'\(name(field))' must be between \(range.lowerBound) and \(range.upperBound)")
        }
        return integer
    }

    func number(_ field: String, in range: ClosedRange<Double>) throws -> Double? {
        guard let value = fields[field], value != .null else { return nil }
        guard case .number(let number) = value, number.isFinite else {
            throw AdminError.invalid(name(field), "'\(name(field))' must be a number, not \(value.kind)")
        }
        guard range.contains(number) else {
            throw AdminError.invalid(name(field), "'\(name(field))' must be between \(range.lowerBound) and \(range.upperBound)")
        }
        return number
    }

    func object(_ field: String) throws -> FieldReader? {
        guard let value = fields[field], value != .null else { return nil }
        guard case .object(let inner) = value else {
            throw AdminError.invalid(name(field), "'\(name(field))' must be an object, not \(value.kind)")
        }
        return FieldReader(fields: inner, path: name(field))
    }

    func stringArray(_ field: String, maxCount: Int, pattern: TextPattern) throws -> [String]? {
        guard let value = fields[field], value != .null else { return nil }
        guard case .array(let items) = value else {
            throw AdminError.invalid(name(field), "'\(name(field))' must be an array of strings, not \(value.kind)")
        }
        guard items.count <= maxCount else {
            throw AdminError.invalid(name(field), "'\(name(field))' may hold at most \(maxCount) entries")
        }
        return try items.enumerated().map { index, item in
            guard case .string(let text) = item else {
                throw AdminError.invalid("\(name(field))[\(index)]", "'\(name(field))[\(index)]' must be a string")
            }
            try pattern.check(text, field: "\(name(field))[\(index)]")
            return text
        }
    }

    func date(_ field: String) throws -> Date? {
        guard let text = try string(field, pattern: .timestamp) else { return nil }
        guard let date = TextPattern.parseTimestamp(text) else {
            throw AdminError.invalid(name(field), "'\(name(field))' must be an RFC 3339 time such as 2026-12-31T23:59:59Z")
        }
        return date
    }

    /// A time that must lie ahead (a key's expiry).
    func futureDate(_ field: String) throws -> Date? {
        guard let date = try date(field) else { return nil }
        guard date > Date() else { throw AdminError.invalid(name(field), "'\(name(field))' must be in the future") }
        return date
    }

    /// A `limits` object: every field optional, positive, within sane bounds.
    func limits(_ field: String) throws -> Limits? {
        guard let reader = try object(field) else { return nil }
        try reader.rejectUnknown(["requests_per_minute", "tokens_per_minute", "max_concurrent_requests",
                                  "monthly_budget_usd", "daily_budget_usd", "burst_requests", "burst_tokens"])
        return Limits(
            requestsPerMinute: try reader.integer("requests_per_minute", in: 1...100_000_000),
            tokensPerMinute: try reader.integer("tokens_per_minute", in: 1...100_000_000_000),
            maxConcurrentRequests: try reader.integer("max_concurrent_requests", in: 1...1_000_000),
            monthlyBudgetUSD: try reader.number("monthly_budget_usd", in: 0...100_000_000),
            dailyBudgetUSD: try reader.number("daily_budget_usd", in: 0...100_000_000),
            burstRequests: try reader.integer("burst_requests", in: 1...100_000_000),
            burstTokens: try reader.integer("burst_tokens", in: 1...100_000_000_000))
    }

    /// A key's `scope` laid over `base`: a part given replaces it, a part given as null clears
    /// it (allows everything), a part left out keeps it.
    func scope(_ field: String, over base: KeyScope = KeyScope()) throws -> KeyScope? {
        guard let reader = try object(field) else { return nil }
        try reader.rejectUnknown(["endpoints", "networks", "max_output_tokens"])
        var scope = base
        for (part, pattern, most) in [("endpoints", TextPattern.endpointPath, 4), ("networks", .network, 100)]
        where reader.fields[part] != nil {
            let list = try reader.stringArray(part, maxCount: most, pattern: pattern)
            if list?.isEmpty == true {
                throw AdminError.invalid(reader.name(part), "'\(reader.name(part))' must not be empty: give null to allow all")
            }
            if part == "endpoints" { scope.endpoints = list } else { scope.networks = list }
        }
        if reader.fields["max_output_tokens"] != nil {
            scope.maxOutputTokens = try reader.integer("max_output_tokens", in: 1...10_000_000)
        }
        return scope
    }

    /// `model_limits`: model name → limits.
    func modelLimits(_ field: String) throws -> [String: Limits]? {
        guard let reader = try object(field) else { return nil }
        guard reader.fields.count <= 1_000 else { throw AdminError.invalid(name(field), "too many models") }
        var result: [String: Limits] = [:]
        for model in reader.fields.keys.sorted() {
            try TextPattern.modelName.check(model, field: reader.name(model))
            result[model] = try reader.limits(model) ?? Limits()
        }
        return result
    }
}

/// What a text field may contain. Names are restricted to a plain character set: they show up
/// in dashboards, logs and shell scripts, where quotes and control characters only cause harm.
enum TextPattern {
    case displayName, modelName, timestamp, stripeCustomer, webhookURL, eventType, endpointPath, network

    func check(_ text: String, field: String) throws {
        switch self {
        case .displayName:
            guard (1...100).contains(text.count), text.trimmingCharacters(in: .whitespaces) == text,
                  text.unicodeScalars.allSatisfy({ CharacterSet.alphanumerics.contains($0) || " ._-".unicodeScalars.contains($0) })
            else {
                throw AdminError.invalid(field, "'\(field)' must be 1 to 100 letters, digits, spaces, '.', '_' or '-', without leading or trailing spaces")
            }
        case .modelName:
            guard (1...128).contains(text.utf8.count),
                  text.utf8.allSatisfy({ Self.modelBytes.contains($0) })
            else {
                throw AdminError.invalid(field, "'\(field)' must be a model name of 1 to 128 characters from A-Z a-z 0-9 . _ : / -")
            }
        case .stripeCustomer:
            guard (5...255).contains(text.utf8.count), text.hasPrefix("cus_"),
                  text.utf8.dropFirst(4).allSatisfy({ Self.modelBytes.contains($0) && $0 != UInt8(ascii: ".") && $0 != UInt8(ascii: ":")
                      && $0 != UInt8(ascii: "/") && $0 != UInt8(ascii: "-") })
            else {
                throw AdminError.invalid(field, "'\(field)' must be a Stripe customer id such as cus_NciAYcXfLnqBoz")
            }
        case .webhookURL:
            // Checked in full by WebhookTarget; here only its size and that it is printable ASCII.
            guard (1...2_048).contains(text.utf8.count), text.utf8.allSatisfy({ (0x21...0x7E).contains($0) }) else {
                throw AdminError.invalid(field, "'\(field)' must be an http(s) URL of at most 2048 bytes")
            }
        case .eventType:
            guard (1...64).contains(text.utf8.count), text.utf8.allSatisfy({ Self.modelBytes.contains($0) }) else {
                throw AdminError.invalid(field, "'\(field)' must be an event type such as key.created")
            }
        case .timestamp:
            guard text.utf8.count <= 40 else { throw AdminError.invalid(field, "'\(field)' is too long for a time") }
        case .endpointPath:
            guard KeyScope.endpointPaths.contains(text) else {
                throw AdminError.invalid(field, "'\(field)' must be one of \(KeyScope.endpointPaths.joined(separator: ", "))")
            }
        case .network:
            guard text.utf8.count <= 64, IPNetwork(text) != nil else {
                throw AdminError.invalid(field, "'\(field)' must be an IP address or a CIDR network such as 10.0.0.0/8 (no host bits set)")
            }
        }
    }

    private static let modelBytes = Set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._:/-".utf8)

    static func parseTimestamp(_ text: String) -> Date? {
        let withFraction = ISO8601DateFormatter()
        withFraction.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        return ISO8601DateFormatter().date(from: text) ?? withFraction.date(from: text)
    }
}
