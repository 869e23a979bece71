/// One pass over a request body: checks that it is a single well-formed JSON object (RFC 8259,
/// UTF-8, nesting at most `maxDepth`) and notes where the top-level members the gateway reads
/// are, without building any object. Duplicate top-level names are refused: a client must not
/// be able to show the gateway one `model` and the backend another.
struct JSONBodyScanner {
    static let maxDepth = 64

    /// A top-level member: the byte ranges of its name (without quotes) and of its value.
    struct Member {
        let value: Range<Int>
        let kind: Kind
    }

    enum Kind: Equatable {
        case string, number, object, array, bool, null
    }

    struct Failure: Error {
        let reason: String
    }

    private let bytes: UnsafeRawBufferPointer
    private var index = 0

    /// Members by name (only the names in `wanted` are kept), and the offset just after `{`.
    static func scan(_ bytes: UnsafeRawBufferPointer, wanted: Set<String>) throws(Failure) -> [String: Member] {
        var scanner = JSONBodyScanner(bytes: bytes)
        return try scanner.topLevel(wanted: wanted)
    }

    private init(bytes: UnsafeRawBufferPointer) {
        self.bytes = bytes
    }

    private mutating func topLevel(wanted: Set<String>) throws(Failure) -> [String: Member] {
        skipSpace()
        guard peek() == UInt8(ascii: "{") else { throw Failure(reason: "the body must be a JSON object") }
        index += 1
        var members: [String: Member] = [:]
        var names = Set<String>()
        members.reserveCapacity(wanted.count)  // sized once: a request's members never regrow them
        names.reserveCapacity(16)
        skipSpace()
        if peek() == UInt8(ascii: "}") {
            index += 1
        } else {
            while true {
                skipSpace()
                // Names are compared decoded: "mod\u0065l" is "model" to the backend, so it is here too.
                let name = Self.decode(bytes, try string())
                guard names.insert(name).inserted else { throw Failure(reason: "the member '\(name.prefix(64))' appears twice") }
                skipSpace()
                try expect(UInt8(ascii: ":"))
                skipSpace()
                let start = index
                let kind = try value(depth: 1)
                if wanted.contains(name) { members[name] = Member(value: start..<index, kind: kind) }
                skipSpace()
                if peek() == UInt8(ascii: ",") { index += 1; continue }
                try expect(UInt8(ascii: "}"))
                break
            }
        }
        skipSpace()
        guard index == bytes.count else { throw Failure(reason: "the body must hold exactly one JSON object") }
        return members
    }

    /// The text of a string the scanner accepted (range with quotes), escapes decoded.
    static func decode(_ bytes: UnsafeRawBufferPointer, _ range: Range<Int>) -> String {
        let inner = UnsafeRawBufferPointer(rebasing: bytes[(range.lowerBound + 1)..<(range.upperBound - 1)])
        guard inner.contains(UInt8(ascii: "\\")) else { return String(decoding: inner, as: UTF8.self) }
        var out: [UInt8] = []
        out.reserveCapacity(inner.count)
        var index = 0
        func hex(_ at: Int) -> UInt32 {
            var value: UInt32 = 0
            for byte in inner[at..<(at + 4)] {
                value <<= 4
                switch byte {
                case UInt8(ascii: "0")...UInt8(ascii: "9"): value |= UInt32(byte - UInt8(ascii: "0"))
                case UInt8(ascii: "a")...UInt8(ascii: "f"): value |= UInt32(byte - UInt8(ascii: "a") + 10)
                default: value |= UInt32(byte - UInt8(ascii: "A") + 10)
                }
            }
            return value
        }
        while index < inner.count {
            let byte = inner[index]
            guard byte == UInt8(ascii: "\\") else {
                out.append(byte)
                index += 1
                continue
            }
            let escaped = inner[index + 1]
            index += 2
            switch escaped {
            case UInt8(ascii: "b"): out.append(0x08)
            case UInt8(ascii: "f"): out.append(0x0C)
            case UInt8(ascii: "n"): out.append(0x0A)
            case UInt8(ascii: "r"): out.append(0x0D)
            case UInt8(ascii: "t"): out.append(0x09)
            case UInt8(ascii: "u"):
                var scalar = hex(index)
                index += 4
                // A surrogate pair is one character; a lone surrogate becomes U+FFFD.
                if (0xD800...0xDBFF).contains(scalar), index + 6 <= inner.count, inner[index] == UInt8(ascii: "\\"),
                   inner[index + 1] == UInt8(ascii: "u") {
                    let low = hex(index + 2)
                    if (0xDC00...0xDFFF).contains(low) {
                        scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
                        index += 6
                    }
                }
                out.append(contentsOf: Array(String(Unicode.Scalar(scalar).map(Character.init) ?? "\u{FFFD}").utf8))
            default: out.append(escaped)  // " \ /
            }
        }
        return String(decoding: out, as: UTF8.self)
    }

    private func peek() -> UInt8? { index < bytes.count ? bytes[index] : nil }

    private mutating func expect(_ byte: UInt8) throws(Failure) {
        guard peek() == byte else { throw Failure(reason: "malformed JSON at byte \(index)") }
        index += 1
    }

    private mutating func skipSpace() {
        while index < bytes.count {
            switch bytes[index] {
            case 0x20, 0x09, 0x0A, 0x0D: index += 1
            default: return
            }
        }
    }

