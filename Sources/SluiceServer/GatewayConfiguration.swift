import Foundation
import NIOCore
import SluiceAdminAPI
import SluiceDataPlane
import SluiceLimiter
import SluiceNet
import SluiceRedis
import SluiceTenancy
import SluiceUpstream
import Yams

/// `sluice serve`'s settings: the YAML file, overridden by `SLUICE_*` variables. Secrets come
/// only from the environment (or files named by `<NAME>_FILE`). Anything invalid stops
/// start-up with a message naming the key.
public struct GatewayConfiguration: Sendable {
    public var listen = HostPort(host: "127.0.0.1", port: 8080)
    public var adminListen = HostPort(host: "127.0.0.1", port: 8081)
    /// The KServe v2 gRPC listener (`grpc_listen`); off unless set.
    public var grpcListen: HostPort?
    public var redisURL = "redis://127.0.0.1:6379/0"
    public var databaseURL = "postgres://sluice:sluice@127.0.0.1:5432/sluice"
    public var failurePolicy = RedisFailurePolicy.closed
    public var expectedReplicas = 1
    /// Concurrency slots free themselves this long after a replica stops renewing them.
    public var leaseSeconds = 120
    /// An answered request whose settle has not reached Redis by then (its replica died) is
    /// billed at its reservation. Default: the longer of the lease and the upstream total
    /// timeout, plus 60 s (no running request can be mistaken for an abandoned one).
    public var settleDeadlineSeconds: Int?
    public var maxRequestBytes = 4 * 1024 * 1024
    /// The public listener's timeouts and connection cap.
    public var listenerLimits = ListenerLimits()
    /// Whose forwarding header tells a client's address (for keys limited to source networks).
    public var clientAddress = ClientAddressPolicy()
    /// Realtime sessions (`realtime:`): idle and maximum lengths, largest message.
    public var realtime = RealtimeSettings()
    /// What SIGTERM does: readiness off at once, new connections still served for `delay`
    /// (load balancers and endpoint lists catch up), then in-flight work gets `timeout` to end.
    public var drain = DrainSettings()
    /// OpenTelemetry traces over OTLP/HTTP; off unless an endpoint is set.
    public var tracing = TracingSettings()
    /// How long a cached key is still honoured while Redis and PostgreSQL are both unreachable
    /// (a key revoked meanwhile keeps working this long at most).
    public var keyStaleSeconds = 60
    /// Whole months of ledger kept before the current one (older monthly partitions are
    /// dropped); nil keeps everything.
    public var ledgerRetentionMonths: Int?
    public var billingExport = BillingExportSettings()
    public var webhooks = WebhookSettings()
    /// Commands waiting for replies on one Redis connection; past this, calls fail at once and
    /// the failure policy answers.
    public var redisMaxPendingCommands = 10_000
    /// Replicas that must confirm a settle (`WAIT`) before its usage is trusted to Redis alone;
    /// unconfirmed usage also goes to the ledger directly. Set 1 on a Redis Cluster or Sentinel
    /// setup with replicas; 0 (the default) skips the wait.
    public var redisSettleReplicas = 0
    public var upstream = UpstreamTimeouts()
    /// Path probed on every backend by the active health checks (vLLM and the mock serve /health).
    public var healthPath = "/health"
    /// `GET /v1/models` lists only the configured models a backend says it serves (read every
    /// `backendModelsRefresh`), with the backend's details.
    public var listModelsFromBackends = false
    public var backendModelsRefresh: Duration = .seconds(30)
    public var models: [ModelSettings] = []
    public var adminJWTSecret = ""
    /// Admins from an OpenID Connect provider (besides the HS256 secret); nil: none.
    public var adminOIDC: OIDCSettings?
    public var keyPepper = ""

    public struct TracingSettings: Sendable, Equatable {
        /// The collector's OTLP/HTTP base URL (e.g. http://otel-collector:4318); nil: tracing off.
        public var otlpEndpoint: String?
        /// Share of new traces kept (0...1); a request continuing a sampled trace is always kept.
        public var samplingRatio = 1.0
        public var serviceName = "sluice"

        public init() {}
    }

