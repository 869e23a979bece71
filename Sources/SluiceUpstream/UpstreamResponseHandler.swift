import NIOCore
import NIOHTTP1

/// Hands response parts to the one request in flight, on the event loop, with back-pressure:
/// the channel reads from the socket only while someone waits for a part (autoRead is off).
/// A whole non-streamed body is gathered on the loop and handed over once (one thread hop per
/// response instead of one per part).
final class UpstreamResponseHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPClientResponsePart

    private enum Waiter {
        case head(EventLoopPromise<HTTPResponseHead>)
        case chunk(EventLoopPromise<ByteBuffer?>)
        case body(EventLoopPromise<ByteBuffer>, limit: Int, gathered: ByteBuffer)
    }

    private var waiter: Waiter?
    private var parts = CircularBuffer<HTTPClientResponsePart>(initialCapacity: 4)
    private var closed: UpstreamError?
    private var context: ChannelHandlerContext?
    /// Read by the connection after a failure, to tell a deadline from a close.
    let timeoutReason: @Sendable () -> UpstreamTimeout?

    init(timeoutReason: @escaping @Sendable () -> UpstreamTimeout?) {
        self.timeoutReason = timeoutReason
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        parts.append(unwrapInboundIn(data))
        deliver()
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        if waiter != nil { context.read() }
    }

    func channelInactive(context: ChannelHandlerContext) {
        closed = timeoutReason().map { .timeout($0) } ?? .connectionClosed
        deliver()
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }

    // MARK: called on the event loop by UpstreamConnection

    func awaitHead(_ promise: EventLoopPromise<HTTPResponseHead>) {
        wait(.head(promise))
    }

    func awaitChunk(_ promise: EventLoopPromise<ByteBuffer?>) {
        wait(.chunk(promise))
    }

    func awaitBody(_ promise: EventLoopPromise<ByteBuffer>, limit: Int) {
        wait(.body(promise, limit: limit, gathered: ByteBuffer()))
    }

    /// Whether the next part is here already (read with an earlier one): a caller that has
    /// more on its way can hold its own flush until it has it.
    var hasBufferedPart: Bool { !parts.isEmpty }

    private func wait(_ newWaiter: Waiter) {
        precondition(waiter == nil, "one waiter at a time")
        waiter = newWaiter
        deliver()
        if waiter != nil, closed == nil { context?.read() }
    }

    /// Satisfies the waiter from buffered parts, or fails it if the connection is gone.
    private func deliver() {
        while let current = waiter {
            guard let part = parts.popFirst() else {
                if let closed { fail(current, closed) }
                return
            }
            switch (current, part) {
            case (.head(let promise), .head(let head)):
                if head.status == .continue { continue }
                waiter = nil
                promise.succeed(head)
            case (.head, _):
                continue  // stray parts of an earlier response cannot happen on a fresh lease; skip
            case (.chunk(let promise), .body(let chunk)):
                waiter = nil
                promise.succeed(chunk)
            case (.chunk(let promise), .end):
                waiter = nil
                promise.succeed(nil)
            case (.body(let promise, let limit, var gathered), .body(var chunk)):
                guard gathered.readableBytes + chunk.readableBytes <= limit else {
                    waiter = nil
                    promise.fail(UpstreamError.protocolError("response body over \(limit) bytes"))
                    context?.close(promise: nil)
                    return
                }
                gathered.writeBuffer(&chunk)
                waiter = .body(promise, limit: limit, gathered: gathered)
            case (.body(let promise, _, let gathered), .end):
                waiter = nil
                promise.succeed(gathered)
            case (.chunk, .head), (.body, .head):
                continue
            }
        }
    }

    private func fail(_ waiter: Waiter, _ error: UpstreamError) {
        self.waiter = nil
        switch waiter {
        case .head(let promise): promise.fail(error)
        case .chunk(let promise): promise.fail(error)
        case .body(let promise, _, _): promise.fail(error)
        }
    }
}
