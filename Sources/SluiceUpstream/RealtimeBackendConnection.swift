import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import NIOWebSocket
import SluiceNet

/// A WebSocket to a backend's Realtime endpoint (`GET <base>/v1/realtime?model=…` upgraded),
/// with the backend's credentials and headers, over TLS when its URL says https. Messages come
/// whole (fragments are joined, up to `maxMessageBytes`); reads follow the reader's pace.
public enum RealtimeBackendConnection {
    public typealias Socket = NIOAsyncChannel<WebSocketFrame, WebSocketFrame>

    public enum ConnectError: Error, Equatable {
        /// The backend could not be reached, or did not answer the handshake in time.
        case unreachable(String)
        /// The backend answered the handshake without upgrading (its HTTP status).
        case refused(status: Int)
    }

    private enum Upgrade: Sendable {
        case websocket(Socket)
        case refused(Int)
    }

    /// Opens the socket. `pathAndQuery` is appended to the backend's base path; `headers` are
    /// the client's that pass through (e.g. `openai-beta`), before the backend's own.
    public static func connect(to backend: Backend, pathAndQuery: String, headers: [(String, String)],
                               on eventLoop: any EventLoop, sslContext: NIOSSLContext?, timeout: TimeAmount,
                               maxMessageBytes: Int) async throws(ConnectError) -> Socket {
        var head = HTTPRequestHead(version: .http1_1, method: .GET, uri: backend.basePath + pathAndQuery)
        head.headers.add(name: "host", value: backend.port == 80 || backend.port == 443 ? backend.host : "\(backend.host):\(backend.port)")
        head.headers.add(name: "content-length", value: "0")
        for (name, value) in headers { head.headers.replaceOrAdd(name: name, value: value) }
        for (name, value) in backend.headers { head.headers.replaceOrAdd(name: name, value: value) }
        let request = head
        let context = backend.useTLS ? backend.tls ?? sslContext : nil
        let upgrade: EventLoopFuture<Upgrade>
        do {
            upgrade = try await ClientBootstrap(group: eventLoop)
                .connectTimeout(timeout)
                .channelOption(.tcpOption(.tcp_nodelay), value: 1)
                .connect(hostOrAddress: backend.host, port: backend.port) { channel in
                    channel.eventLoop.makeCompletedFuture {
                        let sync = channel.pipeline.syncOperations
                        try sync.addTLS(context, toward: backend)
                        let upgrader = NIOTypedWebSocketClientUpgrader<Upgrade>(maxFrameSize: maxMessageBytes) { channel, _ in
                            channel.eventLoop.makeCompletedFuture {
                                try channel.pipeline.syncOperations.addHandler(
                                    NIOWebSocketFrameAggregator(minNonFinalFragmentSize: 0, maxAccumulatedFrameCount: 4096,
                                                                maxAccumulatedFrameSize: maxMessageBytes))
                                return .websocket(try Socket(wrappingChannelSynchronously: channel))
                            }
                        }
                        var configuration = NIOUpgradableHTTPClientPipelineConfiguration(upgradeConfiguration: .init(
                            upgradeRequestHead: request, upgraders: [upgrader],
                            notUpgradingCompletionHandler: { channel in
                                // The handshake was answered without an upgrade: a refusal.
                                channel.close(promise: nil)
                                return channel.eventLoop.makeSucceededFuture(.refused(0))
                            }))
                        // A backend may speak first (`session.created`) in the 101's own packet.
                        configuration.leftOverBytesStrategy = .forwardBytes
                        return try sync.configureUpgradableHTTPClientPipeline(configuration: configuration)
                    }
                }
        } catch {
            throw .unreachable("\(error)")
        }
        do {
            switch try await withTimeout(upgrade, timeout, on: eventLoop) {
            case .websocket(let socket): return socket
            case .refused(let status): throw ConnectError.refused(status: status)
            }
        } catch let error as ConnectError {
            throw error
        } catch {
            throw .unreachable("\(error)")
        }
    }

    /// `future`'s value, or a timeout error after `timeout` (the channel is then closed by the caller's
    /// error path: nobody holds it).
    private static func withTimeout<Value: Sendable>(_ future: EventLoopFuture<Value>, _ timeout: TimeAmount,
                                                     on eventLoop: any EventLoop) async throws -> Value {
        let promise = eventLoop.makePromise(of: Value.self)
        let settled = NIOLoopBoundBox(false, eventLoop: eventLoop)
        let timer = eventLoop.scheduleTask(in: timeout) {
            guard !settled.value else { return }
            settled.value = true
            promise.fail(ConnectError.unreachable("no handshake answer in time"))
        }
        future.hop(to: eventLoop).whenComplete { result in
            timer.cancel()
            guard !settled.value else {
                if case .success(let value) = result, let upgrade = value as? Upgrade, case .websocket(let socket) = upgrade {
                    socket.channel.close(promise: nil)  // answered too late: nobody will read it
                }
                return
            }
            settled.value = true
            promise.completeWith(result)
        }
        return try await promise.futureResult.get()
    }
}

extension UpstreamClient {
    /// A Realtime WebSocket to `backend` on `eventLoop` (the client connection's), with this
    /// client's TLS defaults; the handshake may take the connect plus first-byte timeouts.
    public func realtimeSocket(to backend: Backend, pathAndQuery: String, headers: [(String, String)],
                               on eventLoop: (any EventLoop)?, maxMessageBytes: Int)
        async throws(RealtimeBackendConnection.ConnectError) -> RealtimeBackendConnection.Socket {
        try await RealtimeBackendConnection.connect(
            to: backend, pathAndQuery: pathAndQuery, headers: headers, on: eventLoop ?? group.next(),
            sslContext: sslContext, timeout: timeouts.connect + timeouts.firstByte, maxMessageBytes: maxMessageBytes)
    }
}