    private mutating func value(depth: Int) throws(Failure) -> Kind {
        guard depth <= Self.maxDepth else { throw Failure(reason: "JSON nested deeper than \(Self.maxDepth)") }
        guard let first = peek() else { throw Failure(reason: "the body ends too soon") }
        switch first {
        case UInt8(ascii: "\""):
            _ = try string()
            return .string
        case UInt8(ascii: "{"):
            index += 1
            skipSpace()
            if peek() == UInt8(ascii: "}") { index += 1; return .object }
            while true {
                skipSpace()
                _ = try string()
                skipSpace()
                try expect(UInt8(ascii: ":"))
                skipSpace()
                _ = try value(depth: depth + 1)
                skipSpace()
                if peek() == UInt8(ascii: ",") { index += 1; continue }
                try expect(UInt8(ascii: "}"))
                return .object
            }
        case UInt8(ascii: "["):
            index += 1
            skipSpace()
            if peek() == UInt8(ascii: "]") { index += 1; return .array }
            while true {
                skipSpace()
                _ = try value(depth: depth + 1)
                skipSpace()
                if peek() == UInt8(ascii: ",") { index += 1; continue }
                try expect(UInt8(ascii: "]"))
                return .array
            }
        case UInt8(ascii: "t"):
            try literal("true")
            return .bool
        case UInt8(ascii: "f"):
            try literal("false")
            return .bool
        case UInt8(ascii: "n"):
            try literal("null")
            return .null
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"):
            try number()
            return .number
        default:
            throw Failure(reason: "malformed JSON at byte \(index)")
        }
    }

    private mutating func literal(_ word: StaticString) throws(Failure) {
        let length = word.utf8CodeUnitCount
        guard index + length <= bytes.count else { throw Failure(reason: "malformed JSON at byte \(index)") }
        for offset in 0..<length where bytes[index + offset] != word.utf8Start[offset] {
            throw Failure(reason: "malformed JSON at byte \(index)")
        }
        index += length
    }

    private mutating func digits() -> Int {
        let start = index
        while let byte = peek(), byte >= UInt8(ascii: "0"), byte <= UInt8(ascii: "9") { index += 1 }
        return index - start
    }

    private mutating func number() throws(Failure) {
        let start = index
        if peek() == UInt8(ascii: "-") { index += 1 }
        if peek() == UInt8(ascii: "0") {
            index += 1
        } else if digits() == 0 {
            throw Failure(reason: "malformed number at byte \(start)")
        }
        if peek() == UInt8(ascii: ".") {
            index += 1
            guard digits() > 0 else { throw Failure(reason: "malformed number at byte \(start)") }
        }
        if peek() == UInt8(ascii: "e") || peek() == UInt8(ascii: "E") {
            index += 1
            if peek() == UInt8(ascii: "+") || peek() == UInt8(ascii: "-") { index += 1 }
            guard digits() > 0 else { throw Failure(reason: "malformed number at byte \(start)") }
        }
    }

    /// A string, quotes included in the returned range; escapes and UTF-8 checked.
    private mutating func string() throws(Failure) -> Range<Int> {
        let start = index
        guard peek() == UInt8(ascii: "\"") else { throw Failure(reason: "malformed JSON at byte \(index): a string was expected") }
        index += 1
        while index < bytes.count {
            let byte = bytes[index]
            switch byte {
            case UInt8(ascii: "\""):
                index += 1
                return start..<index
            case UInt8(ascii: "\\"):
                index += 1
                guard let escaped = peek() else { break }
                switch escaped {
                case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"), UInt8(ascii: "b"), UInt8(ascii: "f"),
                     UInt8(ascii: "n"), UInt8(ascii: "r"), UInt8(ascii: "t"):
                    index += 1
                case UInt8(ascii: "u"):
                    guard index + 4 < bytes.count else { throw Failure(reason: "malformed escape at byte \(index)") }
                    for offset in 1...4 where !Self.isHex(bytes[index + offset]) {
                        throw Failure(reason: "malformed escape at byte \(index)")
                    }
                    index += 5
                default:
                    throw Failure(reason: "malformed escape at byte \(index)")
                }
            case 0x00..<0x20:
                throw Failure(reason: "a control character in a string at byte \(index)")
            case 0x80...:
                try utf8Sequence()
            default:
                index += 1
            }
        }
        throw Failure(reason: "an unterminated string")
    }

    private static func isHex(_ byte: UInt8) -> Bool {
        (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte) || (UInt8(ascii: "a")...UInt8(ascii: "f")).contains(byte)
            || (UInt8(ascii: "A")...UInt8(ascii: "F")).contains(byte)
    }

    /// One multi-byte UTF-8 sequence (RFC 3629: no overlongs, no surrogates, at most U+10FFFF).
    private mutating func utf8Sequence() throws(Failure) {
        let lead = bytes[index]
        let length: Int
        var low: UInt8 = 0x80
        var high: UInt8 = 0xBF
        switch lead {
        case 0xC2...0xDF: length = 2
        case 0xE0: length = 3; low = 0xA0
        case 0xE1...0xEC, 0xEE...0xEF: length = 3
        case 0xED: length = 3; high = 0x9F
        case 0xF0: length = 4; low = 0x90
        case 0xF1...0xF3: length = 4
        case 0xF4: length = 4; high = 0x8F
        default: throw Failure(reason: "invalid UTF-8 at byte \(index)")
        }
        guard index + length <= bytes.count else { throw Failure(reason: "invalid UTF-8 at byte \(index)") }
        let second = bytes[index + 1]
        guard second >= low, second <= high else { throw Failure(reason: "invalid UTF-8 at byte \(index)") }
        for offset in 2..<length where bytes[index + offset] & 0xC0 != 0x80 {
            throw Failure(reason: "invalid UTF-8 at byte \(index)")
        }
        index += length
    }
}
