import NIOCore
import NIOEmbedded
import SluiceNet
import Testing

/// `ReadAheadHandler` on an embedded channel (no sockets): what it passes up, holds and asks of
/// the socket.
@Suite("Read-ahead handler")
struct ReadAheadHandlerTests {
    /// Counts the reads that reach the socket (it sits in front of the read-ahead).
    final class SocketReads: ChannelOutboundHandler {
        typealias OutboundIn = NIOAny
        var count = 0
        func read(context: ChannelHandlerContext) {
            count += 1
            context.read()
        }
    }

    /// Records what reaches the handlers above, and asks for reads only when told to.
    final class Above: ChannelDuplexHandler {
        typealias InboundIn = ByteBuffer
        typealias OutboundIn = NIOAny
        var received: [String] = []
        var completes = 0
        var inactive = false
        var passReads = false
        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            received.append(String(buffer: unwrapInboundIn(data)))
        }
        func channelReadComplete(context: ChannelHandlerContext) { completes += 1 }
        func channelInactive(context: ChannelHandlerContext) { inactive = true }
        func read(context: ChannelHandlerContext) {
            if passReads { context.read() }  // else held, as HTTPServerPipelineHandler does mid-response
        }
    }

    static func channel(limit: Int = 8) throws -> (EmbeddedChannel, SocketReads, Above) {
        let reads = SocketReads(), above = Above()
        let channel = EmbeddedChannel()
        try channel.pipeline.syncOperations.addHandlers([reads, ReadAheadHandler(limit: limit), above])
        return (channel, reads, above)
    }

    @Test func bytesNobodyAskedForAreHeldAndHandedOverWhenAsked() throws {
        let (channel, reads, above) = try Self.channel()
        try channel.writeInbound(ByteBuffer(string: "first"))
        #expect(above.received.isEmpty)
        #expect(reads.count >= 1, "the socket is read on while nothing is asked for")
        above.passReads = true
        channel.pipeline.read()
        #expect(above.received.isEmpty, "handed over on the next tick, not inside the caller's read")
        channel.embeddedEventLoop.run()
        #expect(above.received == ["first"])
        #expect(above.completes == 1)
        // Asked for again: the next bytes go straight up.
        channel.pipeline.read()
        try channel.writeInbound(ByteBuffer(string: "second"))
        #expect(above.received == ["first", "second"])
    }

    @Test func pastTheLimitTheSocketIsNotReadAnyMore() throws {
        let (channel, reads, above) = try Self.channel(limit: 8)
        try channel.writeInbound(ByteBuffer(string: "0123456789"))  // over the limit of 8
        let readsWhenFull = reads.count
        try channel.writeInbound(ByteBuffer(string: "more"))  // the peer sent it anyway
        #expect(reads.count == readsWhenFull, "no read asked of a socket while the limit is held")
        above.passReads = true
        channel.pipeline.read()
        channel.embeddedEventLoop.run()
        #expect(above.received == ["0123456789", "more"])
        #expect(reads.count > readsWhenFull, "reading resumes once the held bytes are taken")
    }

    @Test func aCloseComesAfterTheBytesBeforeIt() throws {
        let (channel, _, above) = try Self.channel()
        try channel.writeInbound(ByteBuffer(string: "last words"))
        #expect(above.received.isEmpty)
        channel.pipeline.fireChannelInactive()
        #expect(above.received == ["last words"])
        #expect(above.inactive)
    }

    @Test func aReadAskedForDuringDeliveryIsForTheNextBytes() throws {
        let (channel, _, above) = try Self.channel()
        above.passReads = true
        channel.pipeline.read()
        try channel.writeInbound(ByteBuffer(string: "one"))
        #expect(above.received == ["one"])
        above.passReads = false  // now mid-response: the next request must wait
        try channel.writeInbound(ByteBuffer(string: "two"))
        #expect(above.received == ["one"])
        _ = try? channel.finish()
    }
}
