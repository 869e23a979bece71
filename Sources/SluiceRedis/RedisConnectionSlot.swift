import NIOCore
import Synchronization

/// The life of one pooled connection: idle → connecting → connected → (closed) idle, with
/// exponential backoff after failed attempts. Pure: the slot below does the I/O.
struct RedisConnectionSlotStateMachine {
    enum State {
        case idle
        case connecting(EventLoopFuture<RedisConnection>)
        case connected(RedisConnection)
        case backingOff(until: NIODeadline, lastError: RedisClientError)
        case shutdown
    }

    enum AcquireAction {
        case use(RedisConnection)
        case wait(EventLoopFuture<RedisConnection>)
        case connect
        case fail(RedisClientError)
    }

    private(set) var state: State = .idle
    private var failedAttempts = 0
    let backoff: (minimum: TimeAmount, maximum: TimeAmount)

    init(backoff: (minimum: TimeAmount, maximum: TimeAmount)) {
        self.backoff = backoff
    }

    mutating func acquire(now: NIODeadline) -> AcquireAction {
        switch state {
        case .connected(let connection):
            if connection.isActive { return .use(connection) }
            return .connect
        case .connecting(let future):
            return .wait(future)
        case .idle:
            return .connect
        case .backingOff(let until, let lastError):
            // Fail fast while backing off: a dead Redis costs callers nothing but this check.
            return now < until ? .fail(lastError) : .connect
        case .shutdown:
            return .fail(.shutdown)
        }
    }

    mutating func startedConnecting(_ future: EventLoopFuture<RedisConnection>) {
        state = .connecting(future)
    }

    /// Returns false when the slot was shut down meanwhile: close the new connection.
    mutating func connected(_ connection: RedisConnection) -> Bool {
        if case .shutdown = state { return false }
        failedAttempts = 0
        state = .connected(connection)
        return true
    }

    mutating func connectFailed(_ error: RedisClientError, now: NIODeadline, jitter: Double) {
        if case .shutdown = state { return }
        failedAttempts += 1
        state = .backingOff(until: now + delay(jitter: jitter), lastError: error)
    }

    /// The delay before the next attempt: `minimum · 2^(failures-1)`, capped, scaled by
    /// `jitter` in 0.5...1 so a fleet of replicas does not reconnect in lockstep.
    func delay(jitter: Double) -> TimeAmount {
        RedisConfiguration.backoffDelay(failures: failedAttempts, minimum: backoff.minimum, maximum: backoff.maximum,
                                        jitter: jitter)
    }

    mutating func closed(_ connection: RedisConnection) {
        if case .connected(let current) = state, current === connection {
            state = .idle
        }
    }

    mutating func shutdown() -> RedisConnection? {
        defer { state = .shutdown }
        if case .connected(let connection) = state { return connection }
        return nil
    }
}

/// One multiplexed connection of the pool, reconnected on demand.
final class RedisConnectionSlot: Sendable {
    private let configuration: RedisConfiguration
    private let connector: RedisConnector
    let eventLoop: any EventLoop
    private let state: Mutex<RedisConnectionSlotStateMachine>

    init(configuration: RedisConfiguration, connector: RedisConnector, eventLoop: any EventLoop) {
        self.configuration = configuration
        self.connector = connector
        self.eventLoop = eventLoop
        self.state = Mutex(RedisConnectionSlotStateMachine(backoff: configuration.reconnectBackoff))
    }

    func connection() async throws(RedisClientError) -> RedisConnection {
        let action: (RedisConnectionSlotStateMachine.AcquireAction, EventLoopPromise<RedisConnection>?) =
            state.withLock { machine in
                let action = machine.acquire(now: .now())
                guard case .connect = action else { return (action, nil) }
                let promise = eventLoop.makePromise(of: RedisConnection.self)
                machine.startedConnecting(promise.futureResult)
                return (action, promise)
            }
        switch action {
        case (.use(let connection), _):
            return connection
        case (.fail(let error), _):
            throw error
        case (.wait(let future), _):
            do {
                return try await future.get()
            } catch let error as RedisClientError {
                throw error
            } catch {
                throw .connectionClosed
            }
        case (.connect, let promise?):
            return try await connect(fulfilling: promise)
        case (.connect, nil):
            preconditionFailure("connect action without a promise")
        }
    }

    private func connect(fulfilling promise: EventLoopPromise<RedisConnection>) async throws(RedisClientError) -> RedisConnection {
        let connection: RedisConnection
        do {
            connection = try await connector.connect(on: eventLoop)
        } catch {
            state.withLock { $0.connectFailed(error, now: .now(), jitter: Double.random(in: 0.5...1)) }
            promise.fail(error)
            throw error
        }
        guard state.withLock({ $0.connected(connection) }) else {
            connection.close()
            promise.fail(RedisClientError.shutdown)
            throw .shutdown
        }
        connection.closeFuture.whenComplete { [self] _ in
            state.withLock { $0.closed(connection) }
        }
        promise.succeed(connection)
        return connection
    }

    func shutdown() {
        state.withLock { $0.shutdown() }?.close()
    }
}
