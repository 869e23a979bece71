import GRPCCore
import GRPCNIOTransportHTTP2Posix
import Logging
import NIOCore
import NIOPosix
import ServiceLifecycle

/// The gRPC listener (`grpc_listen`): HTTP/2 over plaintext, `inference.GRPCInferenceService`
/// only (other methods answer UNIMPLEMENTED). Bounded like the HTTP listener: connections (one
/// cap for both listeners), the message size, streams per connection, idle connections, and
/// pings a client may send.
public struct KServeListener: Service {
    public struct Limits: Sendable {
        /// The largest request message (a `ModelInfer` with its tensors).
        public var maxRequestBytes = 4 * 1024 * 1024
        /// Calls at once on one connection.
        public var maxConcurrentStreams = 256
        /// A connection with no call this long is closed (GOAWAY).
        public var idleTimeout: Duration = .seconds(300)
        /// Takes a connection slot (false: over the cap, the connection is closed at once);
        /// `releaseConnection` gives it back when the connection closes.
        public var acquireConnection: @Sendable () -> Bool = { true }
        public var releaseConnection: @Sendable () -> Void = {}

        public init() {}
    }

    let host: String
    let port: Int
    let limits: Limits
    let proxy: KServeProxy
    let group: MultiThreadedEventLoopGroup
    let logger: Logger
    let onListening: @Sendable (Int) -> Void

    public init(host: String, port: Int, limits: Limits, proxy: KServeProxy, group: MultiThreadedEventLoopGroup = .singleton,
                logger: Logger, onListening: @escaping @Sendable (Int) -> Void) {
        self.host = host
        self.port = port
        self.limits = limits
        self.proxy = proxy
        self.group = group
        self.logger = logger
        self.onListening = onListening
    }

    public func run() async throws {
        let limits = limits
        let transport = HTTP2ServerTransport.Posix(
            address: host.contains(":") ? .ipv6(host: host, port: port) : .ipv4(host: host, port: port),
            transportSecurity: .plaintext,
            config: .defaults { config in
                config.rpc.maxRequestPayloadSize = limits.maxRequestBytes
                config.http2.maxConcurrentStreams = limits.maxConcurrentStreams
                config.connection.maxIdleTime = limits.idleTimeout
                // Calls in flight get this long after a GOAWAY (shutdown, max idle) to finish.
                config.connection.maxGraceTime = .seconds(30)
                config.channelDebuggingCallbacks.onAcceptTCPConnection = { channel in
                    guard limits.acquireConnection() else {
                        // The channel is not active yet (closing it now fails): close it when it is.
                        return channel.eventLoop.makeCompletedFuture {
                            try channel.pipeline.syncOperations.addHandler(CloseWhenActive(), position: .first)
                        }
                    }
                    channel.closeFuture.whenComplete { _ in limits.releaseConnection() }
                    return channel.eventLoop.makeSucceededVoidFuture()
                }
            },
            eventLoopGroup: group)
        let server = GRPCServer(transport: transport, services: [proxy])
        try await withThrowingDiscardingTaskGroup { group in
            group.addTask { try await server.serve() }
            let address = try await transport.listeningAddress
            logger.info("gRPC listener ready", metadata: ["address": "\(address)"])
            if let port = address.ipv4?.port { onListening(port) }
            // In-flight calls finish; new ones are refused.
            try? await gracefulShutdown()
            server.beginGracefulShutdown()
        }
    }
}

/// Closes a connection over `listener.max_connections` as soon as it is active, before it is
/// read from.
final class CloseWhenActive: ChannelInboundHandler, Sendable {
    typealias InboundIn = NIOAny

    func channelActive(context: ChannelHandlerContext) {
        context.close(promise: nil)
    }
}