    public struct DrainSettings: Sendable, Equatable {
        /// Default 0: a bare process stops at once; the Kubernetes and compose examples set 5 s.
        public var delay: Duration = .zero
        public var timeout: Duration = .seconds(30)

        public init() {}
    }

    public struct HostPort: Sendable, Equatable, CustomStringConvertible {
        public var host: String
        public var port: Int
        public var description: String { "\(host):\(port)" }

        public init(host: String, port: Int) {
            self.host = host
            self.port = port
        }
    }

    public struct ModelSettings: Sendable {
        public var name: String
        public var backends: [BackendSettings]
        public var defaultOutputTokens = 1_024
        public var maxOutputTokens = 8_192
        /// Seed prices: the database's catalogue starts from them (see `PriceStore.seed`).
        public var inputUSDPerMillion = 0.0
        public var outputUSDPerMillion = 0.0
        public var cachedInputUSDPerMillion: Double?

        public init(name: String, backends: [BackendSettings]) {
            self.name = name
            self.backends = backends
        }
    }


    public init() {}

    /// Reads the file (if any), then the environment.
    public static func load(file: String?, environment: [String: String]) throws(ConfigurationError) -> GatewayConfiguration {
        var configuration = GatewayConfiguration()
        if let file {
            let text: String
            do {
                text = try String(contentsOfFile: file, encoding: .utf8)
            } catch {
                throw ConfigurationError(key: "--config", problem: "cannot read \(file): \(error.localizedDescription)")
            }
            try configuration.apply(yaml: text)
        }
        try configuration.apply(environment: environment)
        for model in configuration.models.indices {
            for backend in configuration.models[model].backends.indices {
                try configuration.models[model].backends[backend].readAPIKey(
                    environment, key: "models[\(model)].backends[\(backend)]")
            }
        }
        try configuration.validate()
        return configuration
    }

