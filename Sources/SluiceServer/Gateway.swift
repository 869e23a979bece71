import Foundation
import Hummingbird
import Logging
import NIOCore
import NIOPosix
import OTel
import PostgresNIO
import ServiceLifecycle
import SluiceAdminAPI
import SluiceBilling
import SluiceDataPlane
import SluiceGRPC
import SluiceLimiter
import SluiceRedis
import SluiceTenancy
import SluiceUpstream
import SluiceWebhooks
import Synchronization
import Tracing
import UnixSignals

/// One gateway replica: every long-running part is a `Service` in one `ServiceGroup`, so a
/// SIGTERM stops the listeners accepting, lets in-flight requests and streams finish (bounded),
/// and settles them before the process exits.
public enum Gateway {
    /// The ports actually bound (useful with port 0 in tests).
    public struct Listening: Sendable {
        public var publicPort: Int?
        public var adminPort: Int?
        /// Set when `grpc_listen` is.
        public var grpcPort: Int?
    }

    /// One exporter per billing system configured under `billing_export`.
    static func billingExporters(_ settings: BillingExportSettings, upstream: UpstreamClient, postgres: PostgresClient,
                                 logger: Logger) throws -> [BillingExporter] {
        var sinks: [any BillingSink] = []
        if let stripe = settings.stripe {
            sinks.append(try StripeMeterSink(client: upstream, baseURL: stripe.url, secretKey: stripe.secretKey,
                                             eventName: stripe.eventName, value: .init(rawValue: stripe.value) ?? .costMicroUSD))
        }
        if let openMeter = settings.openMeter {
            sinks.append(try OpenMeterSink(client: upstream, baseURL: openMeter.url, token: openMeter.token,
                                           eventType: openMeter.eventType, source: openMeter.source))
        }
        return sinks.map { BillingExporter(sink: $0, client: postgres, interval: .seconds(settings.intervalSeconds), logger: logger) }
    }

