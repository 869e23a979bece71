import NIOCore
import NIOSSL

/// Opens configured connections; holds the TLS context, which is costly to build, once.
struct RedisConnector: Sendable {
    let configuration: RedisConfiguration
    let sslContext: NIOSSLContext?

    init(configuration: RedisConfiguration) throws {
        self.configuration = configuration
        self.sslContext = try configuration.tls.map { try NIOSSLContext(configuration: $0) }
    }

    func connect(
        on eventLoop: any EventLoop,
        onPush: (@Sendable (RESPValue) -> Void)? = nil
    ) async throws(RedisClientError) -> RedisConnection {
        try await RedisConnection.connect(configuration, sslContext: sslContext, on: eventLoop, onPush: onPush)
    }
}