    mutating func apply(yaml text: String) throws(ConfigurationError) {
        let loaded: Any?
        do {
            loaded = try Yams.load(yaml: text)
        } catch {
            throw ConfigurationError(key: "(file)", problem: "not valid YAML: \(error)")
        }
        guard let loaded else { return }
        guard let root = loaded as? [String: Any] else { throw ConfigurationError(key: "(file)", problem: "must be a mapping") }
        let reader = ConfigReader(root, path: "")
        try reader.allow(["listen", "admin_listen", "redis_url", "database_url", "failure_policy", "expected_replicas",
                          "lease_seconds", "max_request_bytes", "upstream", "models", "listener", "key_stale_seconds",
                          "redis_max_pending_commands", "settle_deadline_seconds", "tracing", "redis_cluster_nodes",
                          "redis_settle_replicas", "ledger_retention_months", "billing_export", "webhooks", "admin_oidc",
                          "list_models_from_backends", "realtime", "grpc_listen"])
        if let section = try reader.mapping("realtime") {
            try section.allow(["idle_timeout_seconds", "max_session_seconds", "max_message_bytes"])
            if let value = try section.int("idle_timeout_seconds", 1...86_400) { realtime.idleTimeout = .seconds(value) }
            if let value = try section.int("max_session_seconds", 1...86_400) { realtime.maxSession = .seconds(value) }
            if let value = try section.int("max_message_bytes", 1_024...(64 << 20)) { realtime.maxMessageBytes = value }
        }
        if let value = try reader.bool("list_models_from_backends") { listModelsFromBackends = value }
        if let section = try reader.mapping("admin_oidc") { adminOIDC = try OIDCSettings.read(section) }
        if let section = try reader.mapping("webhooks") { try webhooks.read(section) }
        if let section = try reader.mapping("billing_export") { try billingExport.read(section) }
        if let value = try reader.int("ledger_retention_months", 1...1_200) { ledgerRetentionMonths = value }
        if let value = try reader.int("redis_settle_replicas", 0...16) { redisSettleReplicas = value }
        if let section = try reader.mapping("tracing") {
            try section.allow(["otlp_endpoint", "sampling_ratio", "service_name"])
            if let value = try section.string("otlp_endpoint") { tracing.otlpEndpoint = value }
            if let value = try section.double("sampling_ratio", 0...1) { tracing.samplingRatio = value }
            if let value = try section.string("service_name") { tracing.serviceName = value }
        }
        if let value = try reader.int("settle_deadline_seconds", 1...86_400) { settleDeadlineSeconds = value }
        if let value = try reader.int("key_stale_seconds", 0...86_400) { keyStaleSeconds = value }
        if let value = try reader.int("redis_max_pending_commands", 1...1_000_000) { redisMaxPendingCommands = value }
        if let listener = try reader.mapping("listener") {
            try listener.allow(["header_timeout_ms", "body_timeout_ms", "idle_timeout_ms", "max_connections",
                                "drain_delay_ms", "drain_timeout_ms", "client_address_header", "trusted_proxies"])
            if let value = try listener.string("client_address_header") {
                guard !value.isEmpty, value.utf8.allSatisfy({ $0 == 0x2D || (0x30...0x39).contains($0) || (0x41...0x5A).contains($0)
                                                             || (0x61...0x7A).contains($0) }) else {
                    throw ConfigurationError(key: listener.key("client_address_header"), problem: "must be a header name")
                }
                clientAddress.header = value.lowercased()
            }
            if let values = try listener.strings("trusted_proxies") {
                clientAddress.trustedProxies = try values.map { text throws(ConfigurationError) in
                    guard let network = IPNetwork(text) else {
                        throw ConfigurationError(key: listener.key("trusted_proxies"), problem: "'\(text)' is not an address or CIDR network")
                    }
                    return network
                }
            }
            if let value = try listener.int("drain_delay_ms", 0...600_000) { drain.delay = .milliseconds(value) }
            if let value = try listener.int("drain_timeout_ms", 1...3_600_000) { drain.timeout = .milliseconds(value) }
            if let value = try listener.int("header_timeout_ms", 1...600_000) { listenerLimits.headerTimeout = .milliseconds(Int64(value)) }
            if let value = try listener.int("body_timeout_ms", 1...3_600_000) { listenerLimits.bodyTimeout = .milliseconds(Int64(value)) }
            if let value = try listener.int("idle_timeout_ms", 1...3_600_000) { listenerLimits.idleTimeout = .milliseconds(Int64(value)) }
            if let value = try listener.int("max_connections", 1...10_000_000) { listenerLimits.maxConnections = value }
        }
        if let value = try reader.int("lease_seconds", 1...86_400) { leaseSeconds = value }
        if let value = try reader.string("listen") { listen = try HostPort(value, key: "listen") }
        if let value = try reader.string("admin_listen") { adminListen = try HostPort(value, key: "admin_listen") }
        if let value = try reader.string("grpc_listen") { grpcListen = try HostPort(value, key: "grpc_listen") }
        if let value = try reader.string("redis_url") { redisURL = value }
        if let nodes = try reader.strings("redis_cluster_nodes") {
            guard !nodes.isEmpty, !nodes.contains(where: { $0.contains(",") || $0.contains("/") || $0.contains("@") }) else {
                throw ConfigurationError(key: "redis_cluster_nodes", problem: "must be a non-empty list of host:port")
            }
            redisURL = "redis+cluster://" + nodes.joined(separator: ",")
        }
        if let value = try reader.string("database_url") { databaseURL = value }
        if let value = try reader.string("failure_policy") { failurePolicy = try Self.policy(value, key: "failure_policy") }
        if let value = try reader.int("expected_replicas", 1...1_000) { expectedReplicas = value }
        if let value = try reader.int("max_request_bytes", 1_024...(256 * 1024 * 1024)) { maxRequestBytes = value }
        if let timeouts = try reader.mapping("upstream") {
            try timeouts.allow(["connect_timeout_ms", "first_byte_timeout_ms", "idle_timeout_ms", "total_timeout_ms",
                                "health_path"])
            if let value = try timeouts.string("health_path") {
                guard value.hasPrefix("/") else { throw ConfigurationError(key: timeouts.key("health_path"), problem: "must start with /") }
                healthPath = value
            }
            if let value = try timeouts.int("connect_timeout_ms", 1...600_000) { upstream.connect = .milliseconds(Int64(value)) }
            if let value = try timeouts.int("first_byte_timeout_ms", 1...3_600_000) { upstream.firstByte = .milliseconds(Int64(value)) }
            if let value = try timeouts.int("idle_timeout_ms", 1...3_600_000) { upstream.idle = .milliseconds(Int64(value)) }
            if let value = try timeouts.int("total_timeout_ms", 1...86_400_000) { upstream.total = .milliseconds(Int64(value)) }
        }
        if let list = try reader.list("models") {
            models = try list.map { model throws(ConfigurationError) in
                try model.allow(["name", "backends", "default_output_tokens", "max_output_tokens",
                                 "input_usd_per_million", "output_usd_per_million", "cached_input_usd_per_million"])
                guard let name = try model.string("name"), !name.isEmpty else {
                    throw ConfigurationError(key: model.key("name"), problem: "is required")
                }
                var settings = ModelSettings(name: name, backends: [])
                settings.defaultOutputTokens = try model.int("default_output_tokens", 1...10_000_000) ?? settings.defaultOutputTokens
                settings.maxOutputTokens = try model.int("max_output_tokens", 1...10_000_000) ?? settings.maxOutputTokens
                settings.inputUSDPerMillion = try model.double("input_usd_per_million", 0...1_000_000) ?? 0
                settings.outputUSDPerMillion = try model.double("output_usd_per_million", 0...1_000_000) ?? 0
                settings.cachedInputUSDPerMillion = try model.double("cached_input_usd_per_million", 0...1_000_000)
                guard let backends = try model.list("backends"), !backends.isEmpty else {
                    throw ConfigurationError(key: model.key("backends"), problem: "needs at least one backend")
                }
                settings.backends = try backends.map { backend throws(ConfigurationError) in try BackendSettings.read(backend) }
                return settings
            }
        }
    }