    public static func serviceGroup(
        _ configuration: GatewayConfiguration, logger: Logger, accessLog: (any AccessLog)? = nil,
        metricsFactory: SluiceMetricsFactory = SluiceMetricsFactory(),
        onListening: @escaping @Sendable (Listening) -> Void = { _ in }
    ) async throws -> ServiceGroup {
        var redisConfiguration = try RedisConfiguration(url: configuration.redisURL)
        redisConfiguration.poolSize = max(2, System.coreCount)
        redisConfiguration.maxPendingCommands = configuration.redisMaxPendingCommands
        let redis = try RedisClient(configuration: redisConfiguration, logger: logger, metrics: metricsFactory,
                                    metricsPrefix: "sluice_")
        let postgres = PostgresClient(configuration: try DatabaseURL.configuration(configuration.databaseURL),
                                      backgroundLogger: logger)
        do {
            try await redis.load(LimiterScripts.all)
        } catch {
            logger.warning("redis unreachable at start-up; scripts load on first use", metadata: ["error": "\(error)"])
        }

        let store = TenantStore(client: postgres, logger: logger)
        let hasher = KeyHasher(pepper: configuration.keyPepper)
        var keySettings = KeyResolverSettings()
        keySettings.staleTTL = .seconds(configuration.keyStaleSeconds)
        let resolver = KeyResolver(database: store, redis: redis, hasher: hasher, settings: keySettings, logger: logger)
        var limiterConfiguration = LimiterConfiguration(failurePolicy: configuration.failurePolicy)
        limiterConfiguration.expectedReplicas = configuration.expectedReplicas
        limiterConfiguration.timings.lease = .seconds(configuration.leaseSeconds)
        limiterConfiguration.timings.settleReplicas = configuration.redisSettleReplicas
        // A request unsettled past this is billed at its reservation: by default later than any
        // request can run without renewing (streams renew; whole answers end within the upstream timeout).
        limiterConfiguration.timings.reservationTTL = configuration.settleDeadlineSeconds.map { .seconds($0) }
            ?? max(.seconds(configuration.leaseSeconds), Duration.nanoseconds(configuration.upstream.total.nanoseconds)) + .seconds(60)
        let ledger = UsageLedger(client: postgres, logger: logger)
        let limiter = Limiter(client: redis, configuration: limiterConfiguration, spendSource: ledger, logger: logger)
        let upstream = try UpstreamClient(timeouts: configuration.upstream, logger: logger)
        // Billing systems answer in seconds or not at all: their own deadlines, not the models'.
        var billingTimeouts = UpstreamTimeouts()
        billingTimeouts.connect = .seconds(5)
        billingTimeouts.firstByte = .seconds(30)
        billingTimeouts.total = .seconds(60)
        let billingHTTP = try UpstreamClient(timeouts: billingTimeouts, maxIdlePerPool: 8, logger: logger)
        var webhookTimeouts = UpstreamTimeouts()
        webhookTimeouts.connect = .seconds(5)
        webhookTimeouts.firstByte = .seconds(10)
        webhookTimeouts.total = .seconds(15)
        let webhookHTTP = try UpstreamClient(timeouts: webhookTimeouts, maxIdlePerPool: 4, logger: logger)
        let metrics = DataPlaneMetrics(factory: metricsFactory)
        var settings = DataPlaneSettings()
        settings.maxRequestBodyBytes = configuration.maxRequestBytes
        settings.clientAddress = configuration.clientAddress
        settings.realtime = configuration.realtime
        let catalog = try configuration.catalog()
        let prices = PriceBook(catalog.configuredPrices)
        let priceStore = PriceStore(client: postgres, logger: logger)
        let usageFallback = LedgerFallbackWriter(ledger: ledger, logger: logger)
        let tracing = try Self.tracing(configuration.tracing)
        let modelDirectory = configuration.listModelsFromBackends
            ? BackendModelDirectory(backends: catalog.backends, client: upstream, interval: configuration.backendModelsRefresh,
                                    logger: logger)
            : nil
        let pipeline = InferencePipeline(catalog: catalog, prices: prices, resolver: resolver, limiter: limiter, upstream: upstream,
                                         usageFallback: usageFallback, settings: settings, metrics: metrics, logger: logger,
                                         accessLog: accessLog, tracer: tracing?.tracer, modelDirectory: modelDirectory)

        let listening = ListeningReporter(expectsGRPC: configuration.grpcListen != nil, onListening)
        let connections = ConnectionCounter(maximum: configuration.listenerLimits.maxConnections)
        let readiness = Readiness()
        let publicServer = PublicHTTPServer(
            host: configuration.listen.host, port: configuration.listen.port, pipeline: pipeline,
            maxRequestBytes: configuration.maxRequestBytes, limits: configuration.listenerLimits, connections: connections,
            group: MultiThreadedEventLoopGroup.singleton, readiness: readiness, drainDelay: configuration.drain.delay,
            logger: logger,
            onListening: { port in listening.report(public: port) })

        let webhookSealer = WebhookSecretSealer(pepper: configuration.keyPepper)
        let adminRouter = Router(context: AdminRequestContext.self)
        let identityHTTP = try UpstreamClient(timeouts: webhookTimeouts, maxIdlePerPool: 2, logger: logger)
        let oidc = configuration.adminOIDC.map { settings in
            OIDCVerifier(settings: settings, fetch: { url in try await identityHTTP.fetch(url) }, logger: logger)
        }
        let authenticator = try await AdminAuthenticator(hmacSecret: configuration.adminJWTSecret, oidc: oidc)
        AdminAPI(store: store, hasher: hasher, authenticator: authenticator, redis: redis, prices: priceStore,
                 statements: StatementStore(client: postgres, logger: logger),
                 webhooks: AdminWebhookSettings(store: WebhookStore(client: postgres, logger: logger), sealer: webhookSealer,
                                                allowPrivateNetworks: configuration.webhooks.allowPrivateNetworks),
                 logger: logger)
            .addRoutes(to: adminRouter)
        AdminUI(oidc: configuration.adminOIDC.map(AdminUI.OIDCClient.init)).addRoutes(to: adminRouter)
        let operationsMetrics = OperationsMetrics(factory: metricsFactory, backends: catalog.backends + catalog.grpcBackends)
        OperationsRoutes(redis: redis, postgres: postgres, limiter: limiter, failurePolicy: configuration.failurePolicy,
                         readiness: readiness, registry: metricsFactory.registry, operations: operationsMetrics,
                         usageFallback: usageFallback, prices: prices, logger: logger).add(to: adminRouter)
        let adminApp = Application(
            router: adminRouter,
            configuration: .init(address: .hostname(configuration.adminListen.host, port: configuration.adminListen.port),
                                 serverName: "sluice-admin"),
            onServerRunning: { channel in listening.report(admin: channel.localAddress?.port) },
            logger: logger)

        let subscriber = resolver.makeSubscriber(redis: redis)
        // Metering is background work with connections of its own on a thread of its own, at a
        // lower priority: parsing a pass's stream entries and encoding its ledger rows never
        // stalls an event loop that serves requests (a pass over a busy second is milliseconds).
        let background = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        background.next().execute { BackgroundThread.lowerPriority() }
        var meteringRedisConfiguration = redisConfiguration
        meteringRedisConfiguration.poolSize = 1
        let meteringRedis = try RedisClient(configuration: meteringRedisConfiguration, eventLoopGroup: background, logger: logger)
        let meteringPostgres = PostgresClient(configuration: try DatabaseURL.configuration(configuration.databaseURL),
                                              eventLoopGroup: background, backgroundLogger: logger)
        var metering = MeteringWorker(redis: meteringRedis, limiter: limiter, postgres: meteringPostgres,
                                      ledger: UsageLedger(client: meteringPostgres, logger: logger),
                                      consumer: "\(ProcessInfo.processInfo.hostName)-\(ProcessInfo.processInfo.processIdentifier)",
                                      logger: logger)
        metering.executorLoop = background.next()
        metering.lag = operationsMetrics.meteringLag
        metering.commands = operationsMetrics.meteringCommands
        metering.backlog = operationsMetrics.meteringBacklog
        // Services that run only when configured come first (they stop last).
        var optional: [ServiceGroupConfiguration.ServiceConfiguration] = []
        if let tracing { optional.append(.init(service: tracing.exporter)) }
        if let modelDirectory { optional.append(.init(service: modelDirectory)) }
        // Stopping runs up this list: the gRPC listener right after the HTTP one, its backend clients
        // (among the optional services, first in the list) after everything that uses them.
        var grpcListener: [ServiceGroupConfiguration.ServiceConfiguration] = []
        if let grpcListen = configuration.grpcListen {
            let clients = try KServeBackendClients(backends: catalog.grpcBackends, maxResponseBytes: settings.maxResponseBodyBytes)
            optional.append(.init(service: clients))
            var limits = KServeListener.Limits()
            limits.maxRequestBytes = configuration.maxRequestBytes
            limits.idleTimeout = .nanoseconds(configuration.listenerLimits.idleTimeout.nanoseconds)
            limits.acquireConnection = { connections.tryAcquire() }
            limits.releaseConnection = { connections.release() }
            let proxy = KServeProxy(pipeline: pipeline, backends: clients,
                                    timeout: .nanoseconds(configuration.upstream.total.nanoseconds))
            grpcListener.append(.init(service: KServeListener(host: grpcListen.host, port: grpcListen.port, limits: limits,
                                                              proxy: proxy, logger: logger,
                                                              onListening: { port in listening.report(grpc: port) })))
        }
        var groupConfiguration = ServiceGroupConfiguration(
            services: optional + [
                // The metering thread goes once its connections have closed.
                .init(service: ShutdownHook { background.shutdownGracefully { _ in } }),
                .init(service: meteringPostgres),
                .init(service: postgres),
                // Stops after the listeners, so it writes the usage of the last requests too.
                .init(service: usageFallback),
                // Closes Redis and the upstream pool after everything that uses them has stopped
                // (the metering worker finishes its pass); a settle still queued then fails over
                // to the usage fallback, which stops after it.
                .init(service: ShutdownHook {
                    upstream.shutdown(); billingHTTP.shutdown(); webhookHTTP.shutdown(); redis.shutdown(); meteringRedis.shutdown()
                }),
                .init(service: subscriber),
                .init(service: InvalidationFollower(resolver: resolver, subscriber: subscriber),
                      successTerminationBehavior: .ignore),
                .init(service: metering),
            ] + (try Self.billingExporters(configuration.billingExport, upstream: billingHTTP, postgres: postgres, logger: logger)
                .map { .init(service: $0) }) + [
                .init(service: WebhookDispatcher(client: postgres, http: webhookHTTP, sealer: webhookSealer,
                                                 policy: configuration.webhooks.retryPolicy, logger: logger)),
                .init(service: WebhookScheduler(client: postgres, ledger: ledger,
                                                interval: .seconds(configuration.webhooks.checkIntervalSeconds), logger: logger)),
                .init(service: PriceBookRefresher(book: prices, store: priceStore,
                                                  seed: catalog.routes.values.map(\.configuredPrice), logger: logger)),
                .init(service: LedgerPartitions(client: postgres, logger: logger,
                                                retentionMonths: configuration.ledgerRetentionMonths)),
                .init(service: BackendHealthChecker(backends: catalog.backends, client: upstream,
                                                    path: configuration.healthPath, logger: logger)),
                .init(service: adminApp),
            ] + grpcListener + [
                // Last in the list, so the first to stop on SIGTERM: no new requests, in-flight ones finish.
                .init(service: publicServer),
            ],
            gracefulShutdownSignals: [.sigterm, .sigint],
            logger: logger)
        groupConfiguration.maximumGracefulShutdownDuration = configuration.drain.delay + configuration.drain.timeout
        groupConfiguration.maximumCancellationDuration = .seconds(5)
        return ServiceGroup(configuration: groupConfiguration)
    }
}

