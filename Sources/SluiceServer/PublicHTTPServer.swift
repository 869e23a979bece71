import Logging
import NIOCore
import NIOExtras
import NIOHTTP1
import NIOPosix
import ServiceLifecycle
import SluiceDataPlane
import SluiceNet

/// The public listener: a plain SwiftNIO HTTP/1.1 server (keep-alive, pipelining, the
/// connection guard's timeouts and cap) with `PublicRequestHandler` at the end of each
/// connection's pipeline. No framework in between: a request is decoded, handled and answered
/// on its connection's event loop.
///
/// On graceful shutdown it turns readiness off at once and keeps serving, new connections
/// included, for the drain delay (so load balancers stop sending before the port closes); then
/// it stops accepting, lets every connection finish the request in hand (kept-alive connections
/// close after it), and returns once all are closed.
struct PublicHTTPServer: Service {
    let host: String
    let port: Int
    let pipeline: InferencePipeline
    let maxRequestBytes: Int
    let limits: ListenerLimits
    let connections: ConnectionCounter
    let group: any EventLoopGroup
    let readiness: Readiness
    let drainDelay: Duration
    let logger: Logger
    let onListening: @Sendable (Int?) -> Void

    func run() async throws {
        let quiescing = ServerQuiescingHelper(group: group)
        let server = try await ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 1024)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .serverChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(quiescing.makeServerChannelHandler(channel: channel))
                }
            }
            .childChannelOption(.tcpOption(.tcp_nodelay), value: 1)
            .childChannelOption(.maxMessagesPerRead, value: 16)
            .childChannelInitializer { [pipeline, maxRequestBytes, limits, connections] channel in
                channel.eventLoop.makeCompletedFuture {
                    let operations = channel.pipeline.syncOperations
                    try operations.configureHTTPServerPipeline(withErrorHandling: true)
                    try operations.addHandler(ConnectionGuardHandler(limits: limits, counter: connections))
                    try operations.addHandler(PublicRequestHandler(pipeline: pipeline, maxRequestBytes: maxRequestBytes))
                    // In front of everything (the guard's byte watcher too): see ReadAheadHandler.
                    try operations.addHandler(ReadAheadHandler(), position: .first)
                }
            }
            .bind(host: host, port: port)
            .get()
        onListening(server.localAddress?.port)
        logger.info("public listener started", metadata: ["address": "\(host):\(server.localAddress?.port ?? port)"])

        try? await gracefulShutdown()
        readiness.startDraining()
        logger.notice("draining: readiness is off; still serving during the drain delay",
                      metadata: ["delay": "\(drainDelay)"])
        try? await Task.sleep(for: drainDelay)
        // Stop accepting; each connection closes once its current response has ended.
        let drained = group.next().makePromise(of: Void.self)
        quiescing.initiateShutdown(promise: drained)
        await withTaskCancellationHandler {
            try? await drained.futureResult.get()
        } onCancel: {
            // Past the group's grace period: stop waiting for the last connections.
            drained.succeed()
        }
    }
}