    mutating func apply(environment: [String: String]) throws(ConfigurationError) {
        if let value = environment["SLUICE_LISTEN"] { listen = try HostPort(value, key: "SLUICE_LISTEN") }
        if let value = environment["SLUICE_ADMIN_LISTEN"] { adminListen = try HostPort(value, key: "SLUICE_ADMIN_LISTEN") }
        if let value = environment["SLUICE_GRPC_LISTEN"] { grpcListen = try HostPort(value, key: "SLUICE_GRPC_LISTEN") }
        if let value = environment["SLUICE_REDIS_URL"] { redisURL = value }
        if let number = try Self.integer("SLUICE_REDIS_SETTLE_REPLICAS", environment, 0...16,
                                         problem: "must be an integer from 0 to 16") {
            redisSettleReplicas = number
        }
        if let value = environment["SLUICE_DATABASE_URL"] { databaseURL = value }
        if let value = environment["SLUICE_FAILURE_POLICY"] { failurePolicy = try Self.policy(value, key: "SLUICE_FAILURE_POLICY") }
        if let number = try Self.integer("SLUICE_EXPECTED_REPLICAS", environment, 1...Int.max,
                                         problem: "must be a positive integer") {
            expectedReplicas = number
        }
        if let number = try Self.integer("SLUICE_KEY_STALE_SECONDS", environment, 0...86_400,
                                         problem: "must be an integer from 0 to 86400") {
            keyStaleSeconds = number
        }
        if let number = try Self.integer("SLUICE_DRAIN_DELAY_MS", environment, 0...600_000,
                                         problem: "must be an integer from 0 to 600000") {
            drain.delay = .milliseconds(number)
        }
        if let value = environment["SLUICE_OTLP_ENDPOINT"] { tracing.otlpEndpoint = value.isEmpty ? nil : value }
        if let value = environment["SLUICE_TRACE_SAMPLING_RATIO"] {
            guard let ratio = Double(value), (0...1).contains(ratio) else {
                throw ConfigurationError(key: "SLUICE_TRACE_SAMPLING_RATIO", problem: "must be a number from 0 to 1")
            }
            tracing.samplingRatio = ratio
        }
        adminJWTSecret = try Self.secret("SLUICE_ADMIN_JWT_SECRET", environment)
        keyPepper = try Self.secret("SLUICE_KEY_PEPPER", environment)
        try billingExport.readSecrets(environment)
    }

