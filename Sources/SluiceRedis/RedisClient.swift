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
    let connector: RedisConnector
    private let slots: [RedisConnectionSlot]
    private let nextSlot = Atomic<Int>(0)
    let logger: Logger
    let eventLoopGroup: any EventLoopGroup
    private let latency: CommandLatency

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
        self.connector = try RedisConnector(configuration: configuration)
        self.logger = logger
        self.eventLoopGroup = eventLoopGroup
        let connector = self.connector
        self.slots = (0..<max(1, configuration.poolSize)).map { _ in
            RedisConnectionSlot(configuration: configuration, connector: connector, eventLoop: eventLoopGroup.next())
        }
    }

    /// Sends one command. Server error replies throw `.server`; see `RedisClientError`.
    public func send(_ command: RedisCommand, timeout: TimeAmount? = nil) async throws(RedisClientError) -> RESPValue {
        let started = ContinuousClock.now
        defer { latency.record(command.name, .now - started) }
        let connection = try await pickSlot().connection()
        return try await connection.send(command, timeout: timeout)
    }

    public func send(_ name: String, _ arguments: any RESPArgument...) async throws(RedisClientError) -> RESPValue {
        try await send(RedisCommand(name, arguments))
    }

    /// Prefers a connection on the caller's event loop (no thread hop); otherwise round-robin.
    private func pickSlot() -> RedisConnectionSlot {
        if slots.count > 1 {
            for slot in slots where slot.eventLoop.inEventLoop { return slot }
        }
        let index = nextSlot.add(1, ordering: .relaxed).oldValue
        return slots[index % slots.count]
    }

    /// Opens a connection that receives pub/sub pushes; used by `RedisSubscriber`.
    func connectSubscriber(
        on eventLoop: any EventLoop, onPush: @escaping @Sendable (RESPValue) -> Void
    ) async throws(RedisClientError) -> RedisConnection {
        try await connector.connect(on: eventLoop, onPush: onPush)
    }

    /// Closes every connection; later calls fail with `.shutdown`.
    public func shutdown() {
        for slot in slots { slot.shutdown() }
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
