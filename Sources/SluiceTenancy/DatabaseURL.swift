import Foundation
import PostgresNIO

/// `postgres://user:pass@host:port/db[?sslmode=disable|prefer|require]` as a PostgresNIO
/// client configuration.
public enum DatabaseURL {
    public static func configuration(_ text: String) throws(DatabaseURLError) -> PostgresClient.Configuration {
        guard let url = URLComponents(string: text), let scheme = url.scheme?.lowercased() else {
            throw .invalid("not a URL: expected postgres://user:pass@host:port/db")
        }
        guard scheme == "postgres" || scheme == "postgresql" else {
            throw .invalid("scheme must be postgres://, not \(scheme)://")
        }
        guard let host = url.host, !host.isEmpty else { throw .invalid("missing host") }
        guard let user = url.user, !user.isEmpty else { throw .invalid("missing user name") }
        let port = url.port ?? 5432
        guard (1...65535).contains(port) else { throw .invalid("port \(port) is out of range") }
        let database = url.path.trimmingCharacters(in: CharacterSet(charactersIn: "/"))
        guard !database.isEmpty else { throw .invalid("missing database name") }
        let mode = url.queryItems?.first { $0.name == "sslmode" }?.value ?? "disable"
        let tls: PostgresClient.Configuration.TLS
        switch mode {
        case "disable": tls = .disable
        case "prefer", "allow": tls = .prefer(.makeClientConfiguration())
        case "require", "verify-ca", "verify-full": tls = .require(.makeClientConfiguration())
        default: throw .invalid("sslmode must be disable, prefer or require, not \(mode)")
        }
        var configuration = PostgresClient.Configuration(host: host, port: port, username: user, password: url.password,
                                                         database: database, tls: tls)
        configuration.options.connectTimeout = .seconds(5)
        return configuration
    }
}

public enum DatabaseURLError: Error, Sendable, CustomStringConvertible {
    case invalid(String)

    public var description: String {
        switch self {
        case .invalid(let reason): return "invalid database URL: \(reason)"
        }
    }
}
