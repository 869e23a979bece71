import Foundation
import NIOCore
import NIOSSL
import Synchronization

/// One model server. Tracks outstanding requests (for least-outstanding routing and
/// `max_concurrency`) and its health (passive ejection after consecutive failures).
public final class Backend: Sendable {
    public let url: String
    public let host: String
    public let port: Int
    public let useTLS: Bool
    /// A KServe v2 gRPC server (`grpc://` or `grpcs://`) rather than an OpenAI HTTP one.
    public let speaksGRPC: Bool
    /// Path prefix of the base URL (e.g. "" or "/openai"); request paths are appended.
    public let basePath: String
    public let weight: Int
    public let maxConcurrency: Int?
    /// Sent on every request to this backend (its API key as `authorization`, extra headers);
    /// they replace any of the same name. Never logged.
    let headers: [(String, String)]
    /// The same, for a transport of another module (gRPC metadata). Never logged.
    public var credentialHeaders: [(String, String)] { headers }
    /// This backend's TLS (a private CA, a client certificate); nil: the client's default.
    let tls: NIOSSLContext?
    /// The PEM files `tls` was made from, for a transport with TLS of its own (gRPC).
    public let tlsFiles: TLSFiles?

    public struct TLSFiles: Sendable {
        public var caFile: String?
        public var certFile: String?
        public var keyFile: String?

        public init(caFile: String?, certFile: String?, keyFile: String?) {
            self.caFile = caFile
            self.certFile = certFile
            self.keyFile = keyFile
        }
    }

    private struct State {
        var outstanding = 0
        var consecutiveFailures = 0
        var ejectedUntil: ContinuousClock.Instant?
    }

    private let state = Mutex(State())
    static let ejectAfterFailures = 3
    static let ejectionTime: Duration = .seconds(5)

    public init(url text: String, weight: Int = 1, maxConcurrency: Int? = nil, headers: [(String, String)] = [],
                tls: NIOSSLContext? = nil, tlsFiles: TLSFiles? = nil) throws(BackendURLError) {
        guard let url = URLComponents(string: text), let scheme = url.scheme?.lowercased(),
              ["http", "https", "grpc", "grpcs"].contains(scheme), let host = url.host, !host.isEmpty else {
            throw BackendURLError(url: text)
        }
        self.url = text
        self.host = host
        self.useTLS = scheme == "https" || scheme == "grpcs"
        self.speaksGRPC = scheme.hasPrefix("grpc")
        self.port = url.port ?? (useTLS ? 443 : 80)
        self.basePath = url.path.hasSuffix("/") ? String(url.path.dropLast()) : url.path
        self.weight = max(1, weight)
        self.maxConcurrency = maxConcurrency
        self.headers = headers
        self.tls = tls
        self.tlsFiles = tlsFiles
    }

    public var outstanding: Int { state.withLock { $0.outstanding } }

    public func isHealthy(now: ContinuousClock.Instant = .now) -> Bool {
        state.withLock { ($0.ejectedUntil ?? now) <= now }
    }

    /// Takes a concurrency slot unless the backend is at `max_concurrency`.
    func tryAcquire() -> Bool {
        state.withLock { state in
            if let maxConcurrency, state.outstanding >= maxConcurrency { return false }
            state.outstanding += 1
            return true
        }
    }

    /// Gives back the slot `BackendSelector.acquire` took.
    public func releaseSlot() {
        state.withLock { $0.outstanding -= 1 }
    }

    /// Routing score: outstanding requests per unit of weight.
    func load() -> Double {
        state.withLock { Double($0.outstanding) / Double(weight) }
    }

    public func recordSuccess() {
        state.withLock { state in
            state.consecutiveFailures = 0
            state.ejectedUntil = nil
        }
    }

    /// Returns true when this failure ejected the backend for a while.
    @discardableResult
    public func recordFailure(now: ContinuousClock.Instant = .now) -> Bool {
        state.withLock { state in
            state.consecutiveFailures += 1
            guard state.consecutiveFailures >= Self.ejectAfterFailures else { return false }
            state.ejectedUntil = now + Self.ejectionTime
            return true
        }
    }
}

public struct BackendURLError: Error, CustomStringConvertible {
    public let url: String
    public var description: String { "backend url must be http(s)://host[:port][/path] or grpc(s)://host:port, not '\(url)'" }
}

/// Picks a backend for a request: healthy, under its `max_concurrency`, least outstanding per
/// weight; ties broken at random so equal backends share load.
public struct BackendSelector: Sendable {
    public init() {}

    /// Acquires a slot on the chosen backend; the caller must `release` it. `excluding` lists
    /// backends already tried for this request.
    public func acquire(from backends: [Backend], excluding: [Backend] = []) -> Backend? {
        let now = ContinuousClock.now
        var candidates = backends.filter { backend in
            !excluding.contains { $0 === backend } && backend.isHealthy(now: now)
        }
        // Everything ejected: try the ejected ones rather than fail outright.
        if candidates.isEmpty { candidates = backends.filter { backend in !excluding.contains { $0 === backend } } }
        for backend in candidates.shuffled().sorted(by: { $0.load() < $1.load() }) where backend.tryAcquire() {
            return backend
        }
        return nil
    }
}
