import NIOCore

/// One RESP2 reply as Redis sent it.
///
/// hiredis 0.14 does not tell a null bulk string from a null array, so both arrive as `.null`.
public enum RESPValue: Sendable, Equatable {
    case simpleString(String)
    /// An error reply nested inside an array (a top-level error is thrown as `RedisClientError.server`).
    case error(String)
    case integer(Int64)
    case bulkString(ByteBuffer)
    case array([RESPValue])
    case null

    /// The value as text: bulk and simple strings, and integers in decimal.
    public var string: String? {
        switch self {
        case .simpleString(let text): return text
        case .bulkString(let buffer): return String(buffer: buffer)
        case .integer(let value): return String(value)
        default: return nil
        }
    }

    /// The value as an integer: integer replies, and strings holding a decimal integer.
    public var int: Int64? {
        switch self {
        case .integer(let value): return value
        case .bulkString, .simpleString: return string.flatMap { Int64($0) }
        default: return nil
        }
    }

    public var array: [RESPValue]? {
        if case .array(let values) = self { return values }
        return nil
    }

    public var bytes: ByteBuffer? {
        if case .bulkString(let buffer) = self { return buffer }
        return nil
    }

    public var isNull: Bool { self == .null }
}
