import CoreMetrics
import Metrics
import Logging
import NIOCore
import NIOPosix
import Synchronization

/// The Redis client the rest of Sluice uses: a small pool of multiplexed, pipelined
/// connections spread over the event loops, reconnected on demand with backoff.
///
/// Safe to share between tasks. Calls never block an event loop; each waits at most the
/// command timeout (plus the connect timeout when a connection must be opened first).
public final class RedisClient: Sendable {
    public let configuration: RedisConfiguration
    private let router: Router
    let logger: Logger
    let eventLoopGroup: any EventLoopGroup
    private let latency: CommandLatency

    /// Where commands go: one server's pool, or a router that finds the server.
    private enum Router: Sendable {
        case standalone(RedisNodePool)
        case cluster(RedisClusterRouter)
        case sentinel(RedisSentinelRouter)
    }

    /// `metrics` gets `redis_command_duration_seconds` by command name (the commands are the
    /// caller's code, so the label is bounded).
    public init(
        configuration: RedisConfiguration,
        eventLoopGroup: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        logger: Logger = Logger(label: "sluice.redis"),
        metrics: any MetricsFactory = NOOPMetricsHandler.instance,
        metricsPrefix: String = ""
    ) throws {
        self.latency = CommandLatency(factory: metrics, label: metricsPrefix + "redis_command_duration_seconds")
        self.configuration = configuration
        self.logger = logger
        self.eventLoopGroup = eventLoopGroup
        switch configuration.topology {
        case .standalone:
            router = .standalone(try RedisNodePool(address: RedisNodeAddress(host: configuration.host, port: configuration.port),
                                                   configuration: configuration, eventLoopGroup: eventLoopGroup))
        case .cluster(let seeds):
            router = .cluster(RedisClusterRouter(seeds: seeds, configuration: configuration,
                                                 eventLoopGroup: eventLoopGroup, logger: logger))
        case .sentinel(let sentinels, let masterName):
            router = .sentinel(RedisSentinelRouter(sentinels: sentinels, masterName: masterName, configuration: configuration,
                                                   eventLoopGroup: eventLoopGroup, logger: logger))
        }
    }

    /// True on a Redis Cluster: a multi-key command must keep its keys in one slot.
    public var isCluster: Bool {
        if case .cluster = router { return true }
        return false
    }

    /// Sends one command. Server error replies throw `.server`; see `RedisClientError`.
    public func send(_ command: RedisCommand, timeout: TimeAmount? = nil) async throws(RedisClientError) -> RESPValue {
        let started = ContinuousClock.now
        defer { latency.record(command.name, .now - started) }
        switch router {
        case .standalone(let pool):
            return try await pool.connection().send(command, timeout: timeout)
        case .cluster(let cluster):
            return try await cluster.send(command, timeout: timeout).reply
        case .sentinel(let sentinel):
            return try await sentinel.send(command, timeout: timeout).reply
        }
    }

    /// Sends a write, then `WAIT replicas timeout` on the same connection: the reply and how
    /// many replicas acknowledged the write (a failover can lose a write no replica has).
    public func sendReplicated(_ command: RedisCommand, replicas: Int,
                               waitTimeout: Duration) async throws(RedisClientError) -> (reply: RESPValue, replicas: Int) {
        let started = ContinuousClock.now
        defer { latency.record(command.name, .now - started) }
        let waitTime = TimeAmount(waitTimeout)
        let wait = RedisCommand("WAIT", replicas, max(1, Int(waitTime.nanoseconds / 1_000_000)))
        let timeout = configuration.commandTimeout + waitTime
        let reply: RESPValue
        let acknowledged: RESPValue?
        switch router {
        case .standalone(let pool):
            let replies = await (try await pool.connection()).sendPipelined([command, wait], timeout: timeout)
            reply = try replies[0].get()
            acknowledged = try replies[1].get()
        case .cluster(let cluster):
            (reply, acknowledged) = try await cluster.send(command, timeout: timeout, then: wait)
        case .sentinel(let sentinel):
            (reply, acknowledged) = try await sentinel.send(command, timeout: timeout, then: wait)
        }
        return (reply, Int(acknowledged?.int ?? 0))
    }

    public func send(_ name: String, _ arguments: any RESPArgument...) async throws(RedisClientError) -> RESPValue {
        try await send(RedisCommand(name, arguments))
    }

    /// Sends a keyless command to every master: on a cluster each one, otherwise the one server.
    public func sendToEveryMaster(_ command: RedisCommand) async throws(RedisClientError) -> [RESPValue] {
        if case .cluster(let cluster) = router { return try await cluster.sendToEveryMaster(command, timeout: nil) }
        return [try await send(command)]
    }

    /// Opens a connection that receives pub/sub pushes; used by `RedisSubscriber`.
    func connectSubscriber(
        on eventLoop: any EventLoop, onPush: @escaping @Sendable (RESPValue) -> Void
    ) async throws(RedisClientError) -> RedisConnection {
        switch router {
        case .standalone(let pool): return try await pool.connector.connect(on: eventLoop, onPush: onPush)
        case .cluster(let cluster): return try await cluster.connectSubscriber(on: eventLoop, onPush: onPush)
        case .sentinel(let sentinel): return try await sentinel.connectSubscriber(on: eventLoop, onPush: onPush)
        }
    }

    /// Closes every connection; later calls fail with `.shutdown`.
    public func shutdown() {
        switch router {
        case .standalone(let pool): pool.shutdown()
        case .cluster(let cluster): cluster.shutdown()
        case .sentinel(let sentinel): sentinel.shutdown()
        }
    }
}

/// One latency histogram per command name, made on first use.
final class CommandLatency: Sendable {
    private let factory: any MetricsFactory
    private let label: String
    private let timers = Mutex<[String: Timer]>([:])

    init(factory: any MetricsFactory, label: String) {
        self.factory = factory
        self.label = label
    }

    func record(_ command: String, _ duration: Duration) {
        let timer = timers.withLock { timers in
            if let timer = timers[command] { return timer }
            let made = Timer(label: label, dimensions: [("command", command)], factory: factory)
            timers[command] = made
            return made
        }
        timer.record(duration: duration)
    }
}
