import NIOCore
import NIOPosix

/// Connecting without the resolver when the host is already an address.
///
/// `ClientBootstrap.connect(host:port:)` sends every host, even `127.0.0.1`, through
/// `getaddrinfo` on a serial dispatch queue per event loop: one slow DNS answer for another
/// host (a webhook's, an exporter's) delays every later connect made on that loop, including
/// Redis's and the backends'. An address needs no lookup, so it is connected to directly.
extension ClientBootstrap {
    /// Connects to `host`: straight to it when it is an IPv4 or IPv6 address, by name otherwise.
    public func connect(hostOrAddress host: String, port: Int) -> EventLoopFuture<any Channel> {
        if let address = SocketAddress(literal: host, port: port) { return connect(to: address) }
        return connect(host: host, port: port)
    }

    /// The same, for a bootstrap that wraps the channel (`NIOAsyncChannel`) in its initializer.
    public func connect<Output: Sendable>(
        hostOrAddress host: String, port: Int,
        channelInitializer: @escaping @Sendable (any Channel) -> EventLoopFuture<Output>
    ) async throws -> Output {
        if let address = SocketAddress(literal: host, port: port) {
            return try await connect(to: address, channelInitializer: channelInitializer)
        }
        return try await connect(host: host, port: port, channelInitializer: channelInitializer)
    }
}

extension SocketAddress {
    /// The address `text` spells (`10.0.0.7`, `::1`, `[::1]`), or nil for a name.
    public init?(literal text: String, port: Int) {
        let bare = text.hasPrefix("[") && text.hasSuffix("]") ? String(text.dropFirst().dropLast()) : text
        guard let address = try? SocketAddress(ipAddress: bare, port: port) else { return nil }
        self = address
    }
}
