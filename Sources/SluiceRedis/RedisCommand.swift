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
        String(self).writeArgument(into: &buffer)
    }
}

extension Int64: RESPArgument {
    public func writeArgument(into buffer: inout ByteBuffer) {
        String(self).writeArgument(into: &buffer)
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

    public init(_ name: String, _ arguments: [any RESPArgument] = []) {
        self.name = name
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

extension ByteBuffer {
    fileprivate mutating func writeCRLF() {
        writeInteger(UInt16(0x0D0A))
    }

    fileprivate mutating func writeArrayHeader(_ count: Int) {
        writeStaticString("*")
        writeString(String(count))
        writeCRLF()
    }

    fileprivate mutating func writeBulkHeader(_ length: Int) {
        writeStaticString("$")
        writeString(String(length))
        writeCRLF()
    }
}
