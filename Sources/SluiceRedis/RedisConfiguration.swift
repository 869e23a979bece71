import Foundation
import NIOCore
import NIOSSL

/// Where Redis is and how patiently to talk to it.
public struct RedisConfiguration: Sendable {
    public var host: String
    public var port: Int
    /// ACL user name; nil with a password means the legacy single-password `AUTH`.
    public var username: String?
    public var password: String?
    public var database: Int
    /// Set for `rediss://`; replace it to trust a private CA.
    public var tls: TLSConfiguration?

    public var connectTimeout: TimeAmount = .seconds(1)
    public var commandTimeout: TimeAmount = .seconds(1)
    /// Multiplexed connections in the pool; each carries many pipelined commands.
    public var poolSize: Int = 2
    /// Commands waiting for replies on one connection. Past this a call fails at once with
    /// `.overloaded`: a stalled Redis costs bounded memory, and callers their failure policy.
    public var maxPendingCommands = 10_000
    /// Reconnect backoff: doubles from `minimum` after each failed attempt, up to `maximum`.
    public var reconnectBackoff: (minimum: TimeAmount, maximum: TimeAmount) = (.milliseconds(25), .seconds(2))

    /// The wait before the next attempt after `failures` failed ones: `minimum · 2^(failures-1)`,
    /// capped at `maximum`, scaled by `jitter` (0.5...1 spreads a fleet's reconnects).
    static func backoffDelay(failures: Int, minimum: TimeAmount, maximum: TimeAmount, jitter: Double = 1) -> TimeAmount {
        let exponent = min(max(failures - 1, 0), 20)
        let raw = min(minimum.nanoseconds << exponent, maximum.nanoseconds)
        return .nanoseconds(Int64(Double(raw) * jitter))
    }

    public init(host: String = "127.0.0.1", port: Int = 6379, username: String? = nil,
                password: String? = nil, database: Int = 0, tls: TLSConfiguration? = nil) {
        self.host = host
        self.port = port
        self.username = username
        self.password = password
        self.database = database
        self.tls = tls
    }

    /// Parses `redis://[user:pass@]host:port[/db]` and `rediss://...` (TLS).
    public init(url text: String) throws(RedisConfigurationError) {
        guard let url = URLComponents(string: text), let scheme = url.scheme?.lowercased() else {
            throw .invalid("not a URL: expected redis://host:port[/db]")
        }
        guard scheme == "redis" || scheme == "rediss" else {
            throw .invalid("scheme must be redis:// or rediss://, not \(scheme)://")
        }
        guard let host = url.host, !host.isEmpty else {
            throw .invalid("missing host")
        }
        let port = url.port ?? 6379
        guard (1...65535).contains(port) else { throw .invalid("port \(port) is out of range") }
        var database = 0
        let path = url.path.trimmingCharacters(in: CharacterSet(charactersIn: "/"))
        if !path.isEmpty {
            guard let number = Int(path), number >= 0 else {
                throw .invalid("database must be a non-negative number, not '\(path)'")
            }
            database = number
        }
        // "redis://:secret@host" is the legacy password-only form.
        let user = url.user.flatMap { $0.isEmpty ? nil : $0 }
        let password = url.password
        self.init(host: host, port: port, username: password == nil ? nil : user,
                  password: password ?? user, database: database,
                  tls: scheme == "rediss" ? TLSConfiguration.makeClientConfiguration() : nil)
    }
}

public enum RedisConfigurationError: Error, Sendable, CustomStringConvertible {
    case invalid(String)

    public var description: String {
        switch self {
        case .invalid(let reason): return "invalid Redis URL: \(reason)"
        }
    }
}
