import Logging
import NIOCore
import NIOHTTP1
import ServiceLifecycle

/// Active health checks: every `interval`, a `GET <health path>` to each backend. Failures count
/// like failed requests (three in a row eject the backend for a while); a success brings an
/// ejected backend back at once. Passive ejection on request failures works without this.
public struct BackendHealthChecker: Service {
    let backends: [Backend]
    let client: UpstreamClient
    let path: String
    let interval: Duration
    let logger: Logger

    public init(backends: [Backend], client: UpstreamClient, path: String = "/health", interval: Duration = .seconds(5),
                logger: Logger) {
        self.backends = backends
        self.client = client
        self.path = path
        self.interval = interval
        self.logger = logger
    }

    public func run() async throws {
        await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                await withTaskGroup(of: Void.self) { group in
                    for backend in backends { group.addTask { await check(backend) } }
                }
                try? await Task.sleep(for: interval)
            }
        }
    }

    /// One check; returns whether the backend answered 2xx.
    @discardableResult
    public func check(_ backend: Backend) async -> Bool {
        let wasHealthy = backend.isHealthy()
        do {
            let response = try await client.send(UpstreamRequest(method: .GET, path: path, headers: ["user-agent": "sluice-health"]),
                                                  to: backend)
            _ = try await response.collect(limit: 64 * 1024)
            guard (200..<300).contains(response.head.status.code) else { throw UpstreamError.protocolError("status \(response.head.status.code)") }
            backend.recordSuccess()
            if !wasHealthy { logger.notice("backend healthy again", metadata: ["backend": "\(backend.url)"]) }
            return true
        } catch {
            if backend.recordFailure() {
                logger.warning("backend ejected after failed health checks", metadata: ["backend": "\(backend.url)", "error": "\(error)"])
            }
            return false
        }
    }
}
