import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1

/// Which upstream deadline passed.
public enum UpstreamTimeout: String, Sendable, Equatable {
    case firstByte = "first_byte"
    case idle
    case total
}

/// Enforces the first-byte, idle-between-chunks and total deadlines of the request in flight
/// on one upstream connection, on the event loop. When a deadline passes it records which one
/// and closes the connection, which ends the reader.
///
/// One timer, re-armed lazily: a part read only moves the deadline (a stored value); the timer,
/// when it fires, checks the deadline and sleeps again if it moved. A request thus costs no
/// timer of its own on a busy keep-alive connection, where scheduling and cancelling one per
/// part cost more than the rest of this handler.
final class UpstreamDeadlineHandler: ChannelDuplexHandler {
    typealias InboundIn = HTTPClientResponsePart
    typealias InboundOut = HTTPClientResponsePart
    typealias OutboundIn = HTTPClientRequestPart
    typealias OutboundOut = HTTPClientRequestPart

    private let firstByte: TimeAmount
    private let idle: TimeAmount
    private let total: TimeAmount
    /// Read by the connection after the stream ended, to tell a timeout from a close.
    let expired: NIOLockedValueBox<UpstreamTimeout?>
    /// The request in flight (between its head going out and its response's end), its
    /// deadline now and which deadline that is.
    private var inFlight = false
    private var deadline: NIODeadline = .distantFuture
    private var reason = UpstreamTimeout.firstByte
    private var totalDeadline: NIODeadline = .distantFuture
    private var timer: Scheduled<Void>?
    private var timerFires: NIODeadline = .distantFuture

    init(firstByte: TimeAmount, idle: TimeAmount, total: TimeAmount, expired: NIOLockedValueBox<UpstreamTimeout?>) {
        self.firstByte = firstByte
        self.idle = idle
        self.total = total
        self.expired = expired
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        if case .head = unwrapOutboundIn(data) {
            let now = context.eventLoop.now
            inFlight = true
            totalDeadline = now + total
            move(context, .firstByte, to: now + firstByte)
        }
        context.write(data, promise: promise)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head, .body:
            if inFlight { move(context, .idle, to: context.eventLoop.now + idle) }
        case .end:
            inFlight = false  // the timer, when it fires, finds nothing to watch
        }
        context.fireChannelRead(data)
    }

    func channelInactive(context: ChannelHandlerContext) {
        inFlight = false
        timer?.cancel()
        timer = nil
        context.fireChannelInactive()
    }

    private func move(_ context: ChannelHandlerContext, _ kind: UpstreamTimeout, to proposed: NIODeadline) {
        deadline = min(proposed, totalDeadline)
        reason = deadline == totalDeadline ? .total : kind
        // A timer that fires no later than the deadline checks it then; an earlier deadline
        // (a first-byte timeout shorter than the idle one before it) needs an earlier timer.
        guard timer == nil || timerFires > deadline else { return }
        timer?.cancel()
        schedule(context, at: deadline)
    }

    private func schedule(_ context: ChannelHandlerContext, at when: NIODeadline) {
        timerFires = when
        timer = context.eventLoop.assumeIsolated().scheduleTask(deadline: when) {
            self.timer = nil
            guard self.inFlight else { return }
            guard context.eventLoop.now >= self.deadline else {
                self.schedule(context, at: self.deadline)
                return
            }
            let reason = self.reason
            self.expired.withLockedValue { $0 = reason }
            context.close(promise: nil)
        }
    }
}