    /// An integer environment variable within `range`; nil when it is not set.
    private static func integer(_ name: String, _ environment: [String: String], _ range: ClosedRange<Int>,
                                problem: String) throws(ConfigurationError) -> Int? {
        guard let value = environment[name] else { return nil }
        guard let number = Int(value), range.contains(number) else { throw ConfigurationError(key: name, problem: problem) }
        return number
    }

    func validate() throws(ConfigurationError) {
        do {
            _ = try RedisConfiguration(url: redisURL)
        } catch {
            throw ConfigurationError(key: "redis_url", problem: error.description)
        }
        do {
            _ = try DatabaseURL.configuration(databaseURL)
        } catch {
            throw ConfigurationError(key: "database_url", problem: error.description)
        }
        guard adminJWTSecret.utf8.count >= 32 else {
            throw ConfigurationError(key: "SLUICE_ADMIN_JWT_SECRET", problem: "is required and must be at least 32 bytes")
        }
        guard keyPepper.utf8.count >= 16 else {
            throw ConfigurationError(key: "SLUICE_KEY_PEPPER", problem: "is required and must be at least 16 bytes")
        }
        guard !models.isEmpty else { throw ConfigurationError(key: "models", problem: "configure at least one model") }
        var names = Set<String>()
        for (index, model) in models.enumerated() {
            guard names.insert(model.name).inserted else {
                throw ConfigurationError(key: "models[\(index)].name", problem: "'\(model.name)' is configured twice")
            }
            guard model.defaultOutputTokens <= model.maxOutputTokens else {
                throw ConfigurationError(key: "models[\(index)].default_output_tokens", problem: "is above max_output_tokens")
            }
            for (backendIndex, backend) in model.backends.enumerated() {
                let key = "models[\(index)].backends[\(backendIndex)]"
                let made = try backend.makeBackend(key: key)
                if made.speaksGRPC {
                    guard grpcListen != nil else {
                        throw ConfigurationError(key: key + ".url", problem: "is a gRPC backend: set grpc_listen to serve it")
                    }
                    guard made.basePath.isEmpty, backend.url.range(of: #":[0-9]+/?$"#, options: .regularExpression) != nil else {
                        throw ConfigurationError(key: key + ".url", problem: "must be grpc(s)://host:port, with the port and no path")
                    }
                }
            }
        }
        guard listen != adminListen else {
            throw ConfigurationError(key: "admin_listen", problem: "must differ from listen")
        }
        if let grpcListen, grpcListen == listen || grpcListen == adminListen {
            throw ConfigurationError(key: "grpc_listen", problem: "must differ from listen and admin_listen")
        }
    }

    /// The model catalogue with live `Backend` objects.
    public func catalog() throws -> ModelCatalog {
        ModelCatalog(try models.map { model in
            ModelRoute(name: model.name,
                       backends: try model.backends.map { try $0.makeBackend(key: "models.backends") },
                       defaultOutputTokens: model.defaultOutputTokens, maxOutputTokens: model.maxOutputTokens,
                       inputUSDPerMillion: model.inputUSDPerMillion, outputUSDPerMillion: model.outputUSDPerMillion,
                       cachedInputUSDPerMillion: model.cachedInputUSDPerMillion)
        })
    }

    private static func policy(_ value: String, key: String) throws(ConfigurationError) -> RedisFailurePolicy {
        guard let policy = RedisFailurePolicy(rawValue: value) else {
            throw ConfigurationError(key: key, problem: "must be closed, open or local, not '\(value)'")
        }
        return policy
    }

