import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import Synchronization

public struct UpstreamTimeouts: Sendable {
    public var connect: TimeAmount = .seconds(2)
    public var firstByte: TimeAmount = .seconds(60)
    public var idle: TimeAmount = .seconds(30)
    public var total: TimeAmount = .seconds(600)

    public init() {}
}

public enum UpstreamError: Error, Sendable, Equatable {
    case connectFailed(String)
    case timeout(UpstreamTimeout)
    /// The connection closed before the response was complete.
    case connectionClosed
    case protocolError(String)
}

/// What to send upstream. The body is small (a request's JSON, already read and checked by the
/// gateway), sent in one write.
public struct UpstreamRequest: Sendable {
    public var method: HTTPMethod
    public var path: String
    public var headers: HTTPHeaders
    public var body: ByteBuffer

    public init(method: HTTPMethod = .POST, path: String, headers: HTTPHeaders, body: ByteBuffer = ByteBuffer()) {
        self.method = method
        self.path = path
        self.headers = headers
        self.body = body
    }
}

/// A keep-alive HTTP/1.1 client for model servers, built on NIOHTTP1 with one pool of idle
/// connections per backend and event loop (the inbound request's loop: no thread hops between
/// the client's socket and the backend's). Bounded: at most `maxIdlePerPool` idle connections
/// are kept; concurrency per backend is bounded by its `max_concurrency` slots.
public final class UpstreamClient: Sendable {
    public let timeouts: UpstreamTimeouts
    let maxIdlePerPool: Int
    let group: any EventLoopGroup
    let sslContext: NIOSSLContext?
    private let idle = Mutex<[PoolKey: [UpstreamConnection]]>([:])
    private let logger: Logger

    struct PoolKey: Hashable {
        let backend: ObjectIdentifier
        let eventLoop: ObjectIdentifier
    }

    public init(timeouts: UpstreamTimeouts = .init(), maxIdlePerPool: Int = 256,
                eventLoopGroup: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
                logger: Logger = Logger(label: "sluice.upstream")) throws {
        self.timeouts = timeouts
        self.maxIdlePerPool = maxIdlePerPool
        self.group = eventLoopGroup
        self.sslContext = try NIOSSLContext(configuration: .makeClientConfiguration())
        self.logger = logger
    }

    /// Sends the request and waits for the response head. A reused connection that turns out
    /// dead before any response byte is retried once on a fresh connection (safe: the backend
    /// saw nothing). The response body must be read to the end or `abandon`ed.
    public func send(_ request: UpstreamRequest, to backend: Backend,
                     on eventLoop: (any EventLoop)? = nil) async throws(UpstreamError) -> UpstreamResponse {
        let loop = eventLoop ?? group.next()
        let key = PoolKey(backend: ObjectIdentifier(backend), eventLoop: ObjectIdentifier(loop))
        var head = HTTPRequestHead(version: .http1_1, method: request.method, uri: backend.basePath + request.path,
                                   headers: request.headers)
        head.headers.replaceOrAdd(name: "host", value: backend.port == 80 || backend.port == 443 ? backend.host : "\(backend.host):\(backend.port)")
        head.headers.replaceOrAdd(name: "content-length", value: String(request.body.readableBytes))
        for (name, value) in backend.headers { head.headers.replaceOrAdd(name: name, value: value) }

        while true {
            let (connection, reused) = try await lease(key, backend: backend, loop: loop)
            do {
                let responseHead = try await connection.send(head, body: request.body)
                return UpstreamResponse(connection: connection, head: responseHead, client: self, poolKey: key)
            } catch {
                connection.close()
                if reused, error == .connectionClosed { continue }  // a stale keep-alive connection
                throw error
            }
        }
    }

    private func lease(_ key: PoolKey, backend: Backend, loop: any EventLoop) async throws(UpstreamError) -> (UpstreamConnection, Bool) {
        while let pooled = idle.withLock({ $0[key]?.popLast() }) {
            if pooled.isActive { return (pooled, true) }
        }
        return (try await UpstreamConnection.connect(to: backend, on: loop,
                                                     sslContext: backend.useTLS ? backend.tls ?? sslContext : nil, timeouts: timeouts), false)
    }

    func giveBack(_ connection: UpstreamConnection, key: PoolKey) {
        let kept = idle.withLock { idle -> Bool in
            var connections = idle[key, default: []]
            guard connections.count < maxIdlePerPool, connection.isActive else { return false }
            connections.append(connection)
            idle[key] = connections
            return true
        }
        if !kept { connection.close() }
    }

    /// Closes every idle connection (shutdown).
    public func shutdown() {
        let all = idle.withLock { idle in
            defer { idle.removeAll() }
            return idle.values.flatMap { $0 }
        }
        for connection in all { connection.close() }
    }
}

/// A response whose head has arrived; the body is read chunk by chunk, with back-pressure
/// (nothing is read from the backend faster than the caller asks).
public final class UpstreamResponse: @unchecked Sendable {
    // @unchecked: used by one task at a time, like its connection.
    public let head: HTTPResponseHead
    private let connection: UpstreamConnection
    /// The loop the backend connection runs on (the request's own, when it named one).
    public var eventLoop: any EventLoop { connection.eventLoop }
    private let client: UpstreamClient
    private let poolKey: UpstreamClient.PoolKey
    private var finished = false

    init(connection: UpstreamConnection, head: HTTPResponseHead, client: UpstreamClient, poolKey: UpstreamClient.PoolKey) {
        self.connection = connection
        self.head = head
        self.client = client
        self.poolKey = poolKey
    }

    /// The next body chunk, or nil at the end (the connection then returns to its pool).
    public func nextChunk() async throws(UpstreamError) -> ByteBuffer? {
        guard !finished else { return nil }
        do {
            guard let chunk = try await connection.nextChunk() else {
                complete()
                return nil
            }
            return chunk
        } catch {
            finished = true
            connection.close()
            throw error
        }
    }

    /// Whether `nextChunk()` has its answer here already (more body or the end, read with the
    /// last chunk), so it will not wait for the backend. False when unknown (off the loop).
    public var hasBufferedPart: Bool { !finished && connection.hasBufferedPart }

    /// Reads the whole body, up to `limit` bytes.
    public func collect(limit: Int) async throws(UpstreamError) -> ByteBuffer {
        guard !finished else { return ByteBuffer() }
        do {
            let body = try await connection.body(limit: limit)
            complete()
            return body
        } catch {
            finished = true
            connection.close()
            throw error
        }
    }

    private func complete() {
        finished = true
        if head.isKeepAlive { client.giveBack(connection, key: poolKey) } else { connection.close() }
    }

    /// Gives up on the rest of the body: closes the connection, so the backend stops generating.
    public func abandon() {
        guard !finished else { return }
        finished = true
        connection.close()
    }
}
