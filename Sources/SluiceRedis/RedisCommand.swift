import NIOCore

/// A value that can be sent as one argument of a Redis command (a RESP bulk string).
public protocol RESPArgument: Sendable {
    func writeArgument(into buffer: inout ByteBuffer)
}

extension String: RESPArgument {
    public func writeArgument(into buffer: inout ByteBuffer) {
        buffer.writeBulkHeader(self.utf8.count)
        buffer.writeString(self)
        buffer.writeCRLF()
    }
}

extension Substring: RESPArgument {
    public func writeArgument(into buffer: inout ByteBuffer) {
        String(self).writeArgument(into: &buffer)
    }
}

extension ByteBuffer: RESPArgument {
    public func writeArgument(into buffer: inout ByteBuffer) {
        buffer.writeBulkHeader(self.readableBytes)
        buffer.writeImmutableBuffer(self)
        buffer.writeCRLF()
    }
}

extension Array: RESPArgument where Element == UInt8 {
    public func writeArgument(into buffer: inout ByteBuffer) {
        buffer.writeBulkHeader(self.count)
        buffer.writeBytes(self)
        buffer.writeCRLF()
    }
}

extension Int: RESPArgument {
    public func writeArgument(into buffer: inout ByteBuffer) {
        buffer.writeBulkHeader(ByteBuffer.decimalLength(Int64(self)))
        buffer.writeDecimal(Int64(self))
        buffer.writeCRLF()
    }
}

extension Int64: RESPArgument {
    public func writeArgument(into buffer: inout ByteBuffer) {
        buffer.writeBulkHeader(ByteBuffer.decimalLength(Int64(self)))
        buffer.writeDecimal(Int64(self))
        buffer.writeCRLF()
    }
}

extension Double: RESPArgument {
    public func writeArgument(into buffer: inout ByteBuffer) {
        String(self).writeArgument(into: &buffer)
    }
}

/// One command, already encoded as a RESP array of bulk strings: encoding happens once, on
/// the caller's thread, so the event loop only copies bytes to the socket.
public struct RedisCommand: Sendable {
    public let name: String
    public let encoded: ByteBuffer
    /// The key whose slot a Redis Cluster routes the command by (nil: any node will do).
    public let routingKey: String?

    /// `routingKey` defaults to the command's first key (`RedisCommand.firstKey`).
    public init(_ name: String, _ arguments: [any RESPArgument], routingKey: String? = nil) {
        self.name = name
        self.routingKey = routingKey ?? Self.firstKey(name, arguments)
        var buffer = ByteBuffer()
        buffer.reserveCapacity(32 + arguments.count * 16)
        buffer.writeArrayHeader(arguments.count + 1)
        name.writeArgument(into: &buffer)
        for argument in arguments {
            argument.writeArgument(into: &buffer)
        }
        self.encoded = buffer
    }

    public init(_ name: String, _ arguments: any RESPArgument...) {
        self.init(name, arguments)
    }
}

extension RedisCommand {
    /// Commands that name no key, or whose keys a cluster need not route (PUBLISH reaches every node).
    private static let keyless: Set<String> = [
        "ASKING", "AUTH", "CLIENT", "CLUSTER", "COMMAND", "CONFIG", "DBSIZE", "DEBUG", "FLUSHALL", "FLUSHDB", "HELLO",
        "INFO", "PING", "PSUBSCRIBE", "PUBLISH", "READONLY", "ROLE", "SCAN", "SCRIPT", "SELECT", "SENTINEL",
        "SUBSCRIBE", "TIME", "UNSUBSCRIBE", "WAIT",
    ]

    /// The first key of the commands Sluice sends (upper-case names): after `numkeys` for
    /// scripts, after `STREAMS` for stream reads, otherwise the first argument.
    static func firstKey(_ name: String, _ arguments: [any RESPArgument]) -> String? {
        func text(_ index: Int) -> String? {
            guard arguments.indices.contains(index) else { return nil }
            return arguments[index] as? String ?? (arguments[index] as? Substring).map(String.init)
        }
        switch name {
        case "EVALSHA", "EVAL", "EVALSHA_RO", "EVAL_RO", "FCALL", "FCALL_RO":
            let keys = arguments.count > 1 ? (arguments[1] as? Int ?? text(1).flatMap { Int($0) } ?? 0) : 0
            return keys > 0 ? text(2) : nil
        case "XGROUP", "XINFO", "OBJECT":  // a subcommand, then the key
            return text(1)
        case "XREADGROUP", "XREAD":
            guard let streams = arguments.firstIndex(where: { ($0 as? String)?.uppercased() == "STREAMS" }) else { return nil }
            return text(streams + 1)
        default:
            return keyless.contains(name) ? nil : text(0)
        }
    }
}

extension ByteBuffer {
    fileprivate mutating func writeCRLF() {
        writeInteger(UInt16(0x0D0A))
    }

    fileprivate mutating func writeArrayHeader(_ count: Int) {
        writeStaticString("*")
        writeDecimal(Int64(count))
        writeCRLF()
    }

    fileprivate mutating func writeBulkHeader(_ length: Int) {
        writeStaticString("$")
        writeDecimal(Int64(length))
        writeCRLF()
    }

    /// How many bytes `writeDecimal` writes for `value`.
    fileprivate static func decimalLength(_ value: Int64) -> Int {
        var magnitude = value.magnitude
        var length = value < 0 ? 2 : 1
        while magnitude >= 10 {
            magnitude /= 10
            length += 1
        }
        return length
    }

    /// `value` in decimal ASCII, written in place: numbers are most of a limiter call's
    /// arguments, and going through `String` costs an allocation each.
    fileprivate mutating func writeDecimal(_ value: Int64) {
        let length = Self.decimalLength(value)
        writeWithUnsafeMutableBytes(minimumWritableBytes: length) { buffer in
            var magnitude = value.magnitude
            var index = length - 1
            repeat {
                buffer[index] = UInt8(ascii: "0") + UInt8(magnitude % 10)
                magnitude /= 10
                index -= 1
            } while magnitude > 0
            if value < 0 { buffer[0] = UInt8(ascii: "-") }
            return length
        }
    }
}
