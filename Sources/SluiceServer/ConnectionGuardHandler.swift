import NIOCore
import NIOHTTP1
import Synchronization

/// How many public connections are open, across every event loop.
final class ConnectionCounter: Sendable {
    let maximum: Int
    private let count = Atomic<Int>(0)

    init(maximum: Int) {
        self.maximum = maximum
    }

    var current: Int { count.load(ordering: .relaxed) }

    func tryAcquire() -> Bool {
        if count.wrappingAdd(1, ordering: .relaxed).newValue <= maximum { return true }
        count.wrappingSubtract(1, ordering: .relaxed)
        return false
    }

    func release() {
        count.wrappingSubtract(1, ordering: .relaxed)
    }
}

/// Guards one public connection against slow or greedy clients: the connection cap, the header,
/// body and idle timeouts (`ConnectionGuardStateMachine`), and closing after a response that
/// says `connection: close` (a request refused before its body was read: the unread body is
/// never buffered).
///
/// That close lingers: the write side is shut first and what the client still sends is read and
/// discarded for at most `lingerTime` and `lingerBytes`. Closing a socket with unread input
/// makes the kernel send a reset, which can destroy the answer before the client reads it.
///
/// It sits after the HTTP codec, so it sees request and response parts; to see the first byte
/// of a request (when the header clock starts) it puts a `RequestBytesWatcher` at the front of
/// the pipeline.
final class ConnectionGuardHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias InboundOut = HTTPServerRequestPart
    typealias OutboundIn = HTTPServerResponsePart
    typealias OutboundOut = HTTPServerResponsePart

    private var state: ConnectionGuardStateMachine
    private let counter: ConnectionCounter
    private var counted = false
    private var closeAfterResponse = false
    private var timer: Scheduled<Void>?
    private var timerDeadline: NIODeadline?
    private var lingering = false
    private var passThrough = false
    private var lingered = 0
    static let lingerTime: TimeAmount = .seconds(2)
    static let lingerBytes = 1024 * 1024

    init(limits: ListenerLimits, counter: ConnectionCounter) {
        self.state = ConnectionGuardStateMachine(limits: limits, now: .now())
        self.counter = counter
    }

    func handlerAdded(context: ChannelHandlerContext) {
        let watcher = RequestBytesWatcher(onBytes: { [weak self] in self?.bytesReceived(context: context) })
        try? context.pipeline.syncOperations.addHandler(watcher, position: .first)
        if context.channel.isActive { activate(context: context) }
    }

    func channelActive(context: ChannelHandlerContext) {
        activate(context: context)
        context.fireChannelActive()
    }

    private func activate(context: ChannelHandlerContext) {
        guard !counted else { return }
        guard counter.tryAcquire() else {
            // Over the cap: refuse this one; the connections already open are not touched.
            context.close(promise: nil)
            return
        }
        counted = true
        state = ConnectionGuardStateMachine(limits: state.limits, now: .now())
        rearm(context: context)
    }

    func channelInactive(context: ChannelHandlerContext) {
        finish()
        context.fireChannelInactive()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        finish()
    }

    /// The connection is over (closed, or this handler taken out): no more deadlines, and its
    /// place under the cap goes back, once.
    private func finish() {
        timer?.cancel()
        timer = nil
        if counted {
            counted = false
            counter.release()
        }
    }

    /// The connection became a WebSocket (a Realtime session, which keeps its own idle and
    /// length limits): frames pass through untouched, the HTTP timeouts are off, and the
    /// connection still counts under the cap until it closes.
    func upgraded() {
        passThrough = true
        timer?.cancel()
        timer = nil
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if passThrough { return context.fireChannelRead(data) }
        if lingering {
            if case .body(let bytes) = unwrapInboundIn(data) { lingered += bytes.readableBytes }
            if lingered > Self.lingerBytes { context.close(promise: nil) }
            return  // discarded: the answer has been given
        }
        switch unwrapInboundIn(data) {
        case .head: state.headReceived(now: .now())
        case .body: break
        case .end: state.requestEnded()
        }
        rearm(context: context)
        context.fireChannelRead(data)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        if lingering {
            context.read()  // keep draining: nobody above asks for reads any more
            return
        }
        context.fireChannelReadComplete()
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        if passThrough { return context.write(data, promise: promise) }
        switch unwrapOutboundIn(data) {
        case .head(let response):
            if response.headers.first(name: "connection")?.lowercased() == "close" { closeAfterResponse = true }
            context.write(data, promise: promise)
        case .body:
            context.write(data, promise: promise)
        case .end:
            state.responseEnded(now: .now())
            guard closeAfterResponse else {
                context.write(data, promise: promise)
                rearm(context: context)
                return
            }
            let written = promise ?? context.eventLoop.makePromise()
            context.writeAndFlush(data, promise: written)
            written.futureResult.assumeIsolated().whenComplete { [self] _ in linger(context: context) }
        }
    }

    private func linger(context: ChannelHandlerContext) {
        timer?.cancel()
        timer = nil
        lingering = true
        context.close(mode: .output, promise: nil)
        context.eventLoop.assumeIsolated().scheduleTask(in: Self.lingerTime) { context.close(promise: nil) }
        context.read()
    }

    fileprivate func bytesReceived(context: ChannelHandlerContext) {
        guard !lingering, !passThrough else { return }
        state.bytesReceived(now: .now())
        rearm(context: context)
    }

    /// Keeps one timer at the earliest deadline in force.
    private func rearm(context: ChannelHandlerContext) {
        guard !lingering, !passThrough else { return }
        switch state.check(now: .now()) {
        case .none:
            break
        case .close:
            context.close(promise: nil)
        case .arm(let deadline):
            if let timerDeadline, timerDeadline <= deadline, timer != nil { return }
            timer?.cancel()
            timerDeadline = deadline
            timer = context.eventLoop.assumeIsolated().scheduleTask(deadline: deadline) { [self] in
                timer = nil
                timerDeadline = nil
                rearm(context: context)
            }
        }
    }
}

/// First in the pipeline: tells the guard that request bytes arrived (before they are decoded).
final class RequestBytesWatcher: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    private let onBytes: () -> Void

    init(onBytes: @escaping () -> Void) {
        self.onBytes = onBytes
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        onBytes()
        context.fireChannelRead(data)
    }
}
