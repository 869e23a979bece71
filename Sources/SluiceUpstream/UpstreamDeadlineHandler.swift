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
/// on one upstream connection, on the event loop with one timer (no task per chunk). When a
/// deadline passes it records which one and closes the connection, which ends the reader.
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
    private var timer: Scheduled<Void>?
    private var totalDeadline: NIODeadline = .distantFuture

    init(firstByte: TimeAmount, idle: TimeAmount, total: TimeAmount, expired: NIOLockedValueBox<UpstreamTimeout?>) {
        self.firstByte = firstByte
        self.idle = idle
        self.total = total
        self.expired = expired
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        if case .head = unwrapOutboundIn(data) {
            totalDeadline = .now() + total
            arm(context, .firstByte, after: firstByte)
        }
        context.write(data, promise: promise)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head, .body:
            if timer != nil { arm(context, .idle, after: idle) }
        case .end:
            timer?.cancel()
            timer = nil
        }
        context.fireChannelRead(data)
    }

    func channelInactive(context: ChannelHandlerContext) {
        timer?.cancel()
        timer = nil
        context.fireChannelInactive()
    }

    private func arm(_ context: ChannelHandlerContext, _ kind: UpstreamTimeout, after amount: TimeAmount) {
        timer?.cancel()
        let deadline = min(.now() + amount, totalDeadline)
        let reason = deadline == totalDeadline ? UpstreamTimeout.total : kind
        timer = context.eventLoop.assumeIsolated().scheduleTask(deadline: deadline) {
            self.expired.withLockedValue { $0 = reason }
            context.close(promise: nil)
        }
    }
}
