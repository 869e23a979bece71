import GRPCCore
import GRPCNIOTransportHTTP2Posix
import NIOPosix
import ServiceLifecycle
import SluiceUpstream

/// One gRPC client (an HTTP/2 connection, kept open and re-dialled with back-off) per gRPC
/// backend, run as a service: it opens with the gateway and closes after the listener.
public final class KServeBackendClients: Service, Sendable {
    typealias Client = GRPCClient<HTTP2ClientTransport.Posix>

    private let clients: [ObjectIdentifier: Client]

    /// `maxResponseBytes` bounds one answer (a tensor); larger ones fail the call.
    public init(backends: [Backend], maxResponseBytes: Int,
                group: MultiThreadedEventLoopGroup = .singleton) throws {
        var clients: [ObjectIdentifier: Client] = [:]
        for backend in backends where backend.speaksGRPC {
            let transport = try HTTP2ClientTransport.Posix(
                target: .dns(host: backend.host, port: backend.port),
                transportSecurity: Self.security(backend),
                config: .defaults { config in
                    config.http2.maxFrameSize = 1 << 20
                    // A dead backend fails calls at once (UNAVAILABLE) while it is re-dialled.
                    config.backoff = .init(initial: .milliseconds(100), max: .seconds(5), multiplier: 1.6, jitter: 0.2)
                    config.connection.maxIdleTime = .seconds(300)
                },
                eventLoopGroup: group)
            clients[ObjectIdentifier(backend)] = GRPCClient(transport: transport)
        }
        self.clients = clients
        self.maxResponseBytes = maxResponseBytes
    }

    let maxResponseBytes: Int

    func client(for backend: Backend) -> Client? { clients[ObjectIdentifier(backend)] }

    public func run() async throws {
        try await withThrowingDiscardingTaskGroup { group in
            for client in clients.values {
                group.addTask { try await client.runConnections() }
            }
            // Close after the listener (later in the group): calls in flight finish first.
            try? await gracefulShutdown()
            for client in clients.values { client.beginGracefulShutdown() }
        }
    }

    /// `grpc://`: plaintext; `grpcs://`: TLS, with the backend's CA bundle and client
    /// certificate when it has them.
    private static func security(_ backend: Backend) -> HTTP2ClientTransport.Posix.TransportSecurity {
        guard backend.useTLS else { return .plaintext }
        return .tls { tls in
            if let ca = backend.tlsFiles?.caFile { tls.trustRoots = .certificates([.file(path: ca, format: .pem)]) }
            if let cert = backend.tlsFiles?.certFile, let key = backend.tlsFiles?.keyFile {
                tls.certificateChain = [.file(path: cert, format: .pem)]
                tls.privateKey = .file(path: key, format: .pem)
            }
        }
    }
}
