import NIOCore
import NIOPosix
import SluiceNet
import Synchronization

/// A raw TCP connection for tests that play a slow or hostile client: bytes go out exactly as
/// given (a header a byte at a time, a body that never comes), and what comes back is
/// collected until a condition holds, the server closes, or a deadline passes.
public final class RawConnection: Sendable {
    struct State {
        var received: [UInt8] = []
        var closed = false
        /// Bumped on every event, so a waiter never misses one that came before it waited.
        var events = 0
        var waiter: CheckedContinuation<Void, Never>?
    }

    private let channel: any Channel
    private let state: Mutex<State>

    private init(channel: any Channel) {
        self.channel = channel
        self.state = Mutex(State())
    }

    public static func open(port: Int, host: String = "127.0.0.1") async throws -> RawConnection {
        let box = StateBox()
        let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(Collector(box)) }
            }
            .connect(hostOrAddress: host, port: port).get()
        let connection = RawConnection(channel: channel)
        box.connection.withLock { $0 = connection }
        box.flush()
        return connection
    }

    /// Writes `text` as it is; throws if the server has closed the connection.
    public func send(_ text: String) async throws {
        try await channel.writeAndFlush(ByteBuffer(string: text)).get()
    }

    public var received: String { state.withLock { String(decoding: $0.received, as: UTF8.self) } }
    public var isClosed: Bool { state.withLock { $0.closed } }

    /// Waits until `done(received, closed)` holds or `timeout` passes; returns whether it held.
    @discardableResult
    public func wait(timeout: Duration, until done: (String, Bool) -> Bool) async -> Bool {
        let deadline = ContinuousClock.now + timeout
        while true {
            let (text, closed, seen) = state.withLock { (String(decoding: $0.received, as: UTF8.self), $0.closed, $0.events) }
            if done(text, closed) { return true }
            let left = deadline - .now
            if left <= .zero { return false }
            await nextEvent(after: seen, within: left)
        }
    }

    /// Waits until the server closes the connection; false if it is still open after `timeout`.
    public func waitForClose(timeout: Duration) async -> Bool {
        await wait(timeout: timeout) { _, closed in closed }
    }

    public func close() {
        channel.close(promise: nil)
    }

    /// Shuts the write side only (a client that breaks off mid-request but still reads).
    public func closeOutput() async throws {
        try await channel.close(mode: .output).get()
    }

    private func nextEvent(after seen: Int, within timeout: Duration) async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let resumeNow = state.withLock { state -> Bool in
                if state.events != seen || state.closed { return true }
                state.waiter = continuation
                return false
            }
            if resumeNow {
                continuation.resume()
                return
            }
            channel.eventLoop.scheduleTask(in: TimeAmount(timeout)) { [self] in wake() }
        }
    }

    fileprivate func record(_ bytes: [UInt8]?, closed: Bool) {
        state.withLock { state in
            if let bytes { state.received += bytes }
            if closed { state.closed = true }
            state.events += 1
        }
        wake()
    }

    private func wake() {
        state.withLock { state -> CheckedContinuation<Void, Never>? in
            defer { state.waiter = nil }
            return state.waiter
        }?.resume()
    }
}

/// Holds events that arrive before the `RawConnection` exists (the handler is installed first).
private final class StateBox: Sendable {
    let connection = Mutex<RawConnection?>(nil)
    let early = Mutex<[([UInt8]?, Bool)]>([])

    func deliver(_ bytes: [UInt8]?, closed: Bool) {
        let target = connection.withLock { connection -> RawConnection? in
            guard let connection else {
                early.withLock { $0.append((bytes, closed)) }
                return nil
            }
            return connection
        }
        target?.record(bytes, closed: closed)
    }

    func flush() {
        let pending = connection.withLock { _ in early.withLock { early in defer { early = [] }; return early } }
        let target = connection.withLock { $0 }
        for (bytes, closed) in pending { target?.record(bytes, closed: closed) }
    }
}

private final class Collector: ChannelInboundHandler, Sendable {
    typealias InboundIn = ByteBuffer
    let box: StateBox

    init(_ box: StateBox) {
        self.box = box
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var buffer = unwrapInboundIn(data)
        box.deliver(buffer.readBytes(length: buffer.readableBytes), closed: false)
    }

    func channelInactive(context: ChannelHandlerContext) {
        box.deliver(nil, closed: true)
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}
