import Foundation
import Hummingbird
import HummingbirdTLS
import NIOSSL
import Logging
import ServiceLifecycle
import SluiceDataPlane
import SluiceLimiter
import SluiceMockUpstream
import SluiceServer
import SluiceTenancy
import SluiceTestSupport
import SluiceUpstream
import Testing

/// A whole gateway replica in-process (port 0 listeners) over the stack's Redis and PostgreSQL,
/// with mock model servers: `mock-model` (healthy), `slow-model` (20 tokens/s), `dying-model`
/// (drops the connection after 3 tokens), `hung-model` (never answers), `dead-model` (nothing
/// listening), `latent-model` (300 ms before its first byte), `silent-model` (reports no usage),
/// `absurd-model` (reports negative and huge counts). One tenant with one key for them.
struct GatewayHarness: Sendable {
    let publicPort: Int
    let adminPort: Int
    let store: TenantStore
    let tenant: Tenant
    let key: String
    let keyID: String
    /// SIGTERM, as far as the gateway can tell; returns once every service has stopped.
    let triggerGracefulShutdown: @Sendable () async -> Void
    /// SIGTERM without waiting for the stop.
    let beginGracefulShutdown: @Sendable () async -> Void

    static let secret = "gateway-test-admin-secret-0123456789"

    static func run(keyLimits: Limits = Limits(), models: [String]? = nil, leaseSeconds: Int = 120,
                    redisURL: String = TestEnvironment.redisURL, failurePolicy: RedisFailurePolicy = .closed,
                    listenerLimits: ListenerLimits = .init(), drainDelay: Duration = .zero, settleReplicas: Int = 0,
                    extraModels: [String] = [], clientAddress: ClientAddressPolicy = .init(),
                    configure: @Sendable (inout GatewayConfiguration) -> Void = { _ in },
                    _ body: @escaping @Sendable (GatewayHarness) async throws -> Void) async throws {
        try await PostgresFixture.withClient { _, store in
            try await withThrowingTaskGroup(of: Void.self) { group in
                var fast = MockUpstreamBehavior()
                fast.completionTokens = 8
                var slow = MockUpstreamBehavior()
                slow.completionTokens = 400
                slow.tokensPerSecond = 20
                var dying = MockUpstreamBehavior()
                dying.completionTokens = 50
                dying.disconnectAfterTokens = 3
                var hung = MockUpstreamBehavior()
                hung.hang = true
                var paced = MockUpstreamBehavior()
                paced.completionTokens = 20
                paced.tokensPerSecond = 40
                var latent = MockUpstreamBehavior()
                latent.latency = .milliseconds(300)
                var silent = MockUpstreamBehavior()
                silent.completionTokens = 8
                silent.usageReport = .omitted
                var absurd = MockUpstreamBehavior()
                absurd.usageReport = .raw(#"{"prompt_tokens": -3, "completion_tokens": 1e12, "total_tokens": "many"}"#)
                let mocks = [("mock-model", fast), ("slow-model", slow), ("dying-model", dying), ("hung-model", hung),
                             ("paced-model", paced), ("latent-model", latent), ("silent-model", silent), ("absurd-model", absurd)]
                var ports: [Int] = []
                for (_, behavior) in mocks {
                    ports.append(try await startMock(behavior, in: &group))
                }
                let deadPort = try await RedisServerProcess.freePort()

                var configuration = GatewayConfiguration()
                configuration.listen = .init(host: "127.0.0.1", port: 0)
                configuration.adminListen = .init(host: "127.0.0.1", port: 0)
                configuration.redisURL = redisURL
                configuration.failurePolicy = failurePolicy
                configuration.redisSettleReplicas = settleReplicas
                configuration.databaseURL = TestEnvironment.databaseURL
                configuration.adminJWTSecret = secret
                configuration.keyPepper = "gateway-test-pepper"
                configuration.maxRequestBytes = 64 * 1024
                configuration.leaseSeconds = leaseSeconds
                configuration.listenerLimits = listenerLimits
                configuration.drain.delay = drainDelay
                configuration.clientAddress = clientAddress
                // Long enough that a fast mock on a loaded 2-core machine never times out (504s broke
                // unrelated tests); hung-model still shows the timeout, 2 s later.
                configuration.upstream.firstByte = .seconds(2)
                configuration.models = zip(mocks.map(\.0), ports).map { name, port in
                    .init(name: name, backends: [.init(url: "http://127.0.0.1:\(port)")])
                } + [.init(name: "dead-model", backends: [.init(url: "http://127.0.0.1:\(deadPort)")]),
                     .init(name: "forbidden-model", backends: [.init(url: "http://127.0.0.1:\(ports[0])")])]
                    + extraModels.map { .init(name: $0, backends: [.init(url: "http://127.0.0.1:\(ports[0])")]) }
                configure(&configuration)
                let (listening, continuation) = AsyncStream.makeStream(of: Gateway.Listening.self)
                var logger = Logger(label: "gateway-test")
                logger.logLevel = ProcessInfo.processInfo.environment["SLUICE_TEST_LOG_LEVEL"].flatMap(Logger.Level.init(rawValue:)) ?? .error
                let gateway = try await Gateway.serviceGroup(configuration, logger: logger) { continuation.yield($0) }
                let stopped = AsyncStream.makeStream(of: Void.self)
                group.addTask {
                    defer { stopped.continuation.finish() }  // every later wait for the stop returns at once
                    try await gateway.run()
                }
                var iterator = listening.makeAsyncIterator()
                guard let bound = await iterator.next(), let publicPort = bound.publicPort, let adminPort = bound.adminPort else {
                    throw HarnessError.didNotListen
                }

                let tenant = try await store.createTenant(name: "e2e", limits: Limits(), modelLimits: [:], actor: "test")
                let (record, key) = try await store.createKey(
                    tenantID: tenant.id, name: "e2e", limits: keyLimits,
                    models: models ?? ["mock-model", "slow-model", "dying-model", "hung-model", "dead-model", "paced-model"],
                    expiresAt: nil, hasher: KeyHasher(pepper: configuration.keyPepper), actor: "test")
                let shutdown: @Sendable () async -> Void = {
                    await gateway.triggerGracefulShutdown()
                    if !(await Self.waitForStop(stopped.stream, within: .seconds(60))) {
                        Issue.record("the gateway did not stop within 60 s of SIGTERM")
                    }
                }
                try await body(GatewayHarness(publicPort: publicPort, adminPort: adminPort, store: store, tenant: tenant,
                                              key: key, keyID: record.id, triggerGracefulShutdown: shutdown,
                                              beginGracefulShutdown: { await gateway.triggerGracefulShutdown() }))
                // Stops as a replica does on SIGTERM, so its metering worker ledgers what it read
                // (every gateway of this process shares one consumer name, so entries a cancelled
                // worker read would wait for the claim time before any other test's gateway saw them).
                await shutdown()
                group.cancelAll()
            }
        }
    }

    /// A mock model server on a free port (over TLS with `tls`), running in `group`.
    static func startMock(_ behavior: MockUpstreamBehavior, tls: TLSConfiguration? = nil,
                          in group: inout ThrowingTaskGroup<Void, any Error>) async throws -> Int {
        let (ports, continuation) = AsyncStream.makeStream(of: Int.self)
        var logger = Logger(label: "mock")
        logger.logLevel = .critical
        let app = Application(
            router: MockUpstream(behavior: behavior, models: ["mock-model"]).router(),
            server: try tls.map { try .tls(.http1(), tlsConfiguration: $0) } ?? .http1(),
            configuration: .init(address: .hostname("127.0.0.1", port: 0)),
            onServerRunning: { channel in continuation.yield(channel.localAddress?.port ?? 0) },
            logger: logger)
        group.addTask { try await app.run() }
        var iterator = ports.makeAsyncIterator()
        return await iterator.next() ?? 0
    }

    enum HarnessError: Error { case didNotListen }

    /// Whether `stopped` finished within `limit`: a stop that hangs fails its test, not the run.
    private static func waitForStop(_ stopped: AsyncStream<Void>, within limit: Duration) async -> Bool {
        await withTaskGroup(of: Bool.self) { group in
            group.addTask {
                var iterator = stopped.makeAsyncIterator()
                await iterator.next()
                return !Task.isCancelled
            }
            group.addTask {
                try? await Task.sleep(for: limit)
                return false
            }
            let first = await group.next() ?? false
            group.cancelAll()
            return first
        }
    }

    /// A chat completion through the public listener.
    func chat(model: String = "mock-model", key: String? = nil, stream: Bool = false, extra: String = "",
              headers: [(String, String)] = [], hangUpAfterBytes: Int? = nil,
              onFirstBytes: (@Sendable () -> Void)? = nil) async throws -> RawHTTPClient.Response {
        let body = #"{"model": "\#(model)", "messages": [{"role": "user", "content": "hello"}], "stream": \#(stream)\#(extra)}"#
        return try await RawHTTPClient.request(port: publicPort, path: "/v1/chat/completions",
                                               headers: [("authorization", "Bearer \(key ?? self.key)")] + headers,
                                               body: body, hangUpAfterBytes: hangUpAfterBytes, onFirstBytes: onFirstBytes)
    }

    func post(_ path: String, body: String, key: String? = nil) async throws -> RawHTTPClient.Response {
        try await RawHTTPClient.request(port: publicPort, path: path, headers: [("authorization", "Bearer \(key ?? self.key)")],
                                        body: body)
    }
}

extension RawHTTPClient.Response {
    var errorCode: String? {
        guard let json = try? JSONSerialization.jsonObject(with: Data(body.utf8)) as? [String: Any] else { return nil }
        return (json["error"] as? [String: Any])?["code"] as? String
    }

    var json: [String: Any] {
        (try? JSONSerialization.jsonObject(with: Data(body.utf8)) as? [String: Any]) ?? [:]
    }
}
