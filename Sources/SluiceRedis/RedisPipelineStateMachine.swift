import NIOCore

/// The commands waiting for replies on one connection, oldest first, and what to do when a
/// reply, a timer or a close arrives. Pure: it returns actions and does no I/O, so it is tested
/// synchronously (the channel handler carries the actions out).
///
/// Redis answers in order, so the oldest command owns the next reply. Once the oldest command
/// misses its deadline the connection is declared stuck and everything on it fails with
/// `.timeout`: later replies could no longer be matched to callers.
struct RedisPipelineStateMachine {
    struct Pending {
        let promise: EventLoopPromise<RESPValue>
        let deadline: NIODeadline
    }

    enum WriteAction {
        case write
        case fail(EventLoopPromise<RESPValue>, RedisClientError)
    }

    enum ReplyAction {
        case succeed(EventLoopPromise<RESPValue>, RESPValue)
        case fail(EventLoopPromise<RESPValue>, RedisClientError)
        /// A reply nobody waits for on a subscriber connection: a pub/sub message.
        case push(RESPValue)
        /// A reply nobody waits for on a command connection: close it.
        case closeConnection(RedisClientError, failing: [Pending])
    }

    enum TimerAction {
        case none
        case arm(NIODeadline)
        case closeConnection(RedisClientError, failing: [Pending])
    }

    private var queue = CircularBuffer<Pending>(initialCapacity: 16)
    private var closedWith: RedisClientError?
    private let acceptsPushes: Bool
    private let maxPending: Int

    init(acceptsPushes: Bool, maxPending: Int = 10_000) {
        self.acceptsPushes = acceptsPushes
        self.maxPending = maxPending
    }

    var pendingCount: Int { queue.count }

    mutating func enqueue(_ promise: EventLoopPromise<RESPValue>, deadline: NIODeadline) -> WriteAction {
        if let closedWith { return .fail(promise, closedWith) }
        // Bounded: a Redis that stops answering must not grow this queue without limit.
        if queue.count >= maxPending { return .fail(promise, .overloaded) }
        queue.append(Pending(promise: promise, deadline: deadline))
        return .write
    }

    mutating func received(_ value: RESPValue) -> ReplyAction {
        // On a subscriber connection pushes interleave with command replies (PING's pong).
        if acceptsPushes, Self.isPush(value) { return .push(value) }
        guard let head = queue.popFirst() else {
            if acceptsPushes { return .push(value) }
            let error = RedisClientError.protocolError("reply without a command")
            return .closeConnection(error, failing: close(error))
        }
        if case .error(let message) = value {
            return .fail(head.promise, .server(message))
        }
        return .succeed(head.promise, value)
    }

    private static let pushKinds: Set<String> = [
        "message", "pmessage", "smessage", "subscribe", "psubscribe", "ssubscribe",
        "unsubscribe", "punsubscribe", "sunsubscribe",
    ]

    static func isPush(_ value: RESPValue) -> Bool {
        guard let kind = value.array?.first?.string else { return false }
        return pushKinds.contains(kind)
    }

    /// The deadline the timer should fire at, if one is needed and none is armed.
    var nextDeadline: NIODeadline? { queue.first?.deadline }

    mutating func timerFired(now: NIODeadline) -> TimerAction {
        guard let head = queue.first else { return .none }
        if head.deadline > now { return .arm(head.deadline) }
        return .closeConnection(.timeout, failing: close(.timeout))
    }

    /// Marks the connection closed; returns every waiting command, to be failed with `error`.
    mutating func close(_ error: RedisClientError) -> [Pending] {
        if closedWith == nil { closedWith = error }
        let failed = Array(queue)
        queue.removeAll()
        return failed
    }
}
