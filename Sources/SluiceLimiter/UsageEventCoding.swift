/// How one usage event travels in a usage stream entry written by settle.lua: the entry has a
/// `ts_us` field (Redis's clock) and one `usage` field per request settled in that call, whose
/// value is the event's fields as `name=value` pairs joined by `&`. `%`, `&`, `=` and control
/// bytes are percent-encoded in names and values, so no value (a client's `x-request-id`, a
/// model name) can end a pair or forge a field.
///
/// Entries written by sweep.lua, and by replicas older than this encoding, carry one event as
/// the entry's own fields; the metering worker reads both.
public enum UsageEventCoding {
    /// The stream field that holds one encoded event.
    public static let field = "usage"
    /// The stream field with the time settle ran (µs since the epoch, Redis's clock).
    public static let timeField = "ts_us"

    public static func encode(_ fields: [(name: String, value: String)]) -> String {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(fields.reduce(0) { $0 + $1.name.utf8.count + $1.value.utf8.count + 2 })
        for (index, field) in fields.enumerated() {
            if index > 0 { bytes.append(UInt8(ascii: "&")) }
            append(field.name, to: &bytes)
            bytes.append(UInt8(ascii: "="))
            append(field.value, to: &bytes)
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// The event's fields; nil when it is not what `encode` writes (a pair without `=`, a bad
    /// escape, a name given twice, escaped bytes that are not UTF-8). The metering worker decodes
    /// every event of the fleet: one pass over the bytes, and a String made only per name and value.
    public static func decode(_ text: String) -> [String: String]? {
        var text = text
        return text.withUTF8 { bytes -> [String: String]? in
            var fields: [String: String] = [:]
            fields.reserveCapacity(16)  // an event's usual fields, without regrowing
            var start = 0
            while start <= bytes.count {
                var end = start
                var equals = -1
                while end < bytes.count, bytes[end] != UInt8(ascii: "&") {
                    if equals < 0, bytes[end] == UInt8(ascii: "=") { equals = end }
                    end += 1
                }
                guard equals >= 0,
                      let name = unescape(UnsafeBufferPointer(rebasing: bytes[start..<equals])),
                      let value = unescape(UnsafeBufferPointer(rebasing: bytes[(equals + 1)..<end])),
                      fields.updateValue(value, forKey: name) == nil else { return nil }
                start = end + 1
            }
            return fields
        }
    }

    private static func append(_ text: String, to bytes: inout [UInt8]) {
        for byte in text.utf8 {
            if byte < 0x20 || byte == 0x7F || byte == UInt8(ascii: "%") || byte == UInt8(ascii: "&") || byte == UInt8(ascii: "=") {
                bytes.append(UInt8(ascii: "%"))
                bytes.append(hexDigits[Int(byte >> 4)])
                bytes.append(hexDigits[Int(byte & 0x0F)])
            } else {
                bytes.append(byte)
            }
        }
    }

    private static let hexDigits = Array("0123456789ABCDEF".utf8)

    private static func unescape(_ slice: UnsafeBufferPointer<UInt8>) -> String? {
        // What `encode` wrote is valid UTF-8, escapes aside: taken as it is.
        guard slice.contains(UInt8(ascii: "%")) else { return String(decoding: slice, as: UTF8.self) }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(slice.count)
        var index = 0
        while index < slice.count {
            guard slice[index] == UInt8(ascii: "%") else {
                bytes.append(slice[index])
                index += 1
                continue
            }
            guard index + 2 < slice.count, let upper = hexValue(slice[index + 1]), let lower = hexValue(slice[index + 2]) else {
                return nil
            }
            bytes.append(upper << 4 | lower)
            index += 3
        }
        return String(validating: bytes, as: UTF8.self)
    }

    private static func hexValue(_ byte: UInt8) -> UInt8? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): byte - UInt8(ascii: "0")
        case UInt8(ascii: "A")...UInt8(ascii: "F"): byte - UInt8(ascii: "A") + 10
        case UInt8(ascii: "a")...UInt8(ascii: "f"): byte - UInt8(ascii: "a") + 10
        default: nil
        }
    }
}