extension Gateway {
    /// The OTLP/HTTP tracer and the service that batches and exports its spans; nil when off.
    static func tracing(_ settings: GatewayConfiguration.TracingSettings) throws -> (tracer: any Tracer, exporter: any Service)? {
        guard let endpoint = settings.otlpEndpoint else { return nil }
        var otel = OTel.Configuration.default
        otel.serviceName = settings.serviceName
        otel.logs.enabled = false
        otel.metrics.enabled = false
        otel.traces.sampler = .parentBasedTraceIDRatio(ratio: settings.samplingRatio) ?? .parentBasedAlwaysOn
        otel.traces.otlpExporter.protocol = .httpProtobuf
        otel.traces.otlpExporter.endpoint = endpoint.hasSuffix("/v1/traces") ? endpoint
            : endpoint.trimmingCharacters(in: CharacterSet(charactersIn: "/")) + "/v1/traces"
        otel.traces.batchSpanProcessor.scheduleDelay = .seconds(1)
        let (tracer, exporter) = try OTel.makeTracingBackend(configuration: otel)
        return (tracer, exporter)
    }
}

/// Feeds key invalidations from the subscriber to the resolver.
struct InvalidationFollower: Service {
    let resolver: KeyResolver
    let subscriber: RedisSubscriber

    func run() async throws {
        // Stops on graceful shutdown by itself: the subscriber it reads from stops after it.
        await cancelWhenGracefulShutdown { await resolver.followInvalidations(subscriber.events) }
    }
}

/// Runs `action` when the group shuts down (after the services listed after it have stopped).
struct ShutdownHook: Service {
    let action: @Sendable () -> Void

    func run() async throws {
        try? await gracefulShutdown()
        action()
    }
}

/// Collects the listeners' ports and reports once all are known.
final class ListeningReporter: Sendable {
    private let state = Mutex(Gateway.Listening())
    private let expectsGRPC: Bool
    private let callback: @Sendable (Gateway.Listening) -> Void

    init(expectsGRPC: Bool, _ callback: @escaping @Sendable (Gateway.Listening) -> Void) {
        self.expectsGRPC = expectsGRPC
        self.callback = callback
    }

    func report(public port: Int? = nil, admin: Int? = nil, grpc: Int? = nil) {
        let ready: Gateway.Listening? = state.withLock { state in
            if let port { state.publicPort = port }
            if let admin { state.adminPort = admin }
            if let grpc { state.grpcPort = grpc }
            return state.publicPort != nil && state.adminPort != nil && (!expectsGRPC || state.grpcPort != nil) ? state : nil
        }
        if let ready { callback(ready) }
    }
}
