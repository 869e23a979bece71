import NIOCore
import NIOPosix
import NIOSSL
import SluiceNet

/// One TCP (or TLS) connection to Redis carrying pipelined commands.
public final class RedisConnection: Sendable {
    let channel: any Channel
    private let commandTimeout: TimeAmount

    private init(channel: any Channel, commandTimeout: TimeAmount) {
        self.channel = channel
        self.commandTimeout = commandTimeout
    }

    public var eventLoop: any EventLoop { channel.eventLoop }
    public var isActive: Bool { channel.isActive }
    public var closeFuture: EventLoopFuture<Void> { channel.closeFuture }

    /// Opens a connection, then authenticates and selects the database before returning it.
    /// `onPush` makes it a subscriber connection: replies nobody waits for go there.
    static func connect(
        _ configuration: RedisConfiguration,
        sslContext: NIOSSLContext?,
        on eventLoop: any EventLoop,
        onPush: (@Sendable (RESPValue) -> Void)? = nil
    ) async throws(RedisClientError) -> RedisConnection {
        let bootstrap = ClientBootstrap(group: eventLoop)
            .connectTimeout(configuration.connectTimeout)
            .channelOption(.tcpOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                do {
                    let sync = channel.pipeline.syncOperations
                    if let sslContext {
                        let handler = try NIOSSLClientHandler(
                            context: sslContext,
                            serverHostname: SocketAddress(literal: configuration.host, port: 0) == nil ? configuration.host : nil)
                        try sync.addHandler(handler)
                    }
                    try sync.addHandler(RedisPipelineHandler(maxPending: configuration.maxPendingCommands, onPush: onPush))
                    return channel.eventLoop.makeSucceededVoidFuture()
                } catch {
                    return channel.eventLoop.makeFailedFuture(error)
                }
            }
        let channel: any Channel
        do {
            channel = try await bootstrap.connect(hostOrAddress: configuration.host, port: configuration.port).get()
        } catch let error as ChannelError where error == .connectTimeout(configuration.connectTimeout) {
            throw .timeout
        } catch {
            throw .connectFailed("\(error)")
        }
        let connection = RedisConnection(channel: channel, commandTimeout: configuration.commandTimeout)
        do {
            try await connection.handshake(configuration)
        } catch {
            connection.close()
            throw error
        }
        return connection
    }

    private func handshake(_ configuration: RedisConfiguration) async throws(RedisClientError) {
        if let password = configuration.password {
            if let username = configuration.username {
                _ = try await send(RedisCommand("AUTH", username, password))
            } else {
                _ = try await send(RedisCommand("AUTH", password))
            }
        }
        if configuration.database != 0 {
            _ = try await send(RedisCommand("SELECT", configuration.database))
        }
        if configuration.requiresMasterRole {
            let role = try await send(RedisCommand("ROLE"))
            guard let kind = role.array?.first?.string, kind == "master" else {
                throw .connectFailed("\(configuration.host):\(configuration.port) is not a master")
            }
        }
    }

    /// Sends one command and waits for its reply. A top-level error reply is thrown as
    /// `.server`; a broken connection as `.connectionClosed`; no reply in time as `.timeout`.
    public func send(_ command: RedisCommand, timeout: TimeAmount? = nil) async throws(RedisClientError) -> RESPValue {
        let promise = channel.eventLoop.makePromise(of: RESPValue.self)
        let request = RedisRequest(
            command: command.encoded, promise: promise,
            deadline: .now() + (timeout ?? commandTimeout))
        channel.write(request).whenFailure { _ in
            // The pipeline handler never saw the request (channel already closed).
            promise.fail(RedisClientError.connectionClosed)
        }
        do {
            return try await promise.futureResult.get()
        } catch let error as RedisClientError {
            throw error
        } catch {
            throw .connectionClosed
        }
    }

    /// Writes `commands` back to back on this connection (nothing else comes between them),
    /// then waits for every reply: an `ASK` redirection needs `ASKING` right before the command,
    /// and `WAIT` counts the replicas that have this connection's writes so far.
    func sendPipelined(_ commands: [RedisCommand], timeout: TimeAmount? = nil) async -> [Result<RESPValue, RedisClientError>] {
        let deadline = NIODeadline.now() + (timeout ?? commandTimeout)
        let promises = commands.map { command in
            let promise = channel.eventLoop.makePromise(of: RESPValue.self)
            channel.write(RedisRequest(command: command.encoded, promise: promise, deadline: deadline)).whenFailure { _ in
                promise.fail(RedisClientError.connectionClosed)
            }
            return promise
        }
        var results: [Result<RESPValue, RedisClientError>] = []
        for promise in promises {
            do {
                results.append(.success(try await promise.futureResult.get()))
            } catch let error as RedisClientError {
                results.append(.failure(error))
            } catch {
                results.append(.failure(.connectionClosed))
            }
        }
        return results
    }

    /// Sends a command whose replies arrive as pushes (SUBSCRIBE): nothing waits for a reply.
    func sendWithoutReply(_ command: RedisCommand) async throws(RedisClientError) {
        do {
            try await channel.write(RedisRequest(command: command.encoded, promise: nil, deadline: .now())).get()
        } catch {
            throw .connectionClosed
        }
    }

    public func close() {
        channel.close(promise: nil)
    }
}
