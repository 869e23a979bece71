import NIOCore

/// Keeps a connection's socket registered for reading while the handlers above it hold their
/// reads, up to `limit` bytes held here.
///
/// Why: HTTP handlers read one message at a time (NIO's `HTTPServerPipelineHandler` holds reads
/// until the response is written; the upstream client reads only while a request waits). Each
/// hold makes NIO drop the socket's read interest and each release add it back: two
/// `epoll_ctl` calls per request on each side of the proxy, a measurable share of a request's
/// CPU. With this handler first in the pipeline the interest stays, and a keep-alive client,
/// which sends its next request only after the answer, never finds anything held.
///
/// Back-pressure stays: bytes that arrive while nobody above asked for them are held (in order,
/// with any close or error after them), and once `limit` bytes are held the socket is read no
/// more until they have been taken.
public final class ReadAheadHandler: ChannelDuplexHandler, RemovableChannelHandler {
    public typealias InboundIn = ByteBuffer
    public typealias InboundOut = ByteBuffer
    public typealias OutboundIn = NIOAny
    public typealias OutboundOut = NIOAny

    private let limit: Int
    private var held = CircularBuffer<ByteBuffer>(initialCapacity: 2)
    private var heldBytes = 0
    /// A handler above has asked for a read that no read cycle has answered yet.
    private var wanted = false
    /// This read cycle answers such a request: its bytes go up, and a read-complete after them.
    /// (A read asked for while it runs is for the next cycle.)
    private var passedUp = false
    private var delivering = false

    public init(limit: Int = 64 * 1024) {
        self.limit = limit
    }

    public func read(context: ChannelHandlerContext) {
        wanted = true
        guard held.isEmpty else {
            // Answered from what is held, on the next tick: not from inside the caller's own
            // write or read handling.
            guard !delivering else { return }
            delivering = true
            context.eventLoop.assumeIsolated().execute { [self] in
                delivering = false
                deliverHeld(context: context)
            }
            return
        }
        context.read()
    }

    public func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if passedUp || (wanted && held.isEmpty) {
            if !passedUp {
                passedUp = true
                wanted = false
            }
            context.fireChannelRead(data)
        } else {
            let bytes = unwrapInboundIn(data)
            heldBytes += bytes.readableBytes
            held.append(bytes)
        }
    }

    public func channelReadComplete(context: ChannelHandlerContext) {
        if passedUp {
            passedUp = false
            readComplete(context: context)
        }
        if heldBytes < limit { context.read() }
    }

    /// Ends a delivery. With `autoRead` NIO asks the pipeline for the next read after each read
    /// cycle, but only when no read is pending at the socket, and here one always is: so the
    /// request is made here, for the handlers above that count on it.
    private func readComplete(context: ChannelHandlerContext) {
        context.fireChannelReadComplete()  // may ask for the next read (`read` sets `wanted`)
        if context.channel.isActive, (try? context.channel.syncOptions?.getOption(.autoRead)) ?? false {
            context.pipeline.syncOperations.read()
        }
    }

    public func channelInactive(context: ChannelHandlerContext) {
        flushHeld(context: context)
        context.fireChannelInactive()
    }

    public func errorCaught(context: ChannelHandlerContext, error: any Error) {
        flushHeld(context: context)
        context.fireErrorCaught(error)
    }

    public func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        flushHeld(context: context)
        context.fireUserInboundEventTriggered(event)
    }

    public func handlerRemoved(context: ChannelHandlerContext) {
        flushHeld(context: context)
    }

    private func deliverHeld(context: ChannelHandlerContext) {
        guard wanted, !held.isEmpty else { return }
        wanted = false
        flushHeld(context: context)
        if heldBytes < limit { context.read() }
    }

    /// Passes up everything held, in order (before a close or an error, or when asked).
    private func flushHeld(context: ChannelHandlerContext) {
        guard !held.isEmpty else { return }
        while let bytes = held.popFirst() {
            heldBytes -= bytes.readableBytes
            context.fireChannelRead(wrapInboundOut(bytes))
        }
        readComplete(context: context)
    }
}