    /// A secret from `NAME`, or from the file named by `NAME_FILE`; "" when neither is set.
    public static func secret(_ name: String, _ environment: [String: String]) throws(ConfigurationError) -> String {
        if let value = environment[name], !value.isEmpty { return value }
        if let path = environment["\(name)_FILE"] {
            do {
                return try String(contentsOfFile: path, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
            } catch {
                throw ConfigurationError(key: "\(name)_FILE", problem: "cannot read \(path)")
            }
        }
        return ""
    }
}

extension GatewayConfiguration.HostPort {
    init(_ text: String, key: String) throws(ConfigurationError) {
        guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]),
              (0...65535).contains(port) else {
            throw ConfigurationError(key: key, problem: "must be host:port, not '\(text)'")
        }
        let host = String(text[..<colon]).trimmingCharacters(in: CharacterSet(charactersIn: "[]"))
        guard !host.isEmpty else { throw ConfigurationError(key: key, problem: "must be host:port, not '\(text)'") }
        self.init(host: host, port: port)
    }
}

public struct ConfigurationError: Error, Sendable, CustomStringConvertible {
    public let key: String
    public let problem: String
    public var description: String { "configuration error: \(key) \(problem)" }
}

/// Typed access to one YAML mapping, naming the full key path in every error.
struct ConfigReader {
    let values: [String: Any]
    let path: String

    init(_ values: [String: Any], path: String) {
        self.values = values
        self.path = path
    }

    func key(_ name: String) -> String { path.isEmpty ? name : "\(path).\(name)" }

    func allow(_ names: Set<String>) throws(ConfigurationError) {
        if let unknown = values.keys.sorted().first(where: { !names.contains($0) }) {
            throw ConfigurationError(key: key(unknown), problem: "is not a known setting")
        }
    }

    func string(_ name: String) throws(ConfigurationError) -> String? {
        guard let value = values[name], !(value is NSNull) else { return nil }
        guard let text = value as? String else { throw ConfigurationError(key: key(name), problem: "must be a string") }
        return text
    }

    func bool(_ name: String) throws(ConfigurationError) -> Bool? {
        guard let value = values[name], !(value is NSNull) else { return nil }
        guard let flag = value as? Bool else { throw ConfigurationError(key: key(name), problem: "must be true or false") }
        return flag
    }

    func int(_ name: String, _ range: ClosedRange<Int>) throws(ConfigurationError) -> Int? {
        guard let value = values[name], !(value is NSNull) else { return nil }
        guard let number = value as? Int, !(value is Bool) else { throw ConfigurationError(key: key(name), problem: "must be an integer") }
        guard range.contains(number) else {
            throw ConfigurationError(key: key(name), problem: "must be between \(range.lowerBound) and \(range.upperBound)")
        }
        return number
    }

    func double(_ name: String, _ range: ClosedRange<Double>) throws(ConfigurationError) -> Double? {
        guard let value = values[name], !(value is NSNull) else { return nil }
        guard let number = (value as? Double) ?? (value as? Int).map(Double.init), !(value is Bool) else {
            throw ConfigurationError(key: key(name), problem: "must be a number")
        }
        guard range.contains(number) else {
            throw ConfigurationError(key: key(name), problem: "must be between \(range.lowerBound) and \(range.upperBound)")
        }
        return number
    }

    func mapping(_ name: String) throws(ConfigurationError) -> ConfigReader? {
        guard let value = values[name], !(value is NSNull) else { return nil }
        guard let mapping = value as? [String: Any] else { throw ConfigurationError(key: key(name), problem: "must be a mapping") }
        return ConfigReader(mapping, path: key(name))
    }

    func strings(_ name: String) throws(ConfigurationError) -> [String]? {
        guard let value = values[name], !(value is NSNull) else { return nil }
        guard let items = value as? [Any], let strings = items as? [String] else {
            throw ConfigurationError(key: key(name), problem: "must be a list of strings")
        }
        return strings
    }

    func list(_ name: String) throws(ConfigurationError) -> [ConfigReader]? {
        guard let value = values[name], !(value is NSNull) else { return nil }
        guard let items = value as? [Any] else { throw ConfigurationError(key: key(name), problem: "must be a list") }
        return try items.enumerated().map { index, item throws(ConfigurationError) in
            guard let mapping = item as? [String: Any] else {
                throw ConfigurationError(key: "\(key(name))[\(index)]", problem: "must be a mapping")
            }
            return ConfigReader(mapping, path: "\(key(name))[\(index)]")
        }
    }
}
