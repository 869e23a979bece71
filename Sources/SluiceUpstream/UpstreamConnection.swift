import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import SluiceNet

/// One keep-alive HTTP/1.1 connection to a backend, used by one request at a time (the pool
/// hands it out as a lease). Reads happen only when the request asks (back-pressure).
final class UpstreamConnection: Sendable {
    private let channel: any Channel
    private let handler: NIOLoopBound<UpstreamResponseHandler>
    let eventLoop: any EventLoop

    private init(channel: any Channel, handler: NIOLoopBound<UpstreamResponseHandler>) {
        self.channel = channel
        self.handler = handler
        self.eventLoop = channel.eventLoop
    }

    var isActive: Bool { channel.isActive }

    static func connect(to backend: Backend, on eventLoop: any EventLoop, sslContext: NIOSSLContext?,
                        timeouts: UpstreamTimeouts) async throws(UpstreamError) -> UpstreamConnection {
        let expired = NIOLockedValueBox<UpstreamTimeout?>(nil)
        do {
            let (channel, handler) = try await ClientBootstrap(group: eventLoop)
                .connectTimeout(timeouts.connect)
                .channelOption(.tcpOption(.tcp_nodelay), value: 1)
                .channelOption(.autoRead, value: false)
                .connect(hostOrAddress: backend.host, port: backend.port) { channel in
                    channel.eventLoop.makeCompletedFuture {
                        let sync = channel.pipeline.syncOperations
                        // The socket stays registered for reading between responses (see ReadAheadHandler).
                        try sync.addHandler(ReadAheadHandler())
                        try sync.addTLS(sslContext, toward: backend)
                        try sync.addHTTPClientHandlers()
                        try sync.addHandler(UpstreamDeadlineHandler(
                            firstByte: timeouts.firstByte, idle: timeouts.idle, total: timeouts.total, expired: expired))
                        let handler = UpstreamResponseHandler { expired.withLockedValue { $0 } }
                        try sync.addHandler(handler)
                        return (channel, NIOLoopBound(handler, eventLoop: channel.eventLoop))
                    }
                }
            return UpstreamConnection(channel: channel, handler: handler)
        } catch let error as ChannelError {
            if case .connectTimeout = error { throw .connectFailed("connect timeout") }
            throw .connectFailed("\(error)")
        } catch {
            throw .connectFailed("\(error)")
        }
    }

    /// Writes the request and waits for the response head.
    func send(_ head: HTTPRequestHead, body: ByteBuffer) async throws(UpstreamError) -> HTTPResponseHead {
        let promise = eventLoop.makePromise(of: HTTPResponseHead.self)
        let handler = self.handler
        let channel = self.channel
        onLoop {
            channel.write(HTTPClientRequestPart.head(head), promise: nil)
            channel.write(HTTPClientRequestPart.body(.byteBuffer(body)), promise: nil)
            channel.writeAndFlush(HTTPClientRequestPart.end(nil), promise: nil)
            handler.value.awaitHead(promise)
        }
        return try await Self.value(promise.futureResult)
    }

    /// The next body chunk; nil at the end of the response.
    func nextChunk() async throws(UpstreamError) -> ByteBuffer? {
        let promise = eventLoop.makePromise(of: ByteBuffer?.self)
        let handler = self.handler
        onLoop { handler.value.awaitChunk(promise) }
        return try await Self.value(promise.futureResult)
    }

    /// Whether the next part of the response is buffered already. Only known on the
    /// connection's loop; false elsewhere.
    var hasBufferedPart: Bool {
        eventLoop.inEventLoop && handler.value.hasBufferedPart
    }

    /// The whole body, gathered on the event loop.
    func body(limit: Int) async throws(UpstreamError) -> ByteBuffer {
        let promise = eventLoop.makePromise(of: ByteBuffer.self)
        let handler = self.handler
        onLoop { handler.value.awaitBody(promise, limit: limit) }
        return try await Self.value(promise.futureResult)
    }

    /// Runs `work` on the connection's loop: at once when the caller is on it already (a
    /// request's task runs on its connection's loop), which saves a scheduled task per call.
    private func onLoop(_ work: @escaping @Sendable () -> Void) {
        if eventLoop.inEventLoop { work() } else { eventLoop.execute(work) }
    }

    private static func value<T: Sendable>(_ future: EventLoopFuture<T>) async throws(UpstreamError) -> T {
        do {
            return try await future.get()
        } catch let error as UpstreamError {
            throw error
        } catch {
            throw .connectionClosed
        }
    }

    func close() {
        channel.close(promise: nil)
    }
}

extension ChannelPipeline.SynchronousOperations {
    /// TLS toward `backend` when there is a context for it.
    func addTLS(_ context: NIOSSLContext?, toward backend: Backend) throws {
        guard let context else { return }
        // SNI carries names only: a backend named by address sends none.
        let name = SocketAddress(literal: backend.host, port: backend.port) == nil ? backend.host : nil
        try addHandler(try NIOSSLClientHandler(context: context, serverHostname: name))
    }
}
