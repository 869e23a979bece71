import NIOCore

/// One command on its way to the pipeline handler.
/// Without a promise nothing waits for a reply: the replies of SUBSCRIBE arrive as pushes.
struct RedisRequest: Sendable {
    let command: ByteBuffer
    let promise: EventLoopPromise<RESPValue>?
    let deadline: NIODeadline
}

/// Writes commands, matches replies to them in order, and enforces the command timeout.
///
/// Writes arriving in one event-loop tick are flushed together (one syscall for many callers).
/// On a subscriber connection, replies nobody waits for go to `onPush`.
final class RedisPipelineHandler: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = RedisRequest
    typealias OutboundOut = ByteBuffer

    private var state: RedisPipelineStateMachine
    private let parser = RESPReplyParser()
    private let onPush: ((RESPValue) -> Void)?
    private var timer: Scheduled<Void>?
    private var flushScheduled = false

    init(maxPending: Int = 10_000, onPush: ((RESPValue) -> Void)? = nil) {
        self.onPush = onPush
        self.state = RedisPipelineStateMachine(acceptsPushes: onPush != nil, maxPending: maxPending)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let request = unwrapOutboundIn(data)
        // The caller's write promise only says "the handler owns the request now".
        promise?.succeed()
        guard let waiter = request.promise else {
            context.write(wrapOutboundOut(request.command), promise: nil)
            scheduleFlush(context: context)
            return
        }
        switch state.enqueue(waiter, deadline: request.deadline) {
        case .fail(let refused, let error):
            refused.fail(error)
        case .write:
            context.write(wrapOutboundOut(request.command), promise: nil)
            armTimerIfNeeded(context: context)
            scheduleFlush(context: context)
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        do {
            try parser.feed(unwrapInboundIn(data))
            while let value = try parser.next() {
                switch state.received(value) {
                case .succeed(let waiter, let value):
                    waiter.succeed(value)
                case .fail(let waiter, let error):
                    waiter.fail(error)
                case .push(let value):
                    onPush?(value)
                case .closeConnection(let error, let failing):
                    fail(failing, with: error)
                    context.close(promise: nil)
                    return
                }
            }
        } catch {
            fail(state.close(error), with: error)
            context.close(promise: nil)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        timer?.cancel()
        fail(state.close(.connectionClosed), with: .connectionClosed)
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        fail(state.close(.connectionClosed), with: .connectionClosed)
        context.close(promise: nil)
    }

    private func scheduleFlush(context: ChannelHandlerContext) {
        guard !flushScheduled else { return }
        flushScheduled = true
        context.eventLoop.assumeIsolated().execute {
            self.flushScheduled = false
            context.flush()
        }
    }

    private func armTimerIfNeeded(context: ChannelHandlerContext) {
        guard timer == nil, let deadline = state.nextDeadline else { return }
        timer = context.eventLoop.assumeIsolated().scheduleTask(deadline: deadline) {
            self.timer = nil
            switch self.state.timerFired(now: .now()) {
            case .none:
                break
            case .arm:
                self.armTimerIfNeeded(context: context)
            case .closeConnection(let error, let failing):
                self.fail(failing, with: error)
                context.close(promise: nil)
            }
        }
    }

    private func fail(_ pending: [RedisPipelineStateMachine.Pending], with error: RedisClientError) {
        for waiter in pending { waiter.promise.fail(error) }
    }
}
