import NIOCore
import Testing

@testable import SluiceRedis

@Suite("RESP reply parser (hiredis reader)")
struct RESPReplyParserTests {
    private func parse(_ chunks: [String]) throws -> [RESPValue] {
        let parser = RESPReplyParser()
        var values: [RESPValue] = []
        for chunk in chunks {
            try parser.feed(ByteBuffer(string: chunk))
            while let value = try parser.next() { values.append(value) }
        }
        return values
    }

    @Test func everyReplyKind() throws {
        let values = try parse(["+OK\r\n-ERR bad\r\n:42\r\n$3\r\nabc\r\n$-1\r\n*2\r\n:1\r\n$0\r\n\r\n*-1\r\n"])
        #expect(values == [
            .simpleString("OK"), .error("ERR bad"), .integer(42), .bulkString(ByteBuffer(string: "abc")),
            .null, .array([.integer(1), .bulkString(ByteBuffer())]), .null,
        ])
    }

    @Test func repliesSplitAtEveryByteAreReassembled() throws {
        let wire = "*3\r\n$5\r\nhello\r\n:-7\r\n*1\r\n+x\r\n"
        let values = try parse(wire.map { String($0) })
        #expect(values == [.array([.bulkString(ByteBuffer(string: "hello")), .integer(-7), .array([.simpleString("x")])])])
    }

    @Test func binaryBulkStringsKeepNulBytes() throws {
        let parser = RESPReplyParser()
        var wire = ByteBuffer(string: "$5\r\n")
        wire.writeBytes([0, 1, 0, 255, 0])
        wire.writeString("\r\n")
        try parser.feed(wire)
        #expect(try parser.next() == .bulkString(ByteBuffer(bytes: [0, 1, 0, 255, 0])))
    }

    @Test func garbageIsAProtocolError() throws {
        let parser = RESPReplyParser()
        #expect(throws: RedisClientError.self) {
            try parser.feed(ByteBuffer(string: "?what\r\n"))
            _ = try parser.next()
        }
    }
}
