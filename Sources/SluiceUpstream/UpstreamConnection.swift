import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL

/// One keep-alive HTTP/1.1 connection to a backend.
///
/// Used by one request at a time (the pool hands it out as a lease), which is why the inbound
/// iterator may live in a class: NIOAsyncChannel's scoped `executeThenClose` cannot outlive one
/// request, and a pooled connection must.
final class UpstreamConnection: @unchecked Sendable {
    private let asyncChannel: NIOAsyncChannel<HTTPClientResponsePart, HTTPClientRequestPart>
    private var inbound: NIOAsyncChannelInboundStream<HTTPClientResponsePart>.AsyncIterator
    private let outbound: NIOAsyncChannelOutboundWriter<HTTPClientRequestPart>
    let expired: NIOLockedValueBox<UpstreamTimeout?>
    let eventLoop: any EventLoop

    @available(*, deprecated, message: "kept-alive connections need their streams beyond one scope")
    private init(_ asyncChannel: NIOAsyncChannel<HTTPClientResponsePart, HTTPClientRequestPart>,
                 expired: NIOLockedValueBox<UpstreamTimeout?>) {
        self.asyncChannel = asyncChannel
        self.inbound = asyncChannel.inbound.makeAsyncIterator()
        self.outbound = asyncChannel.outbound
        self.expired = expired
        self.eventLoop = asyncChannel.channel.eventLoop
    }

    var isActive: Bool { asyncChannel.channel.isActive }

    static func connect(to backend: Backend, on eventLoop: any EventLoop, sslContext: NIOSSLContext?,
                        timeouts: UpstreamTimeouts) async throws(UpstreamError) -> UpstreamConnection {
        let expired = NIOLockedValueBox<UpstreamTimeout?>(nil)
        do {
            let channel = try await ClientBootstrap(group: eventLoop)
                .connectTimeout(timeouts.connect)
                .channelOption(.socketOption(.tcp_nodelay), value: 1)
                .connect(host: backend.host, port: backend.port) { channel in
                    channel.eventLoop.makeCompletedFuture {
                        let sync = channel.pipeline.syncOperations
                        if let sslContext {
                            try sync.addHandler(try NIOSSLClientHandler(context: sslContext, serverHostname: backend.host))
                        }
                        try sync.addHTTPClientHandlers()
                        try sync.addHandler(UpstreamDeadlineHandler(
                            firstByte: timeouts.firstByte, idle: timeouts.idle, total: timeouts.total, expired: expired))
                        return try NIOAsyncChannel<HTTPClientResponsePart, HTTPClientRequestPart>(
                            wrappingChannelSynchronously: channel)
                    }
                }
            return UpstreamConnection(channel, expired: expired)
        } catch let error as ChannelError {
            if case .connectTimeout = error { throw .connectFailed("connect timeout") }
            throw .connectFailed("\(error)")
        } catch {
            throw .connectFailed("\(error)")
        }
    }

    func send(_ head: HTTPRequestHead, body: ByteBuffer) async throws(UpstreamError) {
        do {
            try await outbound.write(contentsOf: [.head(head), .body(.byteBuffer(body)), .end(nil)])
        } catch {
            throw .connectionClosed
        }
    }

    /// The next response part; nil when the connection ended. A passed deadline throws.
    func next() async throws(UpstreamError) -> HTTPClientResponsePart? {
        let part: HTTPClientResponsePart?
        do {
            part = try await inbound.next()
        } catch {
            if let timeout = expired.withLockedValue({ $0 }) { throw .timeout(timeout) }
            throw .connectionClosed
        }
        if part == nil, let timeout = expired.withLockedValue({ $0 }) { throw .timeout(timeout) }
        return part
    }

    func close() {
        outbound.finish()
        asyncChannel.channel.close(promise: nil)
    }

    deinit {
        // NIO requires the writer to be finished before it goes away.
        outbound.finish()
    }
}
