import ArgumentParser
import Foundation
import CoreMetrics
import Logging
import PostgresNIO
import SluiceAdminAPI
import SluiceDataPlane
import SluiceLimiter
import SluiceLog
import ServiceLifecycle
import SluiceServer
import SluiceTenancy

@main
struct Sluice: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sluice",
        abstract: "A multi-tenant gateway for OpenAI-compatible inference servers.",
        subcommands: [Serve.self, Migrate.self, Admin.self])
}

struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Run one gateway replica (public and admin listeners).")
    @Option(help: "YAML configuration file; SLUICE_* environment variables override it") var config: String?
    @Option(help: "trace, debug, info, notice, warning, error") var logLevel: String = "info"

    func run() async throws {
        let level = Logger.Level(rawValue: logLevel) ?? .info
        LoggingSystem.bootstrap { label in JSONLogHandler(label: label, level: level) }
        let logger = Logger(label: "sluice")
        let settings: GatewayConfiguration
        do {
            settings = try GatewayConfiguration.load(file: config, environment: ProcessInfo.processInfo.environment)
        } catch {
            FileHandle.standardError.write(Data("\(error)\n".utf8))
            throw ExitCode(78)  // EX_CONFIG
        }
        // The access log (info) is encoded straight to bytes; `--log-level notice` or above turns it off.
        let accessLog: any AccessLog = level <= .info ? JSONAccessLog(writer: .standardOutput) : DisabledAccessLog()
        // One registry for /metrics: Sluice's metrics, and those of any library using swift-metrics.
        let metrics = SluiceMetricsFactory()
        MetricsSystem.bootstrap(metrics)
        let group = try await Gateway.serviceGroup(settings, logger: logger, accessLog: accessLog,
                                                   metricsFactory: metrics) { listening in
            logger.notice("sluice listening", metadata: [
                "public": "\(settings.listen.host):\(listening.publicPort ?? 0)",
                "admin": "\(settings.adminListen.host):\(listening.adminPort ?? 0)"])
        }
        defer { LogLineWriter.standardOutput.flush() }
        try await group.run()
    }
}

/// `--database-url`, falling back to SLUICE_DATABASE_URL.
struct DatabaseOptions: ParsableArguments {
    @Option(help: "postgres://user:pass@host:port/db (default: $SLUICE_DATABASE_URL)")
    var databaseURL: String?

    func withStore<T>(_ body: (TenantStore, PostgresClient, Logger) async throws -> T) async throws -> T {
        guard let url = databaseURL ?? ProcessInfo.processInfo.environment["SLUICE_DATABASE_URL"] else {
            throw ValidationError("give --database-url or set SLUICE_DATABASE_URL")
        }
        var logger = Logger(label: "sluice.cli")
        logger.logLevel = .error  // the CLI prints its own results
        let client = PostgresClient(configuration: try DatabaseURL.configuration(url), backgroundLogger: logger)
        return try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { await client.run() }
            defer { group.cancelAll() }
            return try await body(TenantStore(client: client, logger: logger), client, logger)
        }
    }
}

struct Migrate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Apply schema migrations (idempotent, safe to run concurrently).")
    @OptionGroup var database: DatabaseOptions

    func run() async throws {
        try await database.withStore { _, client, logger in
            let applied = try await Migrator(client: client, logger: logger).migrate()
            print(applied.isEmpty ? "schema is current" : "applied migrations: \(applied.map(String.init).joined(separator: ", "))")
        }
    }
}

struct Admin: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Admin helpers for scripts and the demo.",
        subcommands: [Token.self, CreateTenant.self, CreateKey.self])

    struct Token: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Mint an admin JWT signed with $SLUICE_ADMIN_JWT_SECRET.")
        @Option(help: "platform_admin, tenant_admin or tenant_viewer") var role: String
        @Option(help: "tenant id (tenant roles)") var tenant: String?
        @Option(help: "lifetime, e.g. 30m, 1h, 7d") var ttl: String = "1h"
        @Option(help: "the sub claim, recorded in the audit log") var sub: String = "cli"

        func run() async throws {
            guard let role = AdminRole(rawValue: role) else {
                throw ValidationError("--role must be platform_admin, tenant_admin or tenant_viewer")
            }
            if role != .platformAdmin, tenant.flatMap(UUID.init(uuidString:)) == nil {
                throw ValidationError("--tenant <uuid> is required for \(role.rawValue)")
            }
            guard let seconds = Self.seconds(ttl) else { throw ValidationError("--ttl must look like 30s, 15m, 1h or 7d") }
            let secret = try Secrets.required("SLUICE_ADMIN_JWT_SECRET")
            let authenticator = try await AdminAuthenticator(hmacSecret: secret)
            let claims = AdminClaims(sub: sub, role: role, tenant: role == .platformAdmin ? nil : tenant?.lowercased(),
                                     expires: Date().addingTimeInterval(seconds))
            print(try await authenticator.token(claims))
        }

        static func seconds(_ text: String) -> TimeInterval? {
            guard let unit = text.last, let value = Double(text.dropLast()), value > 0 else { return nil }
            switch unit {
            case "s": return value
            case "m": return value * 60
            case "h": return value * 3_600
            case "d": return value * 86_400
            default: return nil
            }
        }
    }

    struct CreateTenant: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create a tenant; prints its id.")
        @OptionGroup var database: DatabaseOptions
        @Option var name: String
        @Option(help: "requests per minute") var rpm: Int?
        @Option(help: "tokens per minute") var tpm: Int?

        func run() async throws {
            try await database.withStore { store, _, _ in
                let tenant = try await store.createTenant(
                    name: name, limits: Limits(requestsPerMinute: rpm, tokensPerMinute: tpm), modelLimits: [:], actor: "cli")
                print(tenant.id.uuidString.lowercased())
            }
        }
    }

    struct CreateKey: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create an API key; prints the key (shown only once).")
        @OptionGroup var database: DatabaseOptions
        @Option(help: "tenant id") var tenant: String
        @Option var name: String = "default"
        @Option(help: "requests per minute for this key") var rpm: Int?
        @Option(help: "tokens per minute for this key") var tpm: Int?
        @Option(help: "maximum concurrent requests for this key") var concurrency: Int?

        func run() async throws {
            guard let tenantID = UUID(uuidString: tenant) else { throw ValidationError("--tenant must be a tenant id") }
            let hasher = KeyHasher(pepper: try Secrets.required("SLUICE_KEY_PEPPER"))
            try await database.withStore { store, _, _ in
                let (_, key) = try await store.createKey(
                    tenantID: tenantID, name: name,
                    limits: Limits(requestsPerMinute: rpm, tokensPerMinute: tpm, maxConcurrentRequests: concurrency),
                    models: nil, expiresAt: nil,
                    hasher: hasher, actor: "cli")
                print(key)
            }
        }
    }
}

/// Secrets come only from the environment, or from a file named by `<NAME>_FILE`.
enum Secrets {
    static func required(_ name: String) throws -> String {
        let value = try GatewayConfiguration.secret(name, ProcessInfo.processInfo.environment)
        guard !value.isEmpty else { throw ValidationError("set \(name) (or \(name)_FILE)") }
        return value
    }
}
