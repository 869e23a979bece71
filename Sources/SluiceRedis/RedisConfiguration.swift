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
    /// One server (`host`, `port`), a Redis Cluster found from seed nodes, or a master found
    /// through Sentinel.
    public var topology: RedisTopology = .standalone
    /// Connections check `ROLE` and refuse a server that is not a master (set under Sentinel).
    public var requiresMasterRole = false

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

    /// Parses `redis://[user:pass@]host:port[/db]` and `rediss://...` (TLS), a cluster as
    /// `redis+cluster://[user:pass@]h1:p1,h2:p2` (seed nodes), and Sentinel as
    /// `redis+sentinel://[user:pass@]s1:p1,s2:p2/mastername[/db]` (the credentials are the master's).
    public init(url text: String) throws(RedisConfigurationError) {
        if let plus = text.range(of: "+"), let schemeEnd = text.range(of: "://"), plus.lowerBound < schemeEnd.lowerBound {
            try self.init(multiNodeURL: text, base: String(text[..<plus.lowerBound]).lowercased(),
                          kind: String(text[plus.upperBound..<schemeEnd.lowerBound]).lowercased(),
                          rest: String(text[schemeEnd.upperBound...]))
            return
        }
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

/// How the client finds the Redis it talks to.
public enum RedisTopology: Sendable, Equatable {
    case standalone
    /// Seed nodes; the client learns the rest of the cluster from them.
    case cluster(seeds: [RedisNodeAddress])
    /// Sentinels watching the master named `masterName`.
    case sentinel(sentinels: [RedisNodeAddress], masterName: String)
}

extension RedisConfiguration {
    /// `redis+cluster://` and `redis+sentinel://` (and `rediss+…` for TLS): a list of
    /// `host:port` where a URL has one host, which `URLComponents` does not parse.
    private init(multiNodeURL text: String, base: String, kind: String, rest: String) throws(RedisConfigurationError) {
        guard base == "redis" || base == "rediss" else { throw .invalid("scheme must be redis+\(kind):// or rediss+\(kind)://") }
        guard kind == "cluster" || kind == "sentinel" else {
            throw .invalid("scheme must be redis+cluster:// or redis+sentinel://, not \(base)+\(kind)://")
        }
        var authority = Substring(rest)
        var path = Substring("")
        if let slash = rest.firstIndex(of: "/") {
            authority = rest[..<slash]
            path = rest[rest.index(after: slash)...]
        }
        var username: String?
        var password: String?
        if let at = authority.lastIndex(of: "@") {
            let credentials = authority[..<at]
            authority = authority[authority.index(after: at)...]
            let parts = credentials.split(separator: ":", maxSplits: 1, omittingEmptySubsequences: false)
            let user = parts[0].removingPercentEncoding.flatMap { $0.isEmpty ? nil : $0 }
            if parts.count == 2 {
                username = user
                password = parts[1].removingPercentEncoding
            } else {
                password = user
            }
        }
        var nodes: [RedisNodeAddress] = []
        for item in authority.split(separator: ",") {
            let node = item.contains(":") ? item : item + ":\(kind == "sentinel" ? 26379 : 6379)"
            guard let address = RedisNodeAddress(node) else { throw .invalid("'\(item)' is not host:port") }
            nodes.append(address)
        }
        guard let first = nodes.first else { throw .invalid("no \(kind == "cluster" ? "seed nodes" : "sentinels") given") }
        let segments = path.split(separator: "/")
        var database = 0
        let topology: RedisTopology
        if kind == "cluster" {
            guard segments.isEmpty else { throw .invalid("a cluster has no database number (only database 0)") }
            topology = .cluster(seeds: nodes)
        } else {
            guard let name = segments.first, segments.count <= 2 else {
                throw .invalid("expected redis+sentinel://s1:p1,s2:p2/mastername[/db]")
            }
            if segments.count == 2 {
                guard let number = Int(segments[1]), number >= 0 else {
                    throw .invalid("database must be a non-negative number, not '\(segments[1])'")
                }
                database = number
            }
            topology = .sentinel(sentinels: nodes, masterName: String(name))
        }
        self.init(host: first.host, port: first.port, username: username, password: password, database: database,
                  tls: base == "rediss" ? TLSConfiguration.makeClientConfiguration() : nil)
        self.topology = topology
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
